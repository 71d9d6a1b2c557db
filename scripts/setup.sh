#!/usr/bin/env bash
# Create .venv and install the package with its test extra, unless that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! .venv/bin/python -c "import avalanche_fgadahat, avalanche, captum, pytest" >/dev/null 2>&1; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
fi

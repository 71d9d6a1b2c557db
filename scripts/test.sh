#!/usr/bin/env bash
# The test suite, then the API reference build (Sphinx, warnings as errors).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/python -m pytest -q "$@"
echo "building the API reference (build/api, warnings are errors) ..."
./scripts/api_docs.sh
echo "API reference: build/api/index.html"

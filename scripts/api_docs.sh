#!/usr/bin/env bash
# Build the API reference from the docstrings into build/api (open build/api/index.html).
# Warnings are errors: CI (scripts/test.sh) runs this after the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -W ignore -m sphinx -W --keep-going -q -b html docs/api build/api "$@"

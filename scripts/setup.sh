#!/usr/bin/env bash
# Create .venv and install the package with its test, docs, experiments (research harness) and
# ray (sweeps on Ray, tuning with Ray Tune) extras, unless that is already done.
# The first run downloads torch, Avalanche and Captum (about 4 minutes and 6 GB with the default
# CUDA build of torch; see docs/install.md for the CPU-only build); it prints each package as pip
# collects it, so a slow download shows where it is.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! .venv/bin/python -c "import avalanche_fgadahat, avalanche, captum, matplotlib, pytest, sphinx, ray" >/dev/null 2>&1; then
  started=$(date +%s)
  echo "setup: creating .venv and installing avalanche-fgadahat with torch, Avalanche, Captum and Ray"
  echo "setup: (first run only: a few minutes; progress below)"
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "setup: no NVIDIA GPU found: the default torch wheel brings ~5 GB of CUDA libraries; for the"
    echo "setup: ~700 MB CPU-only build, install torch first as docs/install.md shows, then rerun this"
  fi
  python3 -m venv .venv
  .venv/bin/python -m pip install --disable-pip-version-check --progress-bar off -e ".[test,docs,experiments,ray]" 2>&1 \
    | grep --line-buffered -E "^(Collecting|Processing|Installing collected|Successfully|ERROR)" \
    | sed -u -E -e 's#^Processing .*/([^/]+)$#Processing \1#' -e 's/^/setup: /' \
        -e 's/^(setup: Successfully installed).*/\1 the packages/' || true
  if ! .venv/bin/python -c "import avalanche_fgadahat, avalanche, captum, matplotlib, pytest, sphinx, ray" >/dev/null 2>&1; then
    echo "setup: installation failed; rerun without the filter to see pip's output:" >&2
    echo "  .venv/bin/python -m pip install -e '.[test,docs,experiments,ray]'" >&2
    exit 1
  fi
  echo "setup: done in $(( $(date +%s) - started )) s"
fi

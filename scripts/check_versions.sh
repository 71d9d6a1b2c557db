#!/usr/bin/env bash
# The documented version check (docs/install.md): the package's declared ranges against the
# lowest and the newest torch we can try on this machine.
#
#   1. resolution beside the newest torch on PyPI (pip --dry-run, ignoring any pip config
#      that caps torch on this machine): must resolve;
#   2. the test suite in a fresh venv with the lowest supported torch and its torchvision
#      (2.13.0 and 0.28.0 from PyPI: several GB of CUDA wheels, downloaded once).
#
# The main venv (scripts/setup.sh) tests the newest torch this machine installs.
# Usage: ./scripts/check_versions.sh [newest-torch-version]   (about 5 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
newest="${1:-$(python3 -m pip index versions torch 2>/dev/null | sed -n 's/^torch (\(.*\))$/\1/p')}"
echo "== 1/2: resolve avalanche-fgadahat beside torch==${newest} (dry run)"
report="$(mktemp)"
PIP_CONFIG_FILE=/dev/null python3 -m pip install --dry-run --ignore-installed --quiet \
  --report "${report}" . "torch==${newest}"
python3 - "${report}" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
chosen = {i["metadata"]["name"]: i["metadata"]["version"] for i in report["install"]}
print("   resolves:", ", ".join(f"{n} {chosen[n]}" for n in ("torch", "torchvision", "avalanche-lib", "captum") if n in chosen))
EOF
rm -f "${report}"

echo "== 2/2: test suite with the lowest supported torch (2.13.0) in .venv-lowest"
if ! .venv-lowest/bin/python -c "import torch, torchvision, avalanche_fgadahat" >/dev/null 2>&1; then
  python3 -m venv .venv-lowest
  # from PyPI, not the CPU-only torch file some machines keep on disk: PyPI's torchvision
  # is built against PyPI's torch
  PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= .venv-lowest/bin/python -m pip install --progress-bar off \
    -e ".[test]" "torch==2.13.0" "torchvision==0.28.0" 2>&1 | grep -E "^(Successfully|ERROR)" || true
fi
.venv-lowest/bin/python -c "import torch, torchvision, avalanche, captum; print('   torch', torch.__version__, 'torchvision', torchvision.__version__, 'avalanche', avalanche.__version__, 'captum', captum.__version__)"
.venv-lowest/bin/python -m pytest -q -p no:warnings

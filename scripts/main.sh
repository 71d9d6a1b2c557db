#!/usr/bin/env bash
# The main job: FG-AdaHAT, AdaHAT, HAT, Naive and EWC on the embedded scikit-learn digits.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m avalanche_fgadahat.experiments --benchmark digits \
  --strategies fgadahat:icu adahat hat naive ewc --seeds 1 --out results/digits "$@"

#!/usr/bin/env bash
# The main job: FG-AdaHAT, AdaHAT, HAT, Naive and EWC on Permuted Digits (10 tasks of the
# embedded scikit-learn digits under pixel permutations; no download), three seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m avalanche_fgadahat.experiments --benchmark pdigits \
  --strategies fgadahat:icu adahat hat naive ewc --seeds 1 2 3 --out results/pdigits "$@"

#!/usr/bin/env bash
# The CUDA tables of docs/benchmark.md in one go, on a GPU machine:
#     benchmarks/cuda_suite.sh OUTDIR [PART ...]     PART: mlp alexnet attribution check (default: these), mlp-all, fused, guards
# (PYTHON=... chooses the interpreter.) Writes step_time_cuda_{mlp,alexnet}.md,
# attribution_cuda_{mlp,alexnet,alexnet_fa}.md and device_check_cuda.md into OUTDIR. Each
# script runs under its own time limit, so one slow table does not take the others with it.
set -u
out=$(realpath -m "${1:?usage: benchmarks/cuda_suite.sh OUTDIR [PART ...]}")
shift
parts=${*:-mlp alexnet attribution check}
py=${PYTHON:-python3}
mkdir -p "$out"
cd "$(dirname "$0")"
run() { local limit=$1; shift; echo "== $*"; timeout "$limit" "$py" "$@" || echo "== exit $? for: $*"; }
for part in $parts; do
  case $part in
    # --count-iterations 0: no subnormal count on the GPU (no slow path there; saves device time)
    mlp) run 240 step_time.py --device cuda --setting mlp --rounds 5 --iterations 100 \
           --optimizer adam adam-fused --importance in-pass --count-iterations 0 --out "$out/step_time_cuda_mlp.md" ;;
    # not in the default parts: every importance type, the attribution ones included (10 iterations each)
    mlp-all) run 300 step_time.py --device cuda --setting mlp --rounds 5 --iterations 100 --slow-iterations 10 \
           --optimizer adam adam-fused --importance all --count-iterations 0 --out "$out/step_time_cuda_mlp_all_types.md" ;;
    alexnet) run 90 step_time.py --device cuda --setting alexnet --rounds 4 --iterations 50 \
           --optimizer adam adam-fused --importance in-pass --count-iterations 0 --out "$out/step_time_cuda_alexnet.md" ;;
    attribution)
      run 45 attribution_cost.py --device cuda --setting mlp --repeats 3 --out "$out/attribution_cuda_mlp.md"
      run 60 attribution_cost.py --device cuda --setting alexnet --repeats 3 --out "$out/attribution_cuda_alexnet.md" \
        --importance gradient_x_activation_abs,conductance_abs,internal_influence_abs,gradcam_abs,deeplift_abs,deepliftshap_abs,gradientshap_abs,integrated_gradients_abs,lrp_abs
      run 45 attribution_cost.py --device cuda --setting alexnet --repeats 1 --importance feature_ablation_abs \
        --out "$out/attribution_cuda_alexnet_fa.md" ;;
    check) run 150 device_check.py --device cuda --out "$out/device_check_cuda.md" ;;
    # not in the default parts: fused_step=True next to eager (MLP, in-pass types), and its identity test on CUDA
    fused) run 240 step_time.py --device cuda --setting mlp --rounds 5 --iterations 100 --optimizer adam adam-fused \
           --importance in-pass --count-iterations 0 --fused --out "$out/step_time_cuda_mlp_fused.md"
      (cd .. && timeout 240 "$py" -m pytest -q tests/test_fused_step.py -k cuda) > "$out/fused_identity_cuda.txt" 2>&1 \
        || echo "== fused identity test failed: see $out/fused_identity_cuda.txt" ;;
    # not in the default parts: the default (H16's flushes off on CUDA) next to subnormal_guards="always" and
    # the fused step (MLP, Adam, ICU and AFI), in the same interleaved rounds
    guards) run 200 step_time.py --device cuda --setting mlp --rounds 5 --iterations 100 --optimizer adam \
           --importance icu,afi --count-iterations 0 --fused --guards always --out "$out/step_time_cuda_mlp_guards.md" ;;
    *) echo "unknown part $part (mlp alexnet attribution check mlp-all fused guards)"; exit 2 ;;
  esac
done

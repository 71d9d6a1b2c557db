"""Cost of each Captum-based importance: the package's batched way against the reference's way.

The reference (CLArena) calls Captum once per masked layer per training step. The package
computes every layer in one batched pass (:mod:`avalanche_fgadahat.importance.attribution`);
``reference_importance`` (``tests/captum_reference.py``) keeps the per-layer way, and
``tests/test_importance_attribution.py`` shows both give equal values. This script times both
on the same step — same model, same masked forward, same inputs, targets and soft masks — and
reports the median over repeats, the speed-up, and the largest relative difference between
the two results (float32 here; the tests compare them in float64).

    python benchmarks/attribution_cost.py --device cpu --setting mlp --out docs/benchmarks/attribution_cpu_mlp.md
"""

from __future__ import annotations

import statistics
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from avalanche.benchmarks import tensors_benchmark
from avalanche.models.utils import avalanche_model_adaptation

from avalanche_fgadahat.importance import ATTRIBUTION_TYPES, IMPORTANCE_TYPES, StepContext
from avalanche_fgadahat.masking.subnormals import guards_apply

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the reference lives with the tests
from captum_reference import reference_importance  # noqa: E402
from _common import CLOCKS, apply_threads, base_parser, check_clock, clock_words, emit, header, synchronize
from step_time import SETTINGS

warnings.filterwarnings("ignore")



def _context(setting: str, device: torch.device) -> StepContext:
    shape, batch, factory, _ = SETTINGS[setting]  # the step-time benchmark's settings
    torch.manual_seed(0)
    model = factory()
    tiny = [(torch.zeros(10, *shape), torch.arange(10))]
    experience = tensors_benchmark(train_tensors=tiny, test_tensors=tiny, task_labels=[0]).train_stream[0]
    avalanche_model_adaptation(model, experience)
    model.to(device)
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    masks = {k: torch.sigmoid(3 * torch.randn(n, device=device)) for k, n in model.unit_sizes.items()}
    # the guards as a training step with the default subnormal_guards="cpu" decides them on this device
    return StepContext(model=model, task=0, inputs=x, targets=y, masks=masks, activations={}, gate_scale=400.0,
                       subnormal_guards=guards_apply("cpu", device))


def _fresh(ctx: StepContext) -> StepContext:
    return StepContext(model=ctx.model, task=ctx.task, inputs=ctx.inputs, targets=ctx.targets, masks=ctx.masks,
                       activations={}, gate_scale=ctx.gate_scale, subnormal_guards=ctx.subnormal_guards)


def _time(call, device: torch.device, repeats: int, clock_name: str = "wall") -> tuple[float, dict]:
    clock = CLOCKS[clock_name]
    times, result = [], None
    for _ in range(repeats + 1):  # first call is warm-up
        synchronize(device)
        start = clock()
        result = call()
        synchronize(device)
        times.append(clock() - start)
    return statistics.median(times[1:] or times), result


def _max_relative_difference(fast: dict, reference: dict) -> float:
    worst = 0.0
    for key, value in reference.items():
        scale = value.abs().max().clamp_min(1e-30)
        worst = max(worst, float((fast[key] - value).abs().max() / scale))
    return worst


def run(setting: str, device: torch.device, names: list[str], repeats: int, clock: str = "wall") -> list[dict]:
    ctx = _context(setting, device)
    rows = []
    for name in names:
        def fast_call():
            np.random.seed(11)
            torch.manual_seed(12)
            return IMPORTANCE_TYPES[name].function(_fresh(ctx))

        def reference_call():
            torch.manual_seed(12)
            return reference_importance(name, _fresh(ctx), numpy_seed=11)

        fast_s, fast = _time(fast_call, device, repeats, clock)
        reference_s, reference = _time(reference_call, device, repeats, clock)
        rows.append({"setting": setting, "name": name, "short": IMPORTANCE_TYPES[name].short_name,
                     "fast_ms": 1e3 * fast_s, "reference_ms": 1e3 * reference_s,
                     "speedup": reference_s / fast_s, "max_rel_diff": _max_relative_difference(fast, reference)})
        print(f"{setting} {name}: {1e3 * fast_s:.1f} ms vs {1e3 * reference_s:.1f} ms", file=sys.stderr, flush=True)
    return rows


def to_markdown(rows: list[dict], device: torch.device, clock: str = "wall") -> str:
    lines = header(device, clock_words(clock), "step") + [
        "| setting | importance | label | batched, all layers (ms / step) | reference: Captum per layer (ms / step) "
        "| speed-up | max relative difference (float32) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['setting']} | `{r['name']}` | {r['short']} | {r['fast_ms']:.1f} | {r['reference_ms']:.1f} "
                     f"| {r['speedup']:.2f}× | {r['max_rel_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = base_parser(__doc__, list(SETTINGS))
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per way after one warm-up (0: time the first call only)")
    parser.add_argument("--importance", default="all", help="'all' or comma-separated attribution importance types")
    args = parser.parse_args()
    apply_threads(args.threads)
    names = list(ATTRIBUTION_TYPES) if args.importance == "all" else args.importance.split(",")
    unknown = [n for n in names if n not in ATTRIBUTION_TYPES]
    if unknown:
        parser.error(f"--importance: {unknown} are not attribution types; accepted: {', '.join(ATTRIBUTION_TYPES)}")
    device = torch.device(args.device)
    check_clock(parser, args.clock, device)
    settings = list(SETTINGS) if args.setting == "all" else [args.setting]
    rows = [row for setting in settings for row in run(setting, device, names, args.repeats, args.clock)]
    emit(to_markdown(rows, device, args.clock), args.out)


if __name__ == "__main__":
    main()

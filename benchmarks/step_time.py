"""Time of the HAT family against Avalanche's ``Naive``: per training iteration and per whole experience.

Interleaved in one process: each round trains one fresh experience (a new task) with every
method in turn, so drift of the machine hits all methods alike. Mini-batches are prepared once
on the device and fed through a trivial loader, so data loading does not hide the difference.

Rounds: one warm-up experience (not timed); ``--rounds`` timed experiences, which give the
median time per iteration and the median time of a whole ``strategy.train(experience)`` call
(everything a user waits for: the per-experience work — rollback snapshot, embeddings,
optimizer reset, broadcast of the rule's measure, mask commit, importance finalisation,
diagnostics — and every iteration); on the CPU one more experience for the step's peak host
memory (``torch.profiler``, not timed); and one experience whose last ``--count-iterations``
iterations run under :class:`~avalanche_fgadahat.masking.subnormals.SubnormalCounter` (not
timed): subnormal float values produced per step (``docs/deviations.md`` H16; where any are
found, their ``(autograd node, op)`` sites are printed to stderr).

Primary measure: torch's default thread count and wall time (what a user gets); the table
names the CPU model. ``--threads 1`` and ``--clock cpu`` (process CPU time, robust on a
shared machine) are secondary views. Writes a Markdown table.

``--fused`` adds, after each HAT-family method, the same method with ``fused_step=True`` (rows
``<method> (fused)``: the step's element-wise work compiled by ``torch.compile``, the same numbers;
``docs/benchmark.md``, "Fused step"). Its compile time falls in the untimed warm-up experience;
the table's notes give every method's warm-up experience time, compilation included.
``--guards always`` / ``--guards never`` adds each method with that ``subnormal_guards`` (rows
``<method> (guards always)``): on a GPU, what H16's flushes cost there (the default runs them on
CPU models only); on a CPU, ``never`` shows what they save there.

    python benchmarks/step_time.py --setting mlp --out docs/benchmarks/step_time_cpu_mlp.md
    python benchmarks/step_time.py --setting mlp --threads 1 --clock cpu --out docs/benchmarks/step_time_cpu_mlp_1thread.md
    python benchmarks/step_time.py --device cuda --setting all --count-iterations 0 --out docs/benchmarks/step_time_cuda.md
    python benchmarks/step_time.py --setting mlp --rounds 3 --iterations 100 --importance icu --fused \
        --out docs/benchmarks/step_time_cpu_mlp_fused.md

``Naive`` trains a plain (unmasked) multi-head network of the same shape: the HAT family's
overhead is measured against what a user would otherwise run. Models, strategies and their
settings come from the experiments harness (``_common.py``): its backbones, its plain twins
(``baseline_models.PlainMultiHead``) and its strategy registry.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable

import torch
from avalanche.benchmarks import tensors_benchmark
from avalanche.core import SupervisedPlugin

from _common import (
    CLOCKS,
    METHODS,
    OPTIMIZERS,
    SETTINGS,
    apply_threads,
    base_parser,
    build_method,
    check_clock,
    clock_words,
    emit,
    header,
    method_names,
    synchronize,
)
from avalanche_fgadahat.masking.subnormals import SubnormalCounter

warnings.filterwarnings("ignore")


class PreBatchedLoader:
    """Batches already on the device; ``len`` and iteration as Avalanche's loaders."""

    def __init__(self, batches: list[tuple[torch.Tensor, ...]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class InMemoryData(SupervisedPlugin):
    """Replaces the experience's dataloader by pre-built device batches of its task."""

    def __init__(self, batches_per_task: dict[int, list]) -> None:
        super().__init__()
        self.batches_per_task = batches_per_task

    def before_training_exp(self, strategy, **kwargs):
        strategy.dataloader = PreBatchedLoader(self.batches_per_task[strategy.experience.task_label])


MEASURED_ITERATION = "measured_iteration"
#: label suffix of a method trained with ``fused_step=True``
FUSED = " (fused)"
#: the twins a run can add: label suffix → the settings that differ from the defaults (``--fused``,
#: ``--guards MODE``: ``subnormal_guards=MODE``, H16's flushes on any device or on none)
TWINS = {FUSED: {"fused_step": True}, " (guards always)": {"subnormal_guards": "always"},
         " (guards never)": {"subnormal_guards": "never"}}


def with_twins(names: list[str], suffixes: list[str]) -> list[str]:
    """``names`` with each HAT-family method followed by its twins (one per suffix of :data:`TWINS`)."""
    return [variant for name in names
            for variant in ([name] if name == "Naive" else [name, *(name + suffix for suffix in suffixes)])]


def use_settings(strategy, changes: dict) -> None:
    """Give ``strategy`` its HAT-family plugin rebuilt with ``changes`` to its settings (what a user
    gets by passing them: the harness builds its strategies with the defaults)."""
    from avalanche_fgadahat.plugins.hat import HATPlugin

    for index, plugin in enumerate(strategy.plugins):
        if isinstance(plugin, HATPlugin):
            twin = type(plugin)(plugin.config.replace(**changes))
            twin.warn_in_after_training = plugin.warn_in_after_training
            strategy.plugins[index] = twin
            return
    raise ValueError("no HAT-family plugin to change")


def cpu_iteration_peak(trace_file: str) -> int:
    """Peak host bytes allocated during the ``measured_iteration`` span, above its start level.

    Reads the ``[memory]`` events of a ``torch.profiler`` trace (``profile_memory=True``); each
    carries the profiler's running total. The profiler only knows the size of blocks allocated
    while it runs, so the trace covers one iteration before the measured one: every block the
    measured iteration frees (last step's gradients, activations, ...) was allocated in view.
    """
    import json

    with open(trace_file) as handle:
        trace = json.load(handle)["traceEvents"]
    span = next(e for e in trace if e.get("name") == MEASURED_ITERATION and e.get("ph") == "X")
    begin, end = span["ts"], span["ts"] + span["dur"]
    events = sorted((e for e in trace if e.get("name") == "[memory]"), key=lambda e: e["ts"])
    before = [e["args"]["Total Allocated"] for e in events if e["ts"] < begin]
    inside = [e["args"]["Total Allocated"] for e in events if begin <= e["ts"] <= end]
    start = before[-1] if before else 0
    return max(inside, default=start) - start


class IterationTimer(SupervisedPlugin):
    """Time of every training iteration (device-synchronised) and peak memory.

    Peak memory, the step's transients (activations, gradients, masks, rates, importance
    temporaries) above what was live at the iteration's start: on CUDA, of every timed
    iteration from the 3rd of an experience on (the first step also allocates the optimizer
    state, which the HAT family clears at each experience), from ``max_memory_allocated`` after ``reset_peak_memory_stats`` (host-side calls,
    outside the timed span); on the CPU, when ``profile_memory`` is set, the host
    allocations of one iteration (the 3rd of the experience, profiled with the 2nd) above what
    was live at its start (the step's transients: activations, gradients, masks, rates,
    importance temporaries), read from ``torch.profiler``. Profiled iterations are not timed.
    """

    def __init__(self, device: torch.device, clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__()
        self.device = device
        self.clock = clock
        self.times: list[float] = []
        self.peaks: list[int] = []
        self.timing = False
        self.profile_memory = False
        self._start = 0.0
        self._iteration = 0
        self._profiler = None
        self._span = None
        self._live = 0

    def before_training_exp(self, strategy, **kwargs):
        self._iteration = 0

    def before_training_iteration(self, strategy, **kwargs):
        self._iteration += 1
        if self.profile_memory and self.device.type == "cpu" and self._iteration in (2, 3):
            from torch.profiler import ProfilerActivity, profile, record_function

            if self._iteration == 2:
                self._profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
                self._profiler.__enter__()
            else:
                self._span = record_function(MEASURED_ITERATION)
                self._span.__enter__()
            return
        synchronize(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._live = torch.cuda.memory_allocated(self.device)
        self._start = self.clock()

    def after_training_iteration(self, strategy, **kwargs):
        if self._profiler is not None:
            if self._span is None:  # the 2nd iteration: keep profiling
                return
            import os
            import tempfile

            self._span.__exit__(None, None, None)
            self._profiler.__exit__(None, None, None)
            handle, trace = tempfile.mkstemp(suffix=".json")
            os.close(handle)
            try:
                self._profiler.export_chrome_trace(trace)
                self.peaks.append(cpu_iteration_peak(trace))
            finally:
                os.remove(trace)
                self._profiler = self._span = None
            return
        synchronize(self.device)
        if not self.timing:
            return
        self.times.append(self.clock() - self._start)
        if self.device.type == "cuda" and self._iteration >= 3:  # the 1st step allocates the optimizer state
            self.peaks.append(torch.cuda.max_memory_allocated(self.device) - self._live)


class StepSubnormals(SupervisedPlugin):
    """Counts the subnormal values of the last ``iterations`` iterations of an armed experience
    (:class:`~avalanche_fgadahat.masking.subnormals.SubnormalCounter`: every op output of the
    forward, backward, plugin hooks, optimizer step and importance passes)."""

    def __init__(self, iterations: int) -> None:
        super().__init__()
        self.iterations = iterations
        self.armed = False
        self.steps = self.total = 0
        self.sites: Counter = Counter()
        self._counter: SubnormalCounter | None = None

    def before_training_iteration(self, strategy, **kwargs):
        if self.armed and strategy.clock.train_epoch_iterations >= len(strategy.dataloader) - self.iterations:
            self._counter = SubnormalCounter()
            self._counter.__enter__()

    def after_training_iteration(self, strategy, **kwargs):
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.steps += 1
            self.total += self._counter.total
            self.sites.update(self._counter.by_site)
            self._counter = None

    def per_step(self) -> float | None:
        """Subnormal values per counted step (``None`` when nothing was counted)."""
        return self.total / self.steps if self.steps else None


def run_setting(setting: str, device: torch.device, rounds: int, iterations: int, importance_types: list[str],
                slow_iterations: int, clock: str = "wall", optimizer: str = "adam",
                count_iterations: int = 3, fused: bool = False, guards: tuple[str, ...] = ()) -> list[dict]:
    """Rows of the table for one setting and optimizer (see module doc for the rounds); ``fused``:
    each HAT-family method also with ``fused_step=True``; ``guards``: also with
    ``subnormal_guards=mode`` for each mode (``"always"``, ``"never"``)."""
    shape, batch_size, _, _ = SETTINGS[setting]
    phases = ["warm-up", *["timed"] * rounds, *(["memory"] if device.type == "cpu" else []),
              *(["count"] if count_iterations > 0 else [])]
    torch.manual_seed(0)
    n_tasks = len(phases)
    batches = {
        t: [(torch.randn(batch_size, *shape, device=device), torch.randint(0, 10, (batch_size,), device=device),
             torch.full((batch_size,), t, device=device, dtype=torch.long)) for _ in range(iterations)]
        for t in range(n_tasks)
    }
    tiny = [(torch.zeros(10, *shape), torch.arange(10)) for _ in range(n_tasks)]
    stream = tensors_benchmark(train_tensors=tiny, test_tensors=tiny, task_labels=list(range(n_tasks))).train_stream
    from avalanche_fgadahat.importance.registry import find_importance_type

    state, experience_times, warmup_times, slow = {}, {}, {}, set()
    names = method_names(importance_types)
    suffixes = [FUSED] * fused + [f" (guards {mode})" for mode in guards]
    for name in with_twins(names, suffixes):
        timer = IterationTimer(device, CLOCKS[clock])
        counter = StepSubnormals(count_iterations)
        data = InMemoryData(batches)
        suffix = next((s for s in suffixes if name.endswith(s)), "")
        base = name.removesuffix(suffix) if suffix else name
        strategy = build_method(base, setting, device, optimizer, [data, timer, counter])
        if suffix:
            use_settings(strategy, TWINS[suffix])
        if base not in METHODS and find_importance_type(base.split(" ", 1)[1]).extra_passes != "none":
            # attribution measures (extra forward/backward passes): time fewer iterations
            data.batches_per_task = {t: b[:slow_iterations] for t, b in batches.items()}
            slow.add(name)
        state[name] = (strategy, timer, counter)
        experience_times[name] = []
    for round_index, (experience, phase) in enumerate(zip(stream, phases)):
        for name, (strategy, timer, counter) in state.items():
            timer.timing = phase == "timed"
            timer.profile_memory = phase == "memory"
            counter.armed = phase == "count"
            synchronize(device)
            start = CLOCKS[clock]()
            strategy.train(experience)
            synchronize(device)
            if phase == "timed":
                experience_times[name].append(CLOCKS[clock]() - start)
            elif phase == "warm-up":
                warmup_times[name] = CLOCKS[clock]() - start
        print(f"round {round_index + 1}/{len(stream)} ({phase}) done", file=sys.stderr, flush=True)
    for name, (_, _, counter) in state.items():
        if counter.total:
            print(f"{name}: subnormals at {dict(counter.sites.most_common(5))}", file=sys.stderr, flush=True)
    naive = statistics.median(state["Naive"][1].times)
    naive_experience = statistics.median(experience_times["Naive"])
    naive_rounds = round_medians(state["Naive"][1].times, rounds)
    rows = []
    for name, (strategy, timer, counter) in state.items():
        median = statistics.median(timer.times)
        experience = statistics.median(experience_times[name])
        by_round = [m / n for m, n in zip(round_medians(timer.times, rounds), naive_rounds)]
        rows.append({
            "setting": f"{setting}, {optimizer}", "method": name, "median_ms": 1e3 * median, "ratio": median / naive,
            "round_ratios": (min(by_round), max(by_round)),
            "iterations": len(timer.times),
            "experience_s": experience,
            # an experience of fewer iterations is not comparable with Naive's
            "experience_ratio": None if name in slow else experience / naive_experience,
            "experience_iterations": slow_iterations if name in slow else iterations,
            "subnormals": counter.per_step(),
            "peak_mib": (max(timer.peaks) / 2**20) if timer.peaks else None,
            "warmup_s": warmup_times[name],
        })
    hat = statistics.median(state["HAT"][1].times)
    for row in rows:
        row["hat_ratio"] = row["median_ms"] / (1e3 * hat)
    naive_peak = rows[0]["peak_mib"]
    for row in rows:
        row["peak_ratio"] = row["peak_mib"] / naive_peak if naive_peak and row["peak_mib"] is not None else None
    return rows


def round_medians(times: list[float], rounds: int) -> list[float]:
    """The median iteration time of each timed round (``times``: the rounds' iterations in order,
    the same number each)."""
    size = len(times) // rounds
    return [statistics.median(times[i * size:(i + 1) * size]) for i in range(rounds)]


def _number(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _fused_notes(rows: list[dict]) -> list[str]:
    """With ``--fused``: what the fused rows are, and every method's warm-up experience time."""
    if not any(r["method"].endswith(FUSED) for r in rows):
        return []
    warmups = "; ".join(f"{r['setting']} {r['method']} {r['warmup_s']:.2f} s" for r in rows)
    return [
        "`(fused)`: the method with `fused_step=True` (the step's element-wise work compiled by `torch.compile`, "
        "the same numbers bit for bit: `tests/test_fused_step.py`). Compilation happens in the untimed warm-up "
        "experience; warm-up experience time (compilation included, same iterations): " + warmups + ".", "",
    ]


def _guard_notes(rows: list[dict]) -> list[str]:
    """With ``--guards``: what those rows are."""
    if not any("(guards " in r["method"] for r in rows):
        return []
    return ["`(guards always)` / `(guards never)`: the method with `subnormal_guards=\"always\"` / `\"never\"`: H16's "
            "flushes and floor tests run on every device / on none (the default `\"cpu\"` runs them on CPU models "
            "only; `docs/deviations.md` H16a).", ""]


def to_markdown(rows: list[dict], device: torch.device, clock: str = "wall") -> str:
    lines = header(device, clock_words(clock), "iteration (median) and per experience (median)") + [
        "Experience: one whole `strategy.train(experience)` call (per-experience work included: rollback "
        "snapshot, task embeddings, optimizer reset, broadcast of the rule's measure, mask commit, importance "
        "finalisation, diagnostics), median over the timed rounds; `n/a` × Naive where a method trains fewer "
        "iterations per experience (attribution measures, `--slow-iterations`).",
        "Subnormals / step: float values below 1.18e-38 (not 0) in every op output of a training step "
        "(`masking.subnormals.SubnormalCounter`: forward, backward, the plugin's hooks, optimizer step, "
        "importance passes), mean over the last iterations of one untimed experience (`docs/deviations.md` H16).",
        "Peak MiB: " + ("device memory allocated during a training iteration above what was live at its start "
                        "(the step's transients; `torch.cuda.max_memory_allocated`), largest over the timed iterations "
                        "from the 3rd of each experience on."
                        if device.type == "cuda" else
                        "host memory allocated during one training iteration above what was live at its start "
                        "(the step's transients; `torch.profiler` memory events, one untimed experience)."), "",
    ] + _fused_notes(rows) + _guard_notes(rows) + [
        "× Naive by round: the lowest and highest ratio of one timed round's median iteration to `Naive`'s "
        "in the same round (the rounds interleave the methods, so the spread shows the machine's drift); "
        "× Naive is the ratio of the medians over all timed iterations, so it can fall outside that range.", "",
        "| setting | method | median ms / iteration | × Naive | × Naive by round | × HAT | iterations timed "
        "| s / experience | experience × Naive | subnormals / step | peak MiB | peak × Naive |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sub = "n/a" if r["subnormals"] is None else f"{r['subnormals']:.1f}"
        lines.append(
            f"| {r['setting']} | {r['method']} | {r['median_ms']:.3f} | {r['ratio']:.2f} | "
            f"{r['round_ratios'][0]:.2f}–{r['round_ratios'][1]:.2f} | {r['hat_ratio']:.2f} | "
            f"{r['iterations']} | {r['experience_s']:.3f} ({r['experience_iterations']} it.) | "
            f"{_number(r['experience_ratio'], '.2f')} | {sub} | {_number(r['peak_mib'], '.2f')} | "
            f"{_number(r['peak_ratio'], '.2f')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = base_parser(__doc__, list(SETTINGS))
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds (one experience each)")
    parser.add_argument("--iterations", type=int, default=50, help="iterations per experience")
    parser.add_argument("--slow-iterations", type=int, default=5, help="iterations for measures with extra passes")
    parser.add_argument("--importance", default="all", help="'all', 'in-pass' (no extra pass), 'none' or comma-separated importance types")
    parser.add_argument("--count-iterations", type=int, default=3,
                        help="iterations counted for subnormals at the end of one untimed experience (0: none)")
    parser.add_argument("--optimizer", choices=list(OPTIMIZERS), nargs="+", default=["adam"],
                        help="one table block per optimizer (default: adam, the reference protocol's)")
    parser.add_argument("--fused", action="store_true",
                        help="also time each HAT-family method with fused_step=True (rows '<method> (fused)')")
    parser.add_argument("--guards", nargs="+", choices=("always", "never"), default=(),
                        help="also time each HAT-family method with subnormal_guards=MODE (rows '<method> (guards "
                             "MODE)'; the default 'cpu' is 'always' on a CPU and 'never' on a GPU)")
    args = parser.parse_args()
    apply_threads(args.threads)
    device = torch.device(args.device)
    clock = args.clock
    check_clock(parser, clock, device)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if device.type == "cpu" and min(args.iterations, args.slow_iterations) < 3:
        parser.error("--iterations and --slow-iterations must be at least 3 on the cpu (the memory round "
                     f"profiles iterations 2 and 3), got {args.iterations} and {args.slow_iterations}")
    from avalanche_fgadahat.importance import IMPORTANCE_TYPES

    if args.importance == "all":
        types = list(IMPORTANCE_TYPES)
    elif args.importance == "in-pass":
        types = [name for name, kind in IMPORTANCE_TYPES.items() if kind.extra_passes == "none"]
    elif args.importance == "none":
        types = []
    else:
        types = args.importance.split(",")
    settings = list(SETTINGS) if args.setting == "all" else [args.setting]
    rows = []
    for setting in settings:
        for optimizer in args.optimizer:
            rows += run_setting(setting, device, args.rounds, args.iterations, types, args.slow_iterations, clock,
                                optimizer, args.count_iterations, args.fused, tuple(args.guards))
    emit(to_markdown(rows, device, clock), args.out)


if __name__ == "__main__":
    main()

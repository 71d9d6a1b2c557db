"""Where a training iteration's time goes: torch calls per iteration and CPU time per callback.

For `Naive`, HAT, AdaHAT and FG-AdaHAT (one importance type) on a ``step_time.py`` setting:

* **top-level ops**: the events without a parent in a ``torch.profiler`` trace of one
  iteration (forward ops, autograd nodes, the optimizer step): a proxy for the number of
  kernel launches, which bounds a launch-bound GPU step;
* **time per part**: the median time of the strategy's forward, criterion, backward and
  optimizer step and of every plugin callback, over the iterations of two experiences (the
  second and third: earlier tasks are protected there). Wall time with torch's default
  threads by default (what a user gets); ``--clock cpu`` (process CPU time) and
  ``--threads 1`` are the secondary view.

    python benchmarks/step_profile.py --setting mlp --optimizer adam
    python benchmarks/step_profile.py --setting mlp --threads 1 --clock cpu --optimizer sgd
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import defaultdict

import torch
from avalanche.benchmarks import tensors_benchmark
from avalanche.core import SupervisedPlugin
from torch.profiler import ProfilerActivity, profile

from avalanche_fgadahat import HATPlugin
from _common import (CLOCKS, OPTIMIZERS, SETTINGS, apply_threads, base_parser, build_method, check_clock, clock_words,
                     emit, header, method_names)
from step_time import InMemoryData

CALLBACKS = ("before_forward", "before_backward", "after_backward", "after_update")
STRATEGY_PARTS = ("forward", "criterion", "backward", "optimizer_step")


class ProfileOneIteration(SupervisedPlugin):
    """Counts the top-level profiler events of the 4th iteration of an armed experience."""

    def __init__(self) -> None:
        super().__init__()
        self.armed, self.iteration, self.count, self._profiler = False, 0, None, None

    def before_training_exp(self, strategy, **kwargs):
        self.iteration = 0

    def before_training_iteration(self, strategy, **kwargs):
        self.iteration += 1
        if self.armed and self.iteration == 4:
            self._profiler = profile(activities=[ProfilerActivity.CPU])
            self._profiler.__enter__()

    def after_training_iteration(self, strategy, **kwargs):
        if self._profiler is not None:
            self._profiler.__exit__(None, None, None)
            self.count = sum(1 for event in self._profiler.events() if event.cpu_parent is None)
            self._profiler, self.armed = None, False


def _timed(call, times: list[float], clock=time.perf_counter):
    def wrapper(*args, **kwargs):
        start = clock()
        result = call(*args, **kwargs)
        times.append(clock() - start)
        return result

    return wrapper


def profile_method(setting: str, name: str, optimizer: str, iterations: int,
                   clock: str = "wall") -> tuple[int, dict[str, float]]:
    shape, batch_size, _, _ = SETTINGS[setting]
    torch.manual_seed(0)
    batches = {t: [(torch.randn(batch_size, *shape), torch.randint(0, 10, (batch_size,)),
                    torch.full((batch_size,), t, dtype=torch.long)) for _ in range(iterations)] for t in range(3)}
    tiny = [(torch.zeros(10, *shape), torch.arange(10)) for _ in range(3)]
    stream = tensors_benchmark(train_tensors=tiny, test_tensors=tiny, task_labels=[0, 1, 2]).train_stream
    counter = ProfileOneIteration()
    strategy = build_method(name, setting, torch.device("cpu"), optimizer, [InMemoryData(batches), counter])
    times: dict[str, list[float]] = defaultdict(list)
    for part in STRATEGY_PARTS:
        setattr(strategy, part, _timed(getattr(strategy, part), times[part], CLOCKS[clock]))
    for plugin in (p for p in strategy.plugins if isinstance(p, HATPlugin)):  # the algorithm's own plugin
        for callback in CALLBACKS:
            label = f"{type(plugin).__name__}.{callback}"
            setattr(plugin, callback, _timed(getattr(plugin, callback), times[label], CLOCKS[clock]))
    strategy.train(stream[0])
    for values in times.values():  # the first experience is a warm-up (the wrappers hold these lists)
        values.clear()
    counter.armed = True
    strategy.train(stream[1])
    strategy.train(stream[2])
    return counter.count, {part: 1e6 * statistics.median(values) for part, values in times.items()}


def main() -> None:
    parser = base_parser(__doc__, list(SETTINGS))
    parser.add_argument("--optimizer", choices=list(OPTIMIZERS), default="sgd")
    parser.add_argument("--iterations", type=int, default=100, help="iterations per experience")
    parser.add_argument("--importance", default="input_weight_abs_sum", help="FG-AdaHAT's importance type")
    args = parser.parse_args()
    if args.device != "cpu":
        parser.error("--device: time per callback is measured on the cpu only")
    apply_threads(args.threads)
    check_clock(parser, args.clock, torch.device(args.device))
    lines = header(torch.device("cpu"), clock_words(args.clock), "part (median µs)")
    settings = list(SETTINGS) if args.setting == "all" else [args.setting]
    for setting in settings:
        lines.append(f"{setting}, {args.optimizer}: top-level ops per iteration; median µs ({args.clock}) per part")
        for name in method_names([args.importance]):
            count, parts = profile_method(setting, name, args.optimizer, args.iterations, args.clock)
            listed = ", ".join(f"{part} {value:.0f}" for part, value in sorted(parts.items(), key=lambda kv: -kv[1]))
            lines.append(f"| {name} | {count} ops | {listed} |")
            print(lines[-1], file=sys.stderr, flush=True)
    emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()

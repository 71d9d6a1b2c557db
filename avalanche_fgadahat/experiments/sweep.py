"""A sweep: strategies × seeds on one benchmark, resumable, on a chosen executor.

:func:`run_sweep` checks every strategy first, skips the runs already complete in the output
folder (``runner.load_complete``), hands the missing ones to an executor (``executors.py``:
local, or Ray) and prints one progress line per finished run. A failed run does not stop
the others: it is reported when it fails (its traceback in ``logs/<run>.error.log``) and,
once every run has finished, :class:`SweepError` lists the failures and carries the
complete records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .executors import Executor, LocalExecutor, Outcome, SweepPlan
from .presets import ExperimentSettings
from .runner import Log, _print, load_complete, log_relpath, run_config, run_path
from .strategies import ResolvedStrategy, check_buildable


class SweepError(RuntimeError):
    """Some runs of a sweep failed; ``failures`` = ``[(strategy label, seed, error)]``,
    ``records`` = the complete runs' records, in sweep order."""

    def __init__(self, failures: list[tuple[str, int, str]], records: list[dict[str, Any]]):
        self.failures = failures
        self.records = records
        listed = "; ".join(f"{label} seed {seed}: {error}" for label, seed, error in failures)
        super().__init__(f"{len(failures)} run(s) failed: {listed}")


def plan_sweep(
    settings: ExperimentSettings,
    strategies: Sequence[ResolvedStrategy],
    seeds: Sequence[int],
    out: Path,
    force: bool = False,
    log: Log = _print,
) -> tuple[dict[tuple[str, int], dict[str, Any]], SweepPlan]:
    """The stored records of the complete runs, and the plan of the missing ones (seed by
    seed). ``ValueError`` when ``out`` holds a complete run made with other settings."""
    records: dict[tuple[str, int], dict[str, Any]] = {}
    plan = SweepPlan(settings, Path(out), total=len(strategies) * len(seeds))
    for seed in seeds:
        for strategy in strategies:
            path = run_path(out, strategy, seed)
            stored = None if force else load_complete(path, run_config(settings, strategy, seed))
            if stored is not None:
                records[(strategy.label, seed)] = stored
                log(f"skip {strategy.label} seed {seed}: complete in {path}")
            else:
                plan.pending.append((strategy, seed))
    plan.done = plan.total - len(plan.pending)
    return records, plan


def run_sweep(
    settings: ExperimentSettings,
    strategies: Sequence[ResolvedStrategy],
    seeds: Sequence[int],
    out: Path,
    *,
    force: bool = False,
    log: Log = _print,
    executor: Executor | None = None,
) -> list[dict[str, Any]]:
    """Every (strategy, seed) run, skipping those already complete in ``out``; the records
    in strategy-then-seed order.

    Every strategy is built once without training first (:func:`check_buildable`; on the CPU
    when the executor runs elsewhere), so a bad setting of any of them raises ``ValueError``
    before the first run trains or writes. The executor defaults to :class:`LocalExecutor`;
    torch uses ``settings.threads`` CPU threads here during the sweep (if set).
    Raises :class:`SweepError` after the last run when some runs failed.
    """
    executor = executor or LocalExecutor()
    previous_threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        checked = replace(settings, device="cpu") if executor.remote else settings
        for strategy in strategies:  # every strategy's settings, before the first run trains
            check_buildable(strategy, checked)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        records, plan = plan_sweep(settings, strategies, seeds, out, force, log)
        failures: list[tuple[str, int, str]] = []
        finished = [plan.done]

        def on_outcome(outcome: Outcome) -> None:
            finished[0] += 1
            label, seed = outcome.strategy.label, outcome.seed
            where = f"[{finished[0]}/{plan.total}] {label} seed {seed}"
            if outcome.record is None:
                failures.append((label, seed, outcome.error or "failed"))
                details = out / log_relpath(outcome.strategy, seed).replace(".log", ".error.log")
                details.parent.mkdir(parents=True, exist_ok=True)
                details.write_text(outcome.details or f"{outcome.error}\n")
                log(f"{where}: FAILED: {outcome.error} (details: {details})")
                return
            records[(label, seed)] = outcome.record
            log(f"{where}: ACC {100 * outcome.record['metrics']['acc']:.2f}% "
                f"in {outcome.record['wall_time_s']:.1f} s")

        executor.run(plan, on_outcome, log)
    finally:
        torch.set_num_threads(previous_threads)
    ordered = [records[(s.label, seed)] for s in strategies for seed in seeds if (s.label, seed) in records]
    if failures:
        raise SweepError(failures, ordered)
    return ordered

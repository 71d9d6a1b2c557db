"""Executors: who runs a sweep's pending (strategy, seed) runs, and where.

A sweep (``sweep.py``) decides which runs are missing (:class:`SweepPlan`) and hands them to
an executor, which calls back once per finished run with an :class:`Outcome` (its record,
or the error that stopped it) after writing the run's files:

* :class:`LocalExecutor` — today's behaviour: one run after the other in this process,
  the benchmark built once per seed, each run's log written as it goes;
* ``ray_executor.RayExecutor`` — every run a Ray task with declared resources, results
  written here by the driver (``--executor ray``; needs the ``ray`` extra).

Ray is imported only by :func:`import_ray`, when asked for: the harness works without it.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .presets import ExperimentSettings
from .runner import Log, run_one
from .splits import build_benchmark
from .strategies import ResolvedStrategy, resolve_strategy

#: what to install when Ray is missing (printed by every error that needs Ray)
RAY_INSTALL = 'pip install "avalanche-fgadahat[ray]"'


class RayMissingError(ValueError):
    """Ray is needed (``--executor ray`` or ``--tune``) but not installed."""


def import_ray(what: str = "--executor ray"):
    """The ``ray`` module, or :class:`RayMissingError` saying how to install it."""
    try:
        import ray
    except ImportError as error:
        raise RayMissingError(f"{what} needs Ray, which is not installed here ({error}); install it with: "
                              f"{RAY_INSTALL}") from error
    return ray


@dataclass(frozen=True)
class RunTask:
    """One (strategy, seed) run in a form that pickles (a ``ResolvedStrategy`` holds
    read-only mappings, which do not): the strategy's name and its settings that differ
    from the name's defaults, resolved again where the run executes."""

    settings: ExperimentSettings
    label: str
    overrides: Mapping[str, Any]
    seed: int

    @classmethod
    def of(cls, settings: ExperimentSettings, strategy: ResolvedStrategy, seed: int) -> RunTask:
        """The task of running ``strategy`` (with its settings as they are) with ``seed``."""
        return cls(settings, strategy.label, settings_overrides(strategy), seed)

    def strategy(self) -> ResolvedStrategy:
        """The strategy, resolved from its name and overrides."""
        return resolve_strategy(self.label, dict(self.overrides), task_labels=None)


def settings_overrides(strategy: ResolvedStrategy) -> dict[str, Any]:
    """The settings of ``strategy`` that differ from those its name resolves to."""
    defaults = resolve_strategy(strategy.label, task_labels=None).settings
    return {key: value for key, value in strategy.settings.items() if key not in defaults or defaults[key] != value}


@dataclass
class SweepPlan:
    """The runs a sweep still has to do: ``pending`` (strategy, seed) pairs in order; ``done``
    of ``total`` runs are complete already."""

    settings: ExperimentSettings
    out: Path
    pending: list[tuple[ResolvedStrategy, int]] = field(default_factory=list)
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class Outcome:
    """A finished run: its ``record`` (files written), or the ``error`` that stopped it (one
    line) with its ``details`` (the traceback)."""

    strategy: ResolvedStrategy
    seed: int
    record: dict[str, Any] | None = None
    error: str | None = None
    details: str = ""


class Executor(Protocol):
    """Runs a :class:`SweepPlan`, calling ``on_outcome`` once per pending run."""

    #: ``True`` when runs execute in other processes (the driver then checks strategies on the CPU)
    remote: bool

    def run(self, plan: SweepPlan, on_outcome: Callable[[Outcome], None], log: Log) -> None:
        """Run every pending run of ``plan``; a failed run is an :class:`Outcome` with an error."""


def describe_error(error: BaseException) -> str:
    """``Type: message`` of an error, on one line."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}".rstrip(": ")


class LocalExecutor:
    """One run after the other in this process (the default, ``--executor local``)."""

    remote = False

    def run(self, plan: SweepPlan, on_outcome: Callable[[Outcome], None], log: Log) -> None:
        """Build each seed's benchmark once, run its strategies, write every run's files."""
        benchmarks: dict[int, Any] = {}
        for index, (strategy, seed) in enumerate(plan.pending):
            if seed not in benchmarks:
                benchmarks.clear()
                log(f"building {plan.settings.benchmark} benchmark for seed {seed} ...")
                benchmarks[seed] = build_benchmark(plan.settings, seed)
            prefix = f"[{plan.done + index + 1}/{plan.total}] "
            try:
                record = run_one(plan.settings, strategy, seed, benchmarks[seed], plan.out, log, prefix=prefix)
            except Exception as error:  # reported; the sweep goes on with the other runs
                on_outcome(Outcome(strategy, seed, error=describe_error(error), details=traceback.format_exc()))
                continue
            on_outcome(Outcome(strategy, seed, record=record))

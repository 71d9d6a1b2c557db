"""``--tune``: every method's own hyperparameters searched with Ray Tune, on validation data.

For each strategy of the sweep with a search space (``tuning_spaces.py``), one Ray Tune
``Tuner`` runs ``trials`` trials — random search (``BasicVariantGenerator``, seeded) whose
first trial is the method's default setting, the same budget for every method — each trial a
full continual-learning run on :func:`splits.validation_benchmark`: every task trained on 90 %
of its training data and scored by ACC on the held-out 10 %. The test stream is never read.
The best trial's settings (highest validation ACC; the earliest on ties, so the default
unless beaten) are the method's chosen settings, for the test-set runs of the sweep.

Each method's search is stored in ``<out>/tuning/<strategy>.json`` (every trial, the chosen
and the default setting and their scores) once complete; a rerun with the same protocol,
space, budget and seed reuses it instead of searching again. Ray Tune's own trial folders
are under ``<out>/tuning/ray_tune/``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .executors import RunTask, settings_overrides
from .presets import ExperimentSettings
from .ray_executor import ray_session
from .runner import RECORD_FORMAT, Log, _print, _write_atomic, load_complete, run_in_memory
from .ray_data import benchmark_to_ship, builds_on_workers, resolve_benchmark
from .splits import VALIDATION_FRACTION, stream_sizes
from .strategies import ResolvedStrategy, check_buildable, resolve_strategy
from .tuning_spaces import SearchSpace, search_space

#: the score every trial reports: ACC on the validation split after the last task
METRIC = "val_acc"


@dataclass(frozen=True)
class TuneOptions:
    """The budget and resources of a search: ``trials`` per method, Ray's ``address``, and
    each trial's CPUs, GPUs, memory (GiB) and torch threads."""

    trials: int
    seed: int
    address: str | None = None
    cpus_per_run: float = 1
    gpus_per_run: float = 0
    memory_gb: float | None = None
    threads: int = 1

    def resources(self) -> dict[str, float]:
        """Ray Tune's per-trial resource request."""
        wanted: dict[str, float] = {"cpu": self.cpus_per_run, "gpu": self.gpus_per_run}
        if self.memory_gb is not None:
            wanted["memory"] = int(self.memory_gb * 1024**3)
        return wanted


def tuning_config(settings: ExperimentSettings, strategy: ResolvedStrategy, space: SearchSpace,
                  options: TuneOptions) -> dict[str, Any]:
    """What defines a search (compared on rerun, as a run's config is)."""
    return {"experiment": settings.to_dict(), "strategy": strategy.config(), "seed": options.seed,
            "search": {"space": space.describe(), "trials": options.trials, "validation_fraction": VALIDATION_FRACTION,
                       "algorithm": "random search (Ray Tune BasicVariantGenerator), the default first"}}


def tuning_path(out: Path, strategy: ResolvedStrategy) -> Path:
    """``<out>/tuning/<strategy>.json``."""
    return Path(out) / "tuning" / f"{strategy.file_stem}.json"


def _trial(config: dict[str, Any], task: RunTask, threads: int, benchmark: Any) -> None:
    """One trial (runs in a Ray worker): the run with ``config``'s settings on the validation
    benchmark; reports its ACC there and the samples it trained and was scored on."""
    from ray import tune

    torch.set_num_threads(threads)
    strategy = resolve_strategy(task.label, {**task.overrides, **config}, task_labels=None)
    benchmark = resolve_benchmark(benchmark)
    result = run_in_memory(task.settings, strategy, task.seed, benchmark)
    sizes = stream_sizes(benchmark)
    tune.report({METRIC: result.record["metrics"]["acc"], "fit_samples": sizes["train"], "eval_samples": sizes["eval"]})


def _progress_callback(tune, label: str, budget: int, log: Log):
    """A Tune callback printing one line per finished or failed trial."""
    done = [0]

    class Progress(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            done[0] += 1
            score = (trial.last_result or {}).get(METRIC)
            shown = "no score" if score is None else f"val ACC {100 * score:.2f}%"
            log(f"tune {label}: trial {done[0]}/{budget}: {shown} ({format_settings(trial.config)})")

        def on_trial_error(self, iteration, trials, trial, **info):
            done[0] += 1
            log(f"tune {label}: trial {done[0]}/{budget} FAILED ({format_settings(trial.config)})")

    return Progress()


def format_settings(settings: Mapping[str, Any]) -> str:
    """``key=value, ...`` with floats to 3 significant digits."""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items())


def _search(strategy: ResolvedStrategy, space: SearchSpace, settings: ExperimentSettings, benchmark: Any,
            options: TuneOptions, out: Path, log: Log) -> list[dict[str, Any]]:
    """Run the method's trials; ``[{"settings", "val_acc", "fit_samples", "eval_samples", "error"}]``
    in trial order (``*_samples``: per task, those the trial trained and was scored on, as its
    worker saw them)."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    default = {key: strategy.settings[key] for key in space.keys}
    task = RunTask.of(settings, strategy, options.seed)
    storage = (Path(out) / "tuning" / "ray_tune").resolve()
    shutil.rmtree(storage / strategy.file_stem, ignore_errors=True)
    trainable = tune.with_resources(
        tune.with_parameters(_trial, task=task, threads=options.threads, benchmark=benchmark), options.resources())
    tuner = tune.Tuner(
        trainable,
        param_space={d.key: d.to_tune(tune) for d in space.dimensions},
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="max", num_samples=options.trials, reuse_actors=True,
            search_alg=BasicVariantGenerator(points_to_evaluate=[default], random_state=options.seed),
        ),
        run_config=tune.RunConfig(name=strategy.file_stem, storage_path=str(storage), verbose=0,
                                  callbacks=[_progress_callback(tune, strategy.label, options.trials, log)]),
    )
    with _quiet_tune():
        grid = tuner.fit()
    results = sorted(grid, key=lambda r: Path(r.path).name)  # "_trial_<id>_<index>_...": creation order
    return [{"settings": {k: r.config[k] for k in space.keys},
             METRIC: (r.metrics or {}).get(METRIC) if r.error is None else None,
             "fit_samples": (r.metrics or {}).get("fit_samples"),
             "eval_samples": (r.metrics or {}).get("eval_samples"),
             "error": None if r.error is None else str(r.error).strip().splitlines()[-1]} for r in results]


@contextmanager
def _quiet_tune() -> Iterator[None]:
    """Ray Tune's legacy output at verbosity 0 (silent): its newer output prints a
    configuration box and result paths whatever the verbosity. Our callback prints progress."""
    previous = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["RAY_AIR_NEW_OUTPUT"]
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = previous


def _choose(trials: list[dict[str, Any]], default: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The best trial (earliest on ties, the default first) and the default's trial."""
    scored = [t for t in trials if t[METRIC] is not None]
    if not scored:
        errors = sorted({t["error"] for t in trials if t["error"]})
        raise RuntimeError(f"every trial failed: {'; '.join(errors) or 'no score reported'}")
    first = next((t for t in trials if t["settings"] == default), None)
    ordered = ([first] if first in scored else []) + [t for t in scored if t is not first]
    best = max(ordered, key=lambda t: t[METRIC])  # max keeps the first of equal scores
    return best, first


def tune_strategies(
    settings: ExperimentSettings,
    strategies: Sequence[ResolvedStrategy],
    out: Path,
    options: TuneOptions,
    *,
    force: bool = False,
    log: Log = _print,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Search every strategy's space; return ``({label: its search record}, {label: error})``.

    Strategies without a space get a record without trials (their settings are kept). A
    search whose every trial failed is an error of that strategy; the others go on.
    """
    for strategy in strategies:  # a bad setting stops everything before the first trial
        check_buildable(strategy, replace(settings, device="cpu"))
    records: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    benchmark = None
    with ray_session(options.address, what="--tune"):
        for strategy in strategies:
            space = search_space(strategy.base)
            if space is None:
                log(f"tune {strategy.label}: nothing to tune; its settings are kept")
                records[strategy.label] = {"strategy": strategy.label, "trials": [], "best": None, "default": None}
                continue
            config = tuning_config(settings, strategy, space, options)
            path = tuning_path(out, strategy)
            stored = None if force else load_complete(path, config)
            if stored is not None:
                log(f"tune {strategy.label}: search complete in {path}; reused")
                records[strategy.label] = stored
                continue
            if benchmark is None:
                log(f"validation split of {settings.benchmark} for seed {options.seed}: "
                    f"{100 * VALIDATION_FRACTION:.0f} % of each task's training data, built "
                    + ("by each worker" if builds_on_workers(settings) else "here, shared through Ray's object store"))
                benchmark = benchmark_to_ship(settings, options.seed, validation=True)  # Tune puts it in the store
            log(f"tune {strategy.label}: {options.trials} trial(s) over {space.describe()}")
            started = time.perf_counter()
            default = {key: strategy.settings[key] for key in space.keys}
            trials = _search(strategy, space, settings, benchmark, options, out, log)
            try:
                best, first = _choose(trials, default)
            except RuntimeError as error:
                failed[strategy.label] = str(error)
                log(f"tune {strategy.label}: FAILED: {error}")
                continue
            record = {
                "format": RECORD_FORMAT, "status": "complete", "strategy": strategy.label, "config": config,
                "trials": trials, "best": best, "default": first, "source": space.source,
                "validation": {"fraction": VALIDATION_FRACTION, "fit_samples_per_task": best["fit_samples"],
                               "validation_samples_per_task": best["eval_samples"]},
                "wall_time_s": time.perf_counter() - started,
                "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            _write_atomic(path, record)
            records[strategy.label] = record
            log(f"tune {strategy.label}: chose {format_settings(best['settings'])} (val ACC {100 * best[METRIC]:.2f}%"
                f"{_default_note(first)}) in {record['wall_time_s']:.0f} s")
    return records, failed


def _default_note(first: dict[str, Any] | None) -> str:
    if first is None or first[METRIC] is None:
        return ""
    return f"; default {100 * first[METRIC]:.2f}%"


def tuned_strategies(strategies: Sequence[ResolvedStrategy], records: Mapping[str, dict[str, Any]]) -> list[ResolvedStrategy]:
    """The strategies with their chosen settings (those without a search unchanged)."""
    tuned = []
    for strategy in strategies:
        best = records[strategy.label]["best"]
        if best is None:
            tuned.append(strategy)
        else:
            tuned.append(resolve_strategy(strategy.label, {**settings_overrides(strategy), **best["settings"]},
                                          task_labels=None))
    return tuned


def tuning_table(records: Mapping[str, dict[str, Any]], options: TuneOptions) -> str:
    """The chosen settings as Markdown: per strategy the ranges searched, the trials, the
    default's and the chosen setting's validation ACC, and the chosen setting."""
    lines = [
        "## Tuned settings",
        "",
        f"Ray Tune, random search with the same budget for every method: {options.trials} trial(s) each, the "
        f"default setting first; score: ACC on a validation split ({100 * VALIDATION_FRACTION:.0f} % of each "
        f"task's training data, seed {options.seed}); the test set was not used. Chosen: the best validation ACC "
        "(the earliest trial on ties). The test-set runs use the chosen settings.",
        "",
        "| Strategy | Searched | Trials | Default val ACC (%) | Chosen val ACC (%) | Chosen settings |",
        "|---|---|---|---|---|---|",
    ]
    for label, record in records.items():
        best, first = record.get("best"), record.get("default")
        if best is None:
            lines.append(f"| {label} | nothing to tune | 0 | | | its settings |")
            continue
        default = "n/a" if first is None or first[METRIC] is None else f"{100 * first[METRIC]:.2f}"
        lines.append(f"| {label} | {record['config']['search']['space']} | {len(record['trials'])} | {default} | "
                     f"{100 * best[METRIC]:.2f} | {format_settings(best['settings'])} |")
    return "\n".join(lines) + "\n"

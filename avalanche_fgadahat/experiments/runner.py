"""One run: a strategy with a seed on a benchmark, its JSON record and log, resumable.

Each run follows Avalanche's standard loop — train on experience ``i``, then evaluate the
whole test stream — so row ``i`` of the accuracy matrix is "after training task ``i``".
Joint training is trained once on the whole stream (its matrix has one row). A run is
written to ``<out>/runs/<strategy>__seed<k>.json`` only once it is complete; a later sweep
with the same settings skips it (:func:`load_complete`), so an interrupted sweep resumes
where it stopped. :func:`run_one` writes the run's files as it goes (the local executor);
:func:`run_in_memory` returns the record and the log's text instead, for the driver to write
with :func:`save_result` (the Ray executor). Sweeps: ``sweep.py``.
"""

from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import torch

from ..models.base import UntrainedTaskWarning
from ..diagnostics import HATDiagnosticWarning
from . import metrics_math as mm
from .measures import (
    TASK_ID_ACCURACY,
    ACCURACY_MATRIX,
    NETWORK_CAPACITY,
    PEAK_CUDA,
    PEAK_RSS,
    STREAM_BWT,
    STREAM_FORGETTING,
    TRAINING_TIME,
    make_evaluator,
    per_experience,
)
from .presets import ExperimentSettings
from .splits import build_benchmark  # noqa: F401  (re-exported: runner.build_benchmark)
from .strategies import ResolvedStrategy, build_strategy

Log = Callable[[str], None]
RECORD_FORMAT = 1


def _print(message: str) -> None:
    print(message, flush=True)


def versions() -> dict[str, Any]:
    """Versions of everything that can change the numbers."""
    import avalanche
    import numpy

    from .. import __version__

    return {
        "avalanche_fgadahat": __version__,
        "git_commit": _git_commit(),
        "avalanche": getattr(avalanche, "__version__", "unknown"),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.version.cuda,
    }


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def run_path(out: Path, strategy: ResolvedStrategy, seed: int) -> Path:
    """Where the run's JSON record goes: ``<out>/runs/<strategy>__seed<k>.json``."""
    return Path(out) / "runs" / f"{strategy.file_stem}__seed{seed}.json"


def run_config(settings: ExperimentSettings, strategy: ResolvedStrategy, seed: int) -> dict[str, Any]:
    """The settings that define a run (stored in its record, compared on resume)."""
    return {"experiment": settings.to_dict(), "strategy": strategy.config(), "seed": seed}


def _defining(config: dict[str, Any]) -> dict[str, Any]:
    experiment = {k: v for k, v in config["experiment"].items() if k not in ExperimentSettings.NON_DEFINING}
    return json.loads(json.dumps({**config, "experiment": experiment}))


def load_complete(path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The stored record of this run if complete, else ``None``.

    A complete record made with other settings is an error (``ValueError`` naming the
    differing keys): rerunning would overwrite results the user may want; ``--force`` reruns.
    """
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if record.get("status") != "complete":
        return None
    stored, wanted = _defining(record["config"]), _defining(config)
    if stored != wanted:
        diff = sorted(_differences(stored, wanted))
        raise ValueError(
            f"{path} holds a complete run with other settings ({', '.join(diff)}); use another "
            "--out directory, or --force to rerun and overwrite it"
        )
    return record


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) | set(b)
        return [d for k in keys for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix[:-1]}: stored {a!r}, now {b!r}"]


def _write_atomic(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _seed_everything(seed: int) -> None:
    from avalanche.training.determinism.rng_manager import RNGManager

    RNGManager.set_random_seeds(seed)


def log_relpath(strategy: ResolvedStrategy, seed: int) -> str:
    """The run's log file, relative to the output folder: ``logs/<strategy>__seed<k>.log``."""
    return f"logs/{strategy.file_stem}__seed{seed}.log"


def execute_run(
    settings: ExperimentSettings,
    strategy: ResolvedStrategy,
    seed: int,
    benchmark,
    log_file: TextIO,
    log: Log = _print,
    prefix: str = "",
) -> dict[str, Any]:
    """Train and evaluate one strategy with one seed; return its record (no file written).

    Avalanche's text log and the learning diagnostics go to ``log_file``; ``log`` gets one
    progress line per task.
    """
    from avalanche.logging import TextLogger

    config = run_config(settings, strategy, seed)
    started = time.perf_counter()
    diagnostics: list[str] = []
    with warnings.catch_warnings():
        _log_diagnostics(log_file, diagnostics)
        # The loop evaluates the whole test stream, future tasks included, by design: their
        # numbers (an untrained head's, not necessarily chance level) fill the matrix's upper
        # triangle and enter no summary measure.
        warnings.simplefilter("ignore", UntrainedTaskWarning)
        evaluator = make_evaluator(
            device=settings.device, hat_family=strategy.spec.family == "hat", loggers=[TextLogger(log_file)],
            task_inference=strategy.settings.get("task_inference") is not None,
        )
        _seed_everything(seed)
        cl_strategy = build_strategy(strategy, settings, evaluator)
        run_kwargs = {"num_workers": settings.num_workers}
        n = settings.n_experiences
        if strategy.spec.joint:
            cl_strategy.train(benchmark.train_stream, **run_kwargs)
            cl_strategy.eval(benchmark.test_stream, **run_kwargs)
            log(f"{prefix}{strategy.label} seed {seed}: trained jointly on {n} tasks")
        else:
            for i, experience in enumerate(benchmark.train_stream):
                cl_strategy.train(experience, **run_kwargs)
                cl_strategy.eval(benchmark.test_stream, **run_kwargs)
                row = _matrix(evaluator)[i]
                log(
                    f"{prefix}{strategy.label} seed {seed}: task {i + 1}/{n} done, "
                    f"ACC over tasks 1-{i + 1} = {100 * sum(row[: i + 1]) / (i + 1):.2f}%"
                )
    return {
        "format": RECORD_FORMAT,
        "status": "complete",
        "strategy": strategy.label,
        "seed": seed,
        "config": config,
        "versions": versions(),
        "metrics": _collect(evaluator, strategy, n),
        "wall_time_s": time.perf_counter() - started,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "log": log_relpath(strategy, seed),
        "diagnostic_warnings": diagnostics,
    }


def run_one(
    settings: ExperimentSettings,
    strategy: ResolvedStrategy,
    seed: int,
    benchmark,
    out: Path,
    log: Log = _print,
    prefix: str = "",
) -> dict[str, Any]:
    """Train and evaluate one strategy with one seed; write and return its record (the log
    file is written as the run goes)."""
    out = Path(out)
    log_path = out / log_relpath(strategy, seed)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log_file:
        record = execute_run(settings, strategy, seed, benchmark, log_file, log, prefix)
    if record["diagnostic_warnings"]:
        log(f"{prefix}{strategy.label} seed {seed}: {len(record['diagnostic_warnings'])} learning-diagnostic "
            f"warning(s) (docs/diagnostics.md) in {log_path}")
    _write_atomic(run_path(out, strategy, seed), record)
    return record


@dataclass(frozen=True)
class RunResult:
    """A run done away from the output folder: its record and its log's text."""

    record: dict[str, Any]
    log_text: str


def run_in_memory(settings: ExperimentSettings, strategy: ResolvedStrategy, seed: int, benchmark) -> RunResult:
    """:func:`execute_run` with the log kept in memory and no progress lines (a Ray worker)."""
    buffer = io.StringIO()
    record = execute_run(settings, strategy, seed, benchmark, buffer, log=lambda message: None)
    return RunResult(record, buffer.getvalue())


def save_result(out: Path, strategy: ResolvedStrategy, seed: int, result: RunResult) -> Path:
    """Write a :class:`RunResult` as :func:`run_one` would have: the log, then the JSON
    record (atomically, last); return the record's path."""
    out = Path(out)
    log_path = out / result.record["log"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(result.log_text)
    path = run_path(out, strategy, seed)
    _write_atomic(path, result.record)
    return path


def _log_diagnostics(log_file, collected: list[str]) -> None:
    """Inside a ``warnings.catch_warnings()`` block: write the HAT family's learning-diagnostic
    warnings to the run's log (and ``collected``) instead of the terminal; others as usual."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, HATDiagnosticWarning):
            collected.append(str(message))
            log_file.write(f"HATDiagnosticWarning: {message}\n")
            return
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    warnings.simplefilter("always", HATDiagnosticWarning)


def _matrix(evaluator) -> list[list[float]]:
    return evaluator.get_last_metrics()[ACCURACY_MATRIX].tolist()


def _collect(evaluator, strategy: ResolvedStrategy, n: int) -> dict[str, Any]:
    """The run's measures from the evaluation plugin (see ``measures`` and ``metrics_math``)."""
    everything = evaluator.get_all_metrics()
    last = evaluator.get_last_metrics()
    full = _matrix(evaluator)
    times = per_experience(everything, TRAINING_TIME)
    metrics: dict[str, Any] = {
        "accuracy_matrix": full[:1] if strategy.spec.joint else full,
        "train_time_per_experience_s": times,
        "train_time_total_s": sum(times),
        "peak_rss_mb_per_experience": per_experience(everything, PEAK_RSS),
        "peak_cuda_mb_per_experience": per_experience(everything, PEAK_CUDA) or None,
        "capacity_per_task": per_experience(everything, NETWORK_CAPACITY) or None,
        "avalanche": {"stream_forgetting": last.get(STREAM_FORGETTING), "stream_bwt": last.get(STREAM_BWT)},
    }
    task_id = everything.get(TASK_ID_ACCURACY)
    if task_id is not None:  # task inference: after each task, over the tasks trained so far
        metrics.update(task_id_acc_after_each_task=list(task_id[1]), task_id_acc=task_id[1][-1])
    if strategy.spec.joint:
        final = full[0]
        metrics.update(acc=sum(final) / n, acc_after_each_task=None, bwt=None, forgetting=None)
    else:
        metrics.update(
            acc=mm.average_accuracy(full),
            acc_after_each_task=mm.accuracy_after_each_task(full),
            bwt=mm.backward_transfer(full),
            forgetting=mm.forgetting(full),
        )
    return metrics

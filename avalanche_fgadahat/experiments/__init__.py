"""Experiments: the HAT family against Avalanche's baselines on standard benchmarks.

Command line: ``python -m avalanche_fgadahat.experiments`` (or the console script
``avalanche-fgadahat-experiments``); see ``docs/experiments.md``. Modules, one job each:

* ``presets``   — benchmarks, backbones and training protocols (``PRESETS``);
* ``settings``  — every strategy's hyperparameters and their sources;
* ``strategies`` — strategy name → model, optimiser and Avalanche strategy;
* ``baseline_models`` — the HAT backbones' layers unmasked, with per-task heads;
* ``measures``  — the metrics given to Avalanche's ``EvaluationPlugin``;
* ``metrics_math`` — ACC, BWT and forgetting from an accuracy matrix;
* ``runner``    — run strategies × seeds, one JSON per run, resumable;
* ``report``    — tables (Markdown, CSV) and plots (PNG).
"""

from .presets import PRESETS, ExperimentSettings, Preset
from .report import write_plots, write_tables
from .runner import run_one, run_sweep
from .strategies import STRATEGIES, resolve_strategy

__all__ = [
    "PRESETS",
    "STRATEGIES",
    "ExperimentSettings",
    "Preset",
    "resolve_strategy",
    "run_one",
    "run_sweep",
    "write_plots",
    "write_tables",
]

"""Experiments: the HAT family against Avalanche's baselines on standard benchmarks.

**This is the research harness, not library API.** It ships inside the package only so that
``python -m avalanche_fgadahat.experiments`` and the console script
``avalanche-fgadahat-experiments`` work from an installed copy (its extra dependencies:
``pip install avalanche-fgadahat[experiments]``). Its names, options and outputs may change
between versions without notice; build on the library (``avalanche_fgadahat`` and its
subpackages) instead.

The boundary is one-way (``tests/test_import_side_effects.py`` checks it):

* the harness may import the library's modules, Avalanche, torch, matplotlib and the
  standard library;
* no library module imports ``avalanche_fgadahat.experiments`` (and ``import
  avalanche_fgadahat`` does not load it).

The benchmark scripts (``benchmarks/``) reuse the harness's models and strategy registry.
Command line: see ``docs/experiments.md``. Modules, one job each:

* ``presets``   — benchmarks, backbones and training protocols (``PRESETS``);
* ``settings``  — every strategy's hyperparameters and their sources;
* ``strategy_registry`` — what each strategy name builds (``STRATEGIES``, the builders);
* ``strategies`` — strategy name (and ``--set`` overrides) → model, optimiser and strategy;
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

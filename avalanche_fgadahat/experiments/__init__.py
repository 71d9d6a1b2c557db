"""Experiments: the HAT family against Avalanche's baselines on standard benchmarks.

**This is the research harness, not library API.** It ships inside the package only so that
``python -m avalanche_fgadahat.experiments`` and the console script
``avalanche-fgadahat-experiments`` work from an installed copy (its extra dependencies:
``pip install avalanche-fgadahat[experiments]``). Its names, options and outputs may change
between versions without notice; build on the library (``avalanche_fgadahat`` and its
subpackages) instead.

The boundary is one-way (``tests/test_import_side_effects.py`` checks it):

* the harness may import the library's modules, Avalanche, torch, matplotlib and the
  standard library, and Ray (the ``ray`` extra) inside functions, when Ray is asked for;
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
* ``splits``    — the benchmark a run trains on: subsampled, or ``--tune``'s validation split;
* ``runner``    — one run: its JSON record and log, and the resume check;
* ``sweep``     — strategies × seeds, skipping complete runs, on an executor;
* ``executors`` — the local executor and what every executor gets and gives back;
* ``ray_executor`` — every run a Ray task (``--executor ray``, the ``ray`` extra);
* ``ray_data``  — how a benchmark reaches the Ray tasks (object store, or built on each worker);
* ``cli_scale`` — the command line's Ray options, checked together;
* ``tuning_spaces`` — each method's hyperparameters that ``--tune`` searches, and their ranges;
* ``tuning``    — ``--tune``: Ray Tune on the validation split, the chosen settings;
* ``report``    — tables (Markdown, CSV) and plots (PNG).
"""

from .presets import PRESETS, ExperimentSettings, Preset
from .report import write_plots, write_tables
from .runner import run_one
from .strategies import STRATEGIES, resolve_strategy
from .sweep import run_sweep

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

"""avalanche-fgadahat: HAT, AdaHAT and FG-AdaHAT for Avalanche.

Importing the package changes no other library's state (no patching of torch, dill or the
global warning filters). The research harness ``avalanche_fgadahat.experiments`` is not
imported here and is not library API.
"""

import warnings as _warnings

# Avalanche's import of ``qpsolvers`` (for its GEM strategy, which this package does not use)
# warns "no QP solver found" on every run where no solver is installed. The filter holds only
# while this package imports Avalanche; the global warning filters are left as they were.
with _warnings.catch_warnings():
    _warnings.filterwarnings("ignore", message="no QP solver", category=UserWarning)
    import avalanche.training  # noqa: F401

from .plugins import AdaHATPlugin, FGAdaHATPlugin, HATPlugin
from .strategies import HAT, AdaHAT, FGAdaHAT
from .config import AdaHATConfig, FGAdaHATConfig, HATConfig

# ``checkpoint`` has no import-time effect on torch or dill: its save/load functions repair
# pickling for the duration of each call (see avalanche_fgadahat/checkpoint.py).
from . import checkpoint  # noqa: E402,F401
from .determinism import set_seed  # noqa: E402
from .figures import plot_masks, save_mask_figure
from .metrics import MetricsCSVLogger, hat_capacity_metrics, hat_diagnostic_metrics, hat_mask_metrics
from .diagnostics import HATDiagnosticWarning, LearningDiagnostics

__version__ = "0.1.0"

__all__ = [
    "AdaHAT",
    "AdaHATConfig",
    "FGAdaHATConfig",
    "HATConfig",
    "AdaHATPlugin",
    "FGAdaHAT",
    "FGAdaHATPlugin",
    "HAT",
    "HATDiagnosticWarning",
    "HATPlugin",
    "LearningDiagnostics",
    "set_seed",
    "MetricsCSVLogger",
    "__version__",
    "hat_capacity_metrics",
    "hat_diagnostic_metrics",
    "hat_mask_metrics",
    "plot_masks",
    "save_mask_figure",
]

"""avalanche-fgadahat: HAT, AdaHAT and FG-AdaHAT for Avalanche."""

import warnings as _warnings

# Avalanche's import of ``qpsolvers`` (for its GEM strategy, which this package does not use)
# warns "no QP solver found" on every run where no solver is installed. The filter holds only
# while this package imports Avalanche; the global warning filters are left as they were.
with _warnings.catch_warnings():
    _warnings.filterwarnings("ignore", message="no QP solver", category=UserWarning)
    import avalanche.training  # noqa: F401

from .plugins import AdaHATPlugin, FGAdaHATPlugin, HATPlugin
from .strategies import HAT, AdaHAT, FGAdaHAT

# Importing checkpoint re-attaches torch.optim's submodules so that Avalanche's dill-based
# save_checkpoint works on this torch (see avalanche_fgadahat/checkpoint.py).
from . import checkpoint  # noqa: E402,F401
from .determinism import set_seed  # noqa: E402
from .figures import plot_masks, save_mask_figure
from .metrics import MetricsCSVLogger, hat_capacity_metrics, hat_diagnostic_metrics, hat_mask_metrics
from .plugins.diagnostics import HATDiagnosticWarning, LearningDiagnostics

__version__ = "0.1.0"

__all__ = [
    "AdaHAT",
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

"""avalanche-fgadahat: HAT, AdaHAT and FG-AdaHAT for Avalanche."""

from .plugins import AdaHATPlugin, FGAdaHATPlugin, HATPlugin
from .strategies import HAT, AdaHAT, FGAdaHAT
from .figures import plot_masks, save_mask_figure
from .metrics import MetricsCSVLogger, hat_capacity_metrics, hat_mask_metrics

__version__ = "0.1.0"

__all__ = [
    "AdaHAT",
    "AdaHATPlugin",
    "FGAdaHAT",
    "FGAdaHATPlugin",
    "HAT",
    "HATPlugin",
    "MetricsCSVLogger",
    "__version__",
    "hat_capacity_metrics",
    "hat_mask_metrics",
    "plot_masks",
    "save_mask_figure",
]

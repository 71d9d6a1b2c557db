"""avalanche-fgadahat: HAT, AdaHAT and FG-AdaHAT for Avalanche."""

from .plugins import AdaHATPlugin, FGAdaHATPlugin, HATPlugin
from .strategies import HAT, AdaHAT, FGAdaHAT

__version__ = "0.1.0"

__all__ = [
    "AdaHAT",
    "AdaHATPlugin",
    "FGAdaHAT",
    "FGAdaHATPlugin",
    "HAT",
    "HATPlugin",
    "__version__",
]

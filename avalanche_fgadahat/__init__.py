"""avalanche-fgadahat: HAT, AdaHAT and FG-AdaHAT for Avalanche."""

from .plugins import AdaHATPlugin, HATPlugin
from .strategies import HAT, AdaHAT

__version__ = "0.1.0"

__all__ = ["AdaHAT", "AdaHATPlugin", "HAT", "HATPlugin", "__version__"]

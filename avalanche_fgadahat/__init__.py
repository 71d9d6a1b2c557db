"""avalanche-fgadahat: HAT, AdaHAT and FG-AdaHAT for Avalanche."""

from .plugins import HATPlugin
from .strategies import HAT

__version__ = "0.1.0"

__all__ = ["HAT", "HATPlugin", "__version__"]

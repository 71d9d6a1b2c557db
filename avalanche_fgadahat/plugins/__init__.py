"""Avalanche plugins of the HAT family."""

from .adahat import AdaHATPlugin
from .fgadahat import FGAdaHATPlugin
from .hat import HATPlugin

__all__ = ["AdaHATPlugin", "FGAdaHATPlugin", "HATPlugin"]

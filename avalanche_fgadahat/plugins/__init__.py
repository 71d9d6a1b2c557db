"""Avalanche plugins of the HAT family."""

from .adahat import AdaHATPlugin
from .hat import HATPlugin

__all__ = ["AdaHATPlugin", "HATPlugin"]

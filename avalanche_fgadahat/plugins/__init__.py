"""Avalanche plugins of the HAT family."""

from .hat import HATPlugin

__all__ = ["HATPlugin"]

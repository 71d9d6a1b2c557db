"""How a HAT-family plugin or strategy holds its method's settings: one config object.

Each plugin class names its config class (``config_class``); it is built from a config
(``HATPlugin(HATConfig(s_max=200.0))``) or from keyword settings (``HATPlugin(s_max=200.0)``);
given both, the keywords override the config's values (``config.replace(**keywords)``). It
reads every setting from the config. The settings stay readable as
attributes (``plugin.s_max``), read-only. The keyword signature shown by ``help()`` and
``inspect.signature`` is generated from the config class, so each default is written once.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from ..config import HATConfig


def build_config(config_class: type[HATConfig], config: Any, settings: Mapping[str, Any], owner: str) -> HATConfig:
    """The config of ``owner``: ``config`` (exactly a ``config_class``) with ``settings`` applied.

    :raises TypeError: ``config`` of another class (e.g. an ``AdaHATConfig`` for ``HATPlugin``),
        or a setting ``config_class`` does not have (the message lists the accepted ones).
    :raises ValueError: a setting outside its accepted values (see :mod:`avalanche_fgadahat.config`).
    """
    if config is None:
        return config_class.from_settings(settings, owner)
    if type(config) is not config_class:
        raise TypeError(
            f"{owner} takes config={config_class.__name__}(...) or keyword settings; "
            f"got config={config!r}"
        )
    return config.replace(**settings) if settings else config


def settings_signature(config_class: type[HATConfig], leading: list[inspect.Parameter] | None = None) -> inspect.Signature:
    """A constructor's documented signature: a plugin's ``(config=None, *, <settings>)``, or a
    strategy's ``(<leading>, *, <settings>, config=None)``."""
    annotation = f"{config_class.__name__} | None"
    settings = config_class.signature_parameters()
    if not leading:
        config = inspect.Parameter("config", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=annotation)
        return inspect.Signature([config, *settings])
    config = inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
    return inspect.Signature([*leading, *settings, config])


class ConfiguredSettings:
    """Mixin: settings readable as attributes of ``self.config`` (see module doc)."""

    config: HATConfig

    def __getattr__(self, name: str) -> Any:
        config = self.__dict__.get("config")
        if config is not None and name in type(config).__dataclass_fields__:
            return getattr(config, name)
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        config = self.__dict__.get("config")
        if config is not None and name in type(config).__dataclass_fields__:
            raise AttributeError(
                f"{name} is a setting of {type(self).__name__}'s config and read-only (changing it here "
                f"would not reach the training step): build a new plugin, e.g. "
                f"{type(self).__name__}(plugin.config.replace({name}=...))"
            )
        super().__setattr__(name, value)

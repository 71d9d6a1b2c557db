"""HAT, AdaHAT and FG-AdaHAT as Avalanche ``SupervisedTemplate`` strategies.

Each strategy is a plain ``SupervisedTemplate`` with its plugin placed first in the
plugin list (so it runs before the user's plugins, the metrics and the periodic eval).
Everything else — criterion, mini-batch sizes, epochs, device, evaluator, ``eval_every``
— is Avalanche's own and passed through unchanged. The first arguments are Avalanche's, in
its order (``model, optimizer, criterion, train_mb_size, train_epochs, eval_mb_size,
device, plugins, evaluator, eval_every``), so Avalanche's legacy positional form
``HAT(model, optimizer, criterion)`` means what it means for ``Naive``; the algorithm's
hyperparameters follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import inspect

import torch
from avalanche.core import BasePlugin
from avalanche.training.templates import SupervisedTemplate
from avalanche.training.plugins.evaluation import default_evaluator
from torch.nn import CrossEntropyLoss, Module
from torch.optim import Optimizer

from .models.base import MixedTaskBatchError
from .plugins.adahat import AdaHATPlugin
from .plugins.checks import (
    check_no_task_mixing,
    find_hat_plugin,
    find_hat_plugins,
    mixed_batch_message,
    two_plugins_message,
    unwrap_hat_model,
)
from .plugins.fgadahat import FGAdaHATPlugin
from .plugins.hat import HATPlugin
from .plugins.settings import settings_signature
from .config import HATConfig


class _HATFamilyStrategy(SupervisedTemplate):
    """Common wiring: validate the model, build the algorithm's plugin from its settings and
    put it first. The first arguments are Avalanche's, keyword-only as in Avalanche (its legacy
    positional form maps onto the same names, in ``Naive``'s order); then ``config`` (the
    method's config object) or its settings as keywords; any other keyword (e.g.
    ``peval_mode``) goes to ``SupervisedTemplate``."""

    #: the algorithm's plugin class (its ``config_class`` names the settings)
    plugin_class: type[HATPlugin] = HATPlugin

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give each strategy its own ``__init__`` whose signature lists its method's settings
        (Avalanche checks every keyword against the ``__init__`` signatures of the class)."""
        if "__init__" in cls.__dict__:  # a user's subclass with its own __init__ keeps it
            super().__init_subclass__(**kwargs)
            return
        template = [p for name, p in inspect.signature(_HATFamilyStrategy._init).parameters.items()
                    if name not in ("config", "settings")]
        signature = settings_signature(cls.plugin_class.config_class, template)
        name = cls.__name__

        def __init__(self, **arguments: Any) -> None:
            missing = [arg for arg in ("model", "optimizer") if arg not in arguments]
            if missing:
                raise TypeError(f"{name}() missing required keyword argument(s): {', '.join(missing)}")
            _HATFamilyStrategy._init(self, **arguments)

        __init__.__signature__ = signature
        __init__.__doc__ = cls.__doc__
        __init__.__qualname__ = f"{name}.__init__"
        cls.__init__ = __init__
        super().__init_subclass__(**kwargs)
        cls.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])

    def __init__(
        self,
        *,
        model: Module,
        optimizer: Optimizer,
        criterion: Any = CrossEntropyLoss(),
        train_mb_size: int = 1,
        train_epochs: int = 1,
        eval_mb_size: int | None = None,
        device: str | torch.device = "cpu",
        plugins: Sequence[BasePlugin] | None = None,
        evaluator: Any = default_evaluator,
        eval_every: int = -1,
        config: HATConfig | None = None,
        **settings: Any,
    ) -> None:
        names = set(self.plugin_class.config_class.setting_names())
        method = {k: v for k, v in settings.items() if k in names}
        others = {k: v for k, v in settings.items() if k not in names}
        plugin = self.plugin_class(config, **method)
        template = dict(criterion=criterion, train_mb_size=train_mb_size, train_epochs=train_epochs,
                        eval_mb_size=eval_mb_size, device=device, evaluator=evaluator, eval_every=eval_every,
                        **others)
        self._setup(model, optimizer, plugin, plugins, template)

    _init = __init__

    def _setup(
        self,
        model: Module,
        optimizer: Optimizer,
        plugin: HATPlugin,
        plugins: Sequence[BasePlugin] | None,
        template_kwargs: dict[str, Any],
    ) -> None:
        model = plugin.hat_network(model)
        model.set_task_inference(plugin.config.task_inference)  # a shared head is refused here, before training
        extra = find_hat_plugins(plugins or [])
        if extra:
            raise ValueError(
                f"plugins= holds {', '.join(type(p).__name__ for p in extra)}, but {type(self).__name__} "
                f"already trains with its own {type(plugin).__name__}. "
                + two_plugins_message([plugin, *extra], where=f"{type(self).__name__}(..., plugins=...)")
            )
        plugin.warn_in_after_training = False  # train() warns once everything has finished
        SupervisedTemplate.__init__(
            self, model=model, optimizer=optimizer, plugins=[plugin, *(plugins or [])], **template_kwargs
        )
        check_no_task_mixing(self)

    def train(self, experiences, eval_streams=None, **kwargs):
        """Avalanche's ``train``; then the learning-diagnostic warnings of the experiences just
        trained (after every plugin's ``after_training`` and Avalanche's clean-up, so a warning
        turned into an error interrupts nothing)."""
        result = super().train(experiences, eval_streams, **kwargs)
        self.hat_plugin.flush_warnings()
        return result

    def _before_training_exp(self, **kwargs):
        """Avalanche's start of experience; on an error in any plugin's ``before_training_exp``
        (after the HAT-family plugin began the experience), roll the experience back, then re-raise."""
        try:
            return super()._before_training_exp(**kwargs)
        except BaseException:
            self.hat_plugin.rollback_experience(self)
            raise

    def _train_exp(self, experience, eval_streams=None, **kwargs):
        """Avalanche's epoch loop; on any error, roll the experience back, then re-raise.

        See :meth:`HATPlugin.rollback_experience`: after e.g. a NaN loss, a bad mini-batch
        or an interrupt the model is as at the start of the experience, ready to retrain.
        """
        try:
            return super()._train_exp(experience, eval_streams, **kwargs)
        except MixedTaskBatchError as error:  # a plugin after ours changed the mini-batch
            iteration = self.clock.train_epoch_iterations
            self.hat_plugin.rollback_experience(self)
            raise ValueError(
                mixed_batch_message(self, error.task, error.found, iteration) + "; the experience was rolled back"
            ) from error
        except BaseException:
            self.hat_plugin.rollback_experience(self)
            raise

    @property
    def hat_plugin(self) -> HATPlugin:
        """The algorithm's plugin (re-fetched, so it stays right after a checkpoint load)."""
        return find_hat_plugin(self)


class HAT(_HATFamilyStrategy):
    """Hard Attention to the Task (Serrà et al. 2018): a ``SupervisedTemplate`` with
    :class:`HATPlugin` first. The algorithm's settings are
    :class:`~avalanche_fgadahat.config.HATConfig`'s (as keywords, or ``config=``)."""

    plugin_class = HATPlugin


class AdaHAT(_HATFamilyStrategy):
    """AdaHAT (Wang et al. 2024): a ``SupervisedTemplate`` with :class:`AdaHATPlugin` first.
    The algorithm's settings are :class:`~avalanche_fgadahat.config.AdaHATConfig`'s."""

    plugin_class = AdaHATPlugin


class FGAdaHAT(_HATFamilyStrategy):
    """FG-AdaHAT (CLArena ``FGAdaHAT``): a ``SupervisedTemplate`` with :class:`FGAdaHATPlugin`
    first. The algorithm's settings are :class:`~avalanche_fgadahat.config.FGAdaHATConfig`'s
    (CLArena's names; defaults of its HEAD paper configs, ICU importance)."""

    plugin_class = FGAdaHATPlugin

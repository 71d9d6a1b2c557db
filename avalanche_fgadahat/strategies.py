"""HAT, AdaHAT and FG-AdaHAT as Avalanche ``SupervisedTemplate`` strategies.

Each strategy is a plain ``SupervisedTemplate`` with its plugin placed first in the
plugin list (so it runs before the user's plugins, the metrics and the periodic eval).
Everything else — criterion, mini-batch sizes, epochs, device, evaluator, ``eval_every``
— is Avalanche's own and passed through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from avalanche.core import BasePlugin
from avalanche.training.templates import SupervisedTemplate
from torch.nn import Module
from torch.optim import Optimizer

from .plugins.adahat import AdaHATPlugin
from .plugins.hat import HATPlugin, unwrap_hat_model


class _HATFamilyStrategy(SupervisedTemplate):
    """Common wiring: validate the model, put the algorithm's plugin first."""

    def _setup(
        self,
        model: Module,
        optimizer: Optimizer,
        plugin: HATPlugin,
        plugins: Sequence[BasePlugin] | None,
        template_kwargs: dict[str, Any],
    ) -> None:
        unwrap_hat_model(model)
        SupervisedTemplate.__init__(
            self, model=model, optimizer=optimizer, plugins=[plugin, *(plugins or [])], **template_kwargs
        )

    @property
    def hat_plugin(self) -> HATPlugin:
        """The algorithm's plugin (re-fetched, so it stays right after a checkpoint load)."""
        for plugin in self.plugins:
            if isinstance(plugin, HATPlugin):
                return plugin
        raise LookupError("no HAT-family plugin in strategy.plugins")


class HAT(_HATFamilyStrategy):
    """Hard Attention to the Task (Serrà et al. 2018). See :class:`HATPlugin` for the
    algorithm's arguments; the rest are ``SupervisedTemplate``'s (``criterion``,
    ``train_mb_size``, ``train_epochs``, ``eval_mb_size``, ``device``, ``evaluator``,
    ``eval_every``, ``peval_mode``)."""

    def __init__(
        self,
        *,
        model: Module,
        optimizer: Optimizer,
        adjustment_mode: str = "hat",
        s_max: float = 400.0,
        clamp_threshold: float = 50.0,
        mask_sparsity_reg_factor: float = 0.1,
        mask_sparsity_reg_mode: str = "original",
        task_embedding_init_mode: str = "N01",
        alpha: float = 1e-6,
        embedding_clamp: float | None = None,
        check_finite_loss: bool = True,
        plugins: Sequence[BasePlugin] | None = None,
        **kwargs: Any,
    ) -> None:
        plugin = HATPlugin(
            adjustment_mode=adjustment_mode,
            s_max=s_max,
            clamp_threshold=clamp_threshold,
            mask_sparsity_reg_factor=mask_sparsity_reg_factor,
            mask_sparsity_reg_mode=mask_sparsity_reg_mode,
            task_embedding_init_mode=task_embedding_init_mode,
            alpha=alpha,
            embedding_clamp=embedding_clamp,
            check_finite_loss=check_finite_loss,
        )
        self._setup(model, optimizer, plugin, plugins, kwargs)


class AdaHAT(_HATFamilyStrategy):
    """AdaHAT (Wang et al. 2024). See :class:`AdaHATPlugin` for the algorithm's arguments;
    the rest are ``SupervisedTemplate``'s."""

    def __init__(
        self,
        *,
        model: Module,
        optimizer: Optimizer,
        adjustment_mode: str = "adahat",
        adjustment_intensity: float = 1e-6,
        epsilon: float = 0.1,
        s_max: float = 400.0,
        clamp_threshold: float = 50.0,
        mask_sparsity_reg_factor: float = 0.1,
        mask_sparsity_reg_mode: str = "original",
        task_embedding_init_mode: str = "N01",
        embedding_clamp: float | None = None,
        check_finite_loss: bool = True,
        plugins: Sequence[BasePlugin] | None = None,
        **kwargs: Any,
    ) -> None:
        plugin = AdaHATPlugin(
            adjustment_mode=adjustment_mode,
            adjustment_intensity=adjustment_intensity,
            epsilon=epsilon,
            s_max=s_max,
            clamp_threshold=clamp_threshold,
            mask_sparsity_reg_factor=mask_sparsity_reg_factor,
            mask_sparsity_reg_mode=mask_sparsity_reg_mode,
            task_embedding_init_mode=task_embedding_init_mode,
            embedding_clamp=embedding_clamp,
            check_finite_loss=check_finite_loss,
        )
        self._setup(model, optimizer, plugin, plugins, kwargs)

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
from .plugins.diagnostics import LearningDiagnostics
from .plugins.fgadahat import FGAdaHATPlugin
from .plugins.hat import HATPlugin


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


def _template_kwargs(criterion, train_mb_size, train_epochs, eval_mb_size, device, evaluator, eval_every,
                     kwargs: dict[str, Any]) -> dict[str, Any]:
    return dict(criterion=criterion, train_mb_size=train_mb_size, train_epochs=train_epochs,
                eval_mb_size=eval_mb_size, device=device, evaluator=evaluator, eval_every=eval_every, **kwargs)


class HAT(_HATFamilyStrategy):
    """Hard Attention to the Task (Serrà et al. 2018). See :class:`HATPlugin` for the
    algorithm's arguments; the rest are ``SupervisedTemplate``'s (``criterion``,
    ``train_mb_size``, ``train_epochs``, ``eval_mb_size``, ``device``, ``plugins``,
    ``evaluator``, ``eval_every``, and through ``**kwargs`` e.g. ``peval_mode``). The
    signature is keyword-only as Avalanche's; Avalanche's legacy positional form
    ``HAT(model, optimizer, criterion, ...)`` maps onto the same names, in ``Naive``'s order."""

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
        adjustment_mode: str = "hat",
        s_max: float = 400.0,
        clamp_threshold: float = 50.0,
        mask_sparsity_reg_factor: float = 0.1,
        mask_sparsity_reg_mode: str = "original",
        task_embedding_init_mode: str = "N01",
        alpha: float = 1e-6,
        embedding_clamp: float | None = None,
        check_finite_loss: bool = True,
        diagnostics: LearningDiagnostics | None = LearningDiagnostics(),
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
            diagnostics=diagnostics,
        )
        template = _template_kwargs(criterion, train_mb_size, train_epochs, eval_mb_size, device, evaluator,
                                    eval_every, kwargs)
        self._setup(model, optimizer, plugin, plugins, template)


class AdaHAT(_HATFamilyStrategy):
    """AdaHAT (Wang et al. 2024). See :class:`AdaHATPlugin` for the algorithm's arguments;
    the rest are ``SupervisedTemplate``'s."""

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
        diagnostics: LearningDiagnostics | None = LearningDiagnostics(),
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
            diagnostics=diagnostics,
        )
        template = _template_kwargs(criterion, train_mb_size, train_epochs, eval_mb_size, device, evaluator,
                                    eval_every, kwargs)
        self._setup(model, optimizer, plugin, plugins, template)


class FGAdaHAT(_HATFamilyStrategy):
    """FG-AdaHAT (CLArena ``FGAdaHAT``). See :class:`FGAdaHATPlugin` for the algorithm's
    arguments (CLArena's names; defaults of its HEAD paper configs, ICU importance); the
    rest are ``SupervisedTemplate``'s."""

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
        adjustment_intensity: float = 1.5e-7,
        importance_type: str = "input_weight_abs_sum_x_activation_abs",
        importance_summing_strategy: str = "add_all",
        importance_scheduler_type: str = "linear_sparsity_reg",
        neuron_to_weight_importance_aggregation_mode: str = "min",
        s_max: float = 400.0,
        clamp_threshold: float = 50.0,
        mask_sparsity_reg_factor: float = 0.1,
        mask_sparsity_reg_mode: str = "original",
        base_importance: float = 1e-8,
        base_mask_sparsity_reg: float = 0.1,
        base_linear: float = 5.0,
        filter_by_cumulative_mask: bool = False,
        filter_unmasked_importance: bool = False,
        step_multiply_training_mask: bool = True,
        task_embedding_init_mode: str = "N01",
        importance_summing_strategy_linear_step: float | None = None,
        importance_summing_strategy_exponential_rate: float | None = None,
        importance_summing_strategy_log_base: float | None = None,
        embedding_clamp: float | None = None,
        check_finite_loss: bool = True,
        diagnostics: LearningDiagnostics | None = LearningDiagnostics(),
        **kwargs: Any,
    ) -> None:
        plugin = FGAdaHATPlugin(
            adjustment_intensity=adjustment_intensity,
            importance_type=importance_type,
            importance_summing_strategy=importance_summing_strategy,
            importance_scheduler_type=importance_scheduler_type,
            neuron_to_weight_importance_aggregation_mode=neuron_to_weight_importance_aggregation_mode,
            s_max=s_max,
            clamp_threshold=clamp_threshold,
            mask_sparsity_reg_factor=mask_sparsity_reg_factor,
            mask_sparsity_reg_mode=mask_sparsity_reg_mode,
            base_importance=base_importance,
            base_mask_sparsity_reg=base_mask_sparsity_reg,
            base_linear=base_linear,
            filter_by_cumulative_mask=filter_by_cumulative_mask,
            filter_unmasked_importance=filter_unmasked_importance,
            step_multiply_training_mask=step_multiply_training_mask,
            task_embedding_init_mode=task_embedding_init_mode,
            importance_summing_strategy_linear_step=importance_summing_strategy_linear_step,
            importance_summing_strategy_exponential_rate=importance_summing_strategy_exponential_rate,
            importance_summing_strategy_log_base=importance_summing_strategy_log_base,
            embedding_clamp=embedding_clamp,
            check_finite_loss=check_finite_loss,
            diagnostics=diagnostics,
        )
        template = _template_kwargs(criterion, train_mb_size, train_epochs, eval_mb_size, device, evaluator,
                                    eval_every, kwargs)
        self._setup(model, optimizer, plugin, plugins, template)

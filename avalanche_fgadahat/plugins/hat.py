"""HATPlugin: Hard Attention to the Task on Avalanche's plugin callbacks.

Serrà et al., "Overcoming catastrophic forgetting with hard attention to the task",
ICML 2018. The plugin only wires callbacks; the work lives in one module per concept:
the settings (:mod:`avalanche_fgadahat.config`), the gate and its compensation
(``masking.gate``), the regulariser (``masking.regularizer``), the adjustment rule and the
rate engine (``adjustment/``), the step's state (``models.training_step``), input checks
(``plugins.checks``), rollback (``rollback.py``), diagnostics (``diagnostics.py``).

Callback → work:

* ``before_train_dataset_adaptation``: check model, task label (the HAT task: ``TaskAssignment``)
  and optimizer before Avalanche adapts model or optimizer (a refused experience changes nothing).
* ``before_training_exp``: check that the optimizer holds every masked parameter; snapshot
  the model; reset the optimizer state; re-initialise the task embeddings; open the model's
  :class:`~avalanche_fgadahat.models.training_step.TrainingStep`; broadcast the rule's
  measure once (:class:`~avalanche_fgadahat.adjustment.RateEngine`).
* ``before_forward``: set the annealed gate scale ``s`` (Eq. 3, 1-based batch index) and whether the
  step runs H16's subnormal guards (``subnormal_guards`` for the model's device, H16a).
* ``before_backward``: refuse a non-finite loss (rolled back); add the regulariser (Eq. 5) to ``strategy.loss``.
* ``after_backward``: flush gradients below ``1e-16`` to 0 (H16, guards on); multiply masked-layer
  gradients by the rule's rates (Eq. 2 for ``hat``); compensate the embedding gradients (Eq. 4)
  (``adjustment/gradient_step.py``: eager, or one compiled kernel with ``fused_step=True``).
* ``after_update``: optionally clamp the embeddings to ``±embedding_clamp``.
* ``after_training_exp``: store the binary mask ``1[e > 0]``; update ``M`` and ``S``; the
  ``mahalanobis`` task inference's feature statistics of the task (one pass over its data).

All HAT state lives in the model (:class:`~avalanche_fgadahat.models.HATBackbone`); the plugin holds
the settings, the experience's phase and per-experience tensors derived from it.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from avalanche.core import SupervisedPlugin

from ..adjustment import RateEngine, StepSignals, build_rule
from ..adjustment.gradient_step import adjust_step_gradients_
from ..config import HATConfig
from ..diagnostics import ExperienceReport, HATDiagnosticWarning, LearningDiagnostics, diagnose, snapshot_cumulative
from ..masking.gate import annealed_scale
from ..masking.regularizer import MaskSparsityRegularizer
from ..masking.subnormals import guards_apply
from ..models.base import HATBackbone
from ..rollback import ModelSnapshot
from ..models.conversion import to_hat
from .task_assignment import TaskAssignment
from .checks import (HATFamilyPlugin, check_no_task_mixing, check_optimizer, check_single_task_data,
                     find_hat_plugins, is_finite_loss, mixed_batch_message, two_plugins_message, unwrap_hat_model)
from .lifecycle import ExperiencePhase, user_stacklevel
from .migration import migrate_plugin_state
from .optimizer_state import seed_frozen_second_moments_
from .settings import ConfiguredSettings, build_config, settings_signature


class HATPlugin(HATFamilyPlugin, ConfiguredSettings, SupervisedPlugin):
    """HAT on any Avalanche ``SupervisedTemplate`` (e.g. ``Naive(plugins=[HATPlugin()])``).

    Built from a :class:`~avalanche_fgadahat.config.HATConfig` or from its settings as keywords
    (``HATPlugin(adjustment_mode="hat", s_max=400.0)``); every setting, its accepted values and
    default are documented there. Settings are readable as attributes.

    :raises TypeError: an unknown setting, or a config of another method.
    :raises ValueError: a setting outside its accepted values (the message names it).
    """

    #: the settings class of this method
    config_class: type[HATConfig] = HATConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__ or "config_class" in cls.__dict__:
            cls.__signature__ = settings_signature(cls.config_class)
        else:
            cls.__signature__ = None  # a user's subclass with its own __init__ shows that one
        cls.ADJUSTMENT_MODES = cls.config_class.ADJUSTMENT_MODES

    def __init__(self, config: HATConfig | None = None, **settings: Any) -> None:
        super().__init__()
        self.config = build_config(type(self).config_class, config, settings, type(self).__name__)
        self.rule = build_rule(self.config)
        self.engine = RateEngine(self.rule)
        self.signals = StepSignals()
        self.last_report: ExperienceReport | None = None
        self._pending_warnings: list[str] = []
        #: plain templates: warn in ``after_training``; the HAT-family strategies set it False
        #: and warn once ``train()`` has returned (after every plugin and Avalanche's clean-up)
        self.warn_in_after_training = True
        self.phase = ExperiencePhase.IDLE
        self.task: int | None = None
        self.gate_scale: float | None = None
        self._num_batches = 1
        self._regularizer: MaskSparsityRegularizer | None = None
        self._experience_start: ModelSnapshot | None = None
        self._start_embeddings, self._previous_cumulative = None, {}
        self.assignment = TaskAssignment(self.config.task_inference)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Load a plugin pickled by an earlier version (an Avalanche checkpoint)."""
        self.__dict__.update(migrate_plugin_state(type(self), state))
        self.__dict__.setdefault("assignment", TaskAssignment(self.config.task_inference))

    # ------------------------------------------------------------------ checks
    def _check_experience(self, strategy) -> tuple[HATBackbone, int]:
        model = unwrap_hat_model(strategy.model)
        task = self.assignment.task_of(strategy.experience, model)
        if model.is_trained(task):
            raise ValueError(
                f"task {task} was already trained and its mask stored; HAT cannot retrain a "
                "task: give each experience a new task label"
            )
        return model, task

    # ------------------------------------------------------------------ train() boundaries
    def before_training(self, strategy, **kwargs) -> None:
        """Refuse a second HAT-family plugin; undo an experience a plain template left
        half-trained (an error raised outside this plugin's callbacks), before anything trains."""
        found = find_hat_plugins(strategy.plugins)
        if len(found) > 1:
            raise ValueError(two_plugins_message(found))
        self._convert_model(strategy)
        check_no_task_mixing(strategy)
        self._pending_warnings = []  # of a train() call that stopped with an error (kept in the reports)
        if self.phase is ExperiencePhase.FINISHING:
            warnings.warn(
                f"the previous strategy.train() stopped with an error after task {self.task}'s mask was "
                "stored (in an after_training_exp callback): the task is kept, but Avalanche's clock did not "
                "count that experience, so a checkpoint saved from now on resumes one experience early",
                RuntimeWarning, stacklevel=2)
        if self.phase is ExperiencePhase.TRAINING:
            task = self.task
            self.rollback_experience(strategy)
            warnings.warn(
                f"the previous strategy.train() stopped with an error inside task {task}'s "
                "experience; it was rolled back (model as at the start of that experience, "
                "task not stored) before this train() call",
                RuntimeWarning, stacklevel=2)
        self.phase = ExperiencePhase.IDLE

    def after_training(self, strategy, **kwargs) -> None:
        """End of ``train()``: the last experience is counted by Avalanche's clock, so the
        phase returns to ``IDLE`` (a checkpoint may be saved); then the diagnostic warnings
        of the experiences just trained are issued (after every state change, so a warning
        turned into an error leaves a consistent strategy)."""
        if self.phase is ExperiencePhase.FINISHING:
            self.phase = ExperiencePhase.IDLE
        pending, self._pending_warnings = self._pending_warnings, []
        if self.warn_in_after_training:
            self.flush_warnings(pending)
        else:
            self._pending_warnings = pending

    def flush_warnings(self, pending: list[str] | None = None) -> None:
        """Issue the learning-diagnostic warnings not issued yet (``HATDiagnosticWarning``)."""
        pending, self._pending_warnings = (self._pending_warnings if pending is None else pending), []
        for message in pending:
            warnings.warn(message, HATDiagnosticWarning, stacklevel=user_stacklevel())

    def before_eval(self, strategy, **kwargs) -> None:
        """Convert a plain network; refuse a wrapped model (``DataParallel``,
        ``torch.compile``) before it is called without task labels."""
        self._convert_model(strategy)

    def before_eval_exp(self, strategy, **kwargs) -> None:
        """With task inference, warn once per stream label that the evaluation's labels are ignored."""
        self.assignment.check_evaluation(strategy.experience)

    def hat_network(self, model) -> HATBackbone:
        """``model``'s HAT network (``to_hat``, same parameters; one head per task with ``task_inference``)."""
        return to_hat(model, task_incremental_heads=self.config.task_inference is not None)

    def _convert_model(self, strategy) -> None:
        """``strategy.model`` becomes :meth:`hat_network` (embeddings join the optimizer as new heads do)."""
        strategy.model = self.hat_network(strategy.model)
        unwrap_hat_model(strategy.model).set_task_inference(self.config.task_inference)

    # ------------------------------------------------------------------ per experience
    def before_train_dataset_adaptation(self, strategy, **kwargs) -> None:
        """Refuse a bad experience/optimizer before Avalanche adapts model and optimizer."""
        self.phase = ExperiencePhase.IDLE
        model, _ = self._check_experience(strategy)
        check_optimizer(strategy.optimizer, strategy.model, model, require_all=False)

    def after_train_dataset_adaptation(self, strategy, **kwargs) -> None:
        """Refuse training data of other tasks (Cumulative, JointTraining) before the model
        or the optimizer is adapted."""
        check_single_task_data(strategy, self.assignment.label_of(strategy.experience))

    def before_training_exp(self, strategy, **kwargs) -> None:
        """Start of an experience (after Avalanche's model and optimizer adaptation): check the
        optimizer holds every masked parameter, snapshot the model for rollback, clear the
        optimizer state, draw the new task's embeddings (``task_embedding_init_mode``), open
        the model's training step, fold ``M`` into the regulariser and broadcast the rule's
        measure once."""
        model, task = self._check_experience(strategy)
        check_optimizer(strategy.optimizer, strategy.model, model)
        self._experience_start = ModelSnapshot(strategy.model)
        self.phase = ExperiencePhase.TRAINING
        strategy.optimizer.state.clear()
        model.initialize_task_embeddings(self.config.task_embedding_init_mode)
        self._start_embeddings = model.task_embeddings.detach().clone()
        self._previous_cumulative = snapshot_cumulative(model)
        model.begin_training(task, record_activations=self._records_activations())
        self.task = task
        self.assignment.record(strategy.experience, task)  # known from now on (periodic evaluations)
        self._regularizer = MaskSparsityRegularizer(model.cumulative_masks(), self.config.mask_sparsity_reg_factor,
                                                    self.config.mask_sparsity_reg_mode)
        self.engine.prepare(model)
        frozen = self.engine.frozen_rates()
        if frozen:  # frozen weights: Adam's v seeded (same updates, faster CPU sqrt)
            seed_frozen_second_moments_(strategy.optimizer, frozen)

    def _records_activations(self) -> bool:
        """Whether the training forward must record activations (FG-AdaHAT's importances)."""
        return False

    def after_training_exp(self, strategy, **kwargs) -> None:
        """End of an experience: store ``1[e > 0]`` as the task's mask, update ``M`` and ``S`` (HAT
        Sec. 2.1), the subclass's end-of-task work, close the training step, task statistics, then
        the :class:`~avalanche_fgadahat.diagnostics.ExperienceReport` (``last_report``; warned after ``train()``)."""
        model = unwrap_hat_model(strategy.model)
        model.commit_task(self.task)
        self._finish_experience(strategy, model)
        model.end_training()
        model.store_task_statistics(strategy.experience.dataset, self.task, strategy.eval_mb_size, strategy.device)
        self._experience_start = None
        self.phase = ExperiencePhase.FINISHING
        self.last_report = diagnose(model, self.task, self._start_embeddings, self._previous_cumulative,
                                    self.config.diagnostics, hard_freeze=self.config.adjustment_mode == "hat")
        self._pending_warnings.extend(self.last_report.warnings)
        self._start_embeddings, self._previous_cumulative = None, {}

    def _finish_experience(self, strategy, model: HATBackbone) -> None:
        """Extra end-of-experience work of subclasses (runs after the mask is stored)."""

    def rollback_experience(self, strategy) -> bool:
        """Undo the experience being trained after an error; ``True`` if there was one.

        Every parameter and buffer of the model (weights, heads, embeddings, HAT-family
        buffers) gets back its value at the start of the experience (after Avalanche's
        model adaptation, which is kept: e.g. the new task's head exists, untrained); the
        optimizer state is cleared; the task is not stored; the phase becomes
        ``ROLLED_BACK``. Train the experience again once the cause is fixed. The HAT-family
        strategies call this on any error raised while training an experience; with a plain
        ``SupervisedTemplate`` the plugin calls it itself on a non-finite loss.
        """
        if self.phase is not ExperiencePhase.TRAINING:
            return False
        snapshot, self._experience_start = self._experience_start, None
        self.phase = ExperiencePhase.ROLLED_BACK
        model = unwrap_hat_model(strategy.model)
        snapshot.restore_(strategy.model)
        strategy.optimizer.state.clear()
        model.end_training()
        self.assignment.forget(self.task)
        self.task = None
        return True

    # ------------------------------------------------------------------ per step
    @property
    def layer_sparsity(self) -> dict[str, torch.Tensor]:
        """``{layer: R_l}`` of the current step (the regulariser's per-layer values, detached;
        computed on the first read, so HAT's own rules, which never read it, do not pay)."""
        return self.signals.layer_sparsity

    @layer_sparsity.setter
    def layer_sparsity(self, value: dict[str, torch.Tensor]) -> None:  # noqa: D102
        self.signals = StepSignals(layer_sparsity=value)

    def before_training_epoch(self, strategy, **kwargs) -> None:
        """Count the epoch's mini-batches ``B`` (annealing, HAT Eq. 3); list the gradients to flush anew."""
        self._num_batches = len(strategy.dataloader)
        self.engine.relist_parameters()

    def before_forward(self, strategy, **kwargs) -> None:
        """Refuse a mini-batch holding other tasks (rolled back, ``ValueError`` naming the
        cause); set the annealed gate scale ``s = 1/s_max + (s_max − 1/s_max)(b − 1)/(B − 1)``
        for the 1-based batch index ``b`` (HAT Eq. 3)."""
        model = unwrap_hat_model(strategy.model)
        labels = strategy.mb_task_id
        expected = self.task if self.config.task_inference is None else self.assignment.stream_label
        if isinstance(labels, torch.Tensor) and bool((labels != expected).any()):
            found, task = sorted(set(labels.tolist())), self.task
            iteration = strategy.clock.train_epoch_iterations
            self.rollback_experience(strategy)
            raise ValueError(mixed_batch_message(strategy, task, found, iteration)
                             + "; the experience was rolled back")
        batch = strategy.clock.train_epoch_iterations + 1
        self.gate_scale = annealed_scale(min(batch, self._num_batches), self._num_batches, self.config.s_max)
        step = model.training_step
        step.clear_outputs()
        step.gate_scale = self.gate_scale
        step.subnormal_guards = guards_apply(self.config.subnormal_guards, model.task_embeddings.device)

    def before_backward(self, strategy, **kwargs) -> None:
        """Refuse a non-finite loss before it reaches a weight (rolled back,
        ``FloatingPointError``); add the mask-sparsity regulariser (HAT Eq. 5) to the loss."""
        model = unwrap_hat_model(strategy.model)
        if self.config.check_finite_loss and not is_finite_loss(strategy.loss):
            loss, task = strategy.loss.detach().flatten().tolist(), self.task
            self.rollback_experience(strategy)
            raise FloatingPointError(
                f"training loss is {loss} at iteration {strategy.clock.train_epoch_iterations} "
                f"of task {task}: the experience was rolled back (every parameter and buffer "
                "of the model is as at its start, the task is not stored, the optimizer state "
                "is cleared). Lower the learning rate or check the inputs for NaN/inf, then "
                "train the experience again"
            )
        self.engine.new_step()
        flat_mask = model.training_step.mask_flat
        if flat_mask is None:
            raise RuntimeError(
                f"the forward pass of this training step did not use task {self.task}'s soft mask: "
                "the model was not in training mode (a plugin called model.eval() during training, "
                "e.g. RWalkPlugin) or was called without the task's label. HAT needs the step's "
                "forward in training mode to learn its mask; remove that plugin"
            )
        self.signals = StepSignals(self._regularizer, flat_mask.detach())
        strategy.loss = strategy.loss + self._regularizer(flat_mask)

    def after_backward(self, strategy, **kwargs) -> None:
        """Flush every gradient but the embeddings' below ``GRADIENT_FLOOR`` (deviation H16), apply the
        rates (HAT Eq. 2, AdaHAT Eq. 8, FG-AdaHAT Eq. 3), compensate the embedding gradients (Eq. 4);
        one compiled kernel with ``fused_step=True`` (``adjustment/gradient_step.py``)."""
        config, model = self.config, unwrap_hat_model(strategy.model)
        adjust_step_gradients_(model, self.engine, self.signals, self.gate_scale, config.s_max, config.clamp_threshold,
                               config.fused_step, model.training_step.subnormal_guards)

    def after_update(self, strategy, **kwargs) -> None:
        """Clamp the embeddings to ``±embedding_clamp`` when set (the original HAT code's 6)."""
        clamp = self.config.embedding_clamp
        if clamp is not None:
            with torch.no_grad():
                unwrap_hat_model(strategy.model).task_embeddings.clamp_(-clamp, clamp)

    # ------------------------------------------------------------------ metrics
    def network_capacity(self) -> float:
        """Mean adjustment rate over every masked-layer parameter (existing biases only): AdaHAT's network capacity
        (Wang et al. 2024, Sec. 4.3; under ``hat``, the share still free). Per-step rules use the last step's
        ``R_l`` (``hat_random``: one draw); 1.0 before the first experience."""
        return self.engine.capacity(self.signals)


HATPlugin.__signature__ = settings_signature(HATConfig)
HATPlugin.ADJUSTMENT_MODES = HATConfig.ADJUSTMENT_MODES

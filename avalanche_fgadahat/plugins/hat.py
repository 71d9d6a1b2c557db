"""HATPlugin: Hard Attention to the Task on Avalanche's plugin callbacks.

Serrà et al., "Overcoming catastrophic forgetting with hard attention to the task",
ICML 2018. Callback → work:

* ``before_train_dataset_adaptation``: check model, task label and optimizer before
  Avalanche adapts the model or the optimizer (a refused experience changes nothing).
* ``before_training_exp``: check that the optimizer holds every masked parameter; snapshot
  the model (``rollback.py``); reset the optimizer state (fresh Adam/momentum state cannot
  move frozen weights); re-initialise the task embeddings; broadcast the per-unit
  measures to per-parameter tensors once.
* ``before_forward``: set the annealed gate scale ``s`` (Eq. 3, 1-based batch index).
* ``before_backward``: add the mask-sparsity regulariser (Eq. 5) to ``strategy.loss``;
  refuse a non-finite loss before it can reach a frozen weight, rolling the model back
  to the start of the experience (:meth:`HATPlugin.rollback_experience`).
* ``after_backward``: multiply masked-layer gradients by the adjustment rate (Eq. 2 for
  ``hat``: ``1 − min(M_l[i], M_{l−1}[j])``, biases ``1 − M_l[i]``); compensate the
  embedding gradients (Eq. 4).
* ``after_update``: optionally clamp the embeddings to ``±embedding_clamp``.
* ``after_training_exp``: store the binary mask ``1[e > 0]``; update ``M`` and ``S``.

All state lives in the model (:class:`~avalanche_fgadahat.models.HATBackbone`); the
plugin only caches per-experience tensors derived from it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from avalanche.core import SupervisedPlugin

from .._validation import check_choice, check_number
from ..masking.broadcast import AGGREGATIONS, broadcast
from ..masking.gate import annealed_scale, compensate_embedding_gradient_
from ..masking.regularizer import MASK_SPARSITY_REG_MODES, MaskSparsityRegularizer
from ..models.base import TASK_EMBEDDING_INITIALIZERS, HATBackbone
from ..rollback import ModelSnapshot
from .lifecycle import ExperiencePhase, user_stacklevel
from .checks import (
    check_no_task_mixing,
    check_optimizer,
    check_single_task_data,
    experience_task,
    find_hat_plugins,
    mixed_batch_message,
    two_plugins_message,
    unwrap_hat_model,
)
from .diagnostics import (
    ExperienceReport,
    HATDiagnosticWarning,
    LearningDiagnostics,
    diagnose,
    snapshot_cumulative,
)
from .optimizer_state import seed_frozen_second_moments_
from .rules import RateRule


def _hat(plugin: "HATPlugin", measure: torch.Tensor, key: str) -> torch.Tensor:
    return 1.0 - measure


def _hat_random(plugin: "HATPlugin", measure: torch.Tensor, key: str) -> torch.Tensor:
    return 1.0 - measure * (1.0 - torch.rand_like(measure))


def _hat_const_alpha(plugin: "HATPlugin", measure: torch.Tensor, key: str) -> torch.Tensor:
    return 1.0 - measure * (1.0 - plugin.alpha)


def _groups_up_to_largest(sizes: list[int]) -> list[list[int]]:
    """Consecutive index groups whose total size stays within the largest single size.

    Per-step rates are computed a group at a time with ``torch._foreach_*`` ops, so the
    temporaries of a step never exceed one rate tensor of the largest parameter.
    """
    limit, groups, total = max(sizes, default=0), [], 0
    for index, size in enumerate(sizes):
        if not groups or total + size > limit:
            groups.append([])
            total = 0
        groups[-1].append(index)
        total += size
    return groups


class HATPlugin(SupervisedPlugin):
    """HAT on any Avalanche ``SupervisedTemplate`` (e.g. ``Naive(plugins=[HATPlugin()])``).

    :param adjustment_mode: ``hat`` (rate ``1 − P``), ``hat_random`` (``U(0,1)·P + 1 − P``,
        fresh noise every step), ``hat_const_alpha`` (``α·P + 1 − P``), ``hat_const_1``
        (rate 1: no protection), with ``P = min(M_l[i], M_{l−1}[j])``.
    :param s_max: the largest gate scale (> 0).
    :param clamp_threshold: θ of the compensation's ``clamp(s·e, −θ, θ)`` (> 0).
    :param mask_sparsity_reg_factor: the regulariser's factor c (≥ 0).
    :param mask_sparsity_reg_mode: ``original`` or ``cross`` (see ``masking.regularizer``).
    :param task_embedding_init_mode: ``N01``, ``U-11``, ``U01``, ``U-10`` or ``last``.
    :param alpha: α of ``hat_const_alpha`` (in [0, 1]).
    :param embedding_clamp: clamp the embeddings to ``±embedding_clamp`` after every step,
        as the original HAT code does with 6; ``None`` (default, as CLArena) disables it.
    :param check_finite_loss: raise ``FloatingPointError`` on a NaN/inf loss before the
        backward pass (costs one host sync per step on GPUs).
    :param diagnostics: thresholds of the end-of-experience checks that warn
        (:class:`~.diagnostics.HATDiagnosticWarning`, issued at the end of ``train()``)
        when a task barely learned, its mask is empty or the network is nearly full
        (:class:`~.diagnostics.LearningDiagnostics`); ``None`` turns the checks off (the
        report's numbers are still computed, ``last_report``).
    """

    ADJUSTMENT_MODES: Mapping[str, RateRule] = {
        "hat": RateRule("cumulative", _hat),
        "hat_random": RateRule("cumulative", _hat_random, per_step=True),
        "hat_const_alpha": RateRule("cumulative", _hat_const_alpha),
        "hat_const_1": RateRule(None, None),
    }

    def __init__(
        self,
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
    ) -> None:
        super().__init__()
        self.adjustment_mode = check_choice("adjustment_mode", adjustment_mode, self.ADJUSTMENT_MODES)
        self.s_max = float(check_number("s_max", s_max, minimum=0.0, strict_minimum=True))
        self.clamp_threshold = float(
            check_number("clamp_threshold", clamp_threshold, minimum=0.0, strict_minimum=True)
        )
        self.mask_sparsity_reg_factor = float(
            check_number("mask_sparsity_reg_factor", mask_sparsity_reg_factor, minimum=0.0)
        )
        self.mask_sparsity_reg_mode = check_choice(
            "mask_sparsity_reg_mode", mask_sparsity_reg_mode, MASK_SPARSITY_REG_MODES
        )
        self.task_embedding_init_mode = check_choice(
            "task_embedding_init_mode", task_embedding_init_mode, TASK_EMBEDDING_INITIALIZERS
        )
        self.alpha = float(check_number("alpha", alpha, minimum=0.0, maximum=1.0))
        if embedding_clamp is not None:
            check_number("embedding_clamp", embedding_clamp, minimum=0.0, strict_minimum=True)
        self.embedding_clamp = embedding_clamp
        self.check_finite_loss = bool(check_finite_loss)
        if diagnostics is not None and not isinstance(diagnostics, LearningDiagnostics):
            raise ValueError(
                f"diagnostics must be a LearningDiagnostics or None, got {diagnostics!r}"
            )
        self.diagnostics = diagnostics
        self.last_report: ExperienceReport | None = None
        self._pending_warnings: list[str] = []
        #: plain templates: warn in ``after_training``; the HAT-family strategies set it False
        #: and warn once ``train()`` has returned (after every plugin and Avalanche's clean-up)
        self.warn_in_after_training = True
        self.phase = ExperiencePhase.IDLE
        self._start_embeddings: torch.Tensor | None = None
        self._previous_cumulative: dict[str, torch.Tensor] = {}
        self.task: int | None = None
        self.gate_scale: float | None = None
        self._sparsity_pending: torch.Tensor | None = None
        self.layer_sparsity = {}
        self._num_batches = 1
        self._entries: list[tuple[torch.nn.Parameter, torch.Tensor, str]] = []
        self._constant_rates: list[torch.Tensor] | None = None
        self._rate_groups: list[list[int]] = []
        self._constant_capacity: float | None = None
        self._step_capacity: float | None = None
        self._experience_start: ModelSnapshot | None = None

    # ------------------------------------------------------------------ hooks for subclasses
    @property
    def rule(self) -> RateRule:
        """The :class:`RateRule` of ``adjustment_mode`` (see :data:`ADJUSTMENT_MODES`)."""
        return self.ADJUSTMENT_MODES[self.adjustment_mode]

    @property
    def aggregation(self) -> str:
        """Neuron→parameter aggregation of the rule's measure (HAT/AdaHAT: ``min``)."""
        return "min"

    def unit_measure(self, model: HATBackbone, name: str) -> dict[str, torch.Tensor]:
        """The per-unit measure ``name`` of a :class:`RateRule`."""
        if name == "cumulative":
            return model.cumulative_masks()
        if name == "summative":
            return model.summative_masks()
        raise ValueError(f"unknown unit measure {name!r}")

    # ------------------------------------------------------------------ checks
    def _check_experience(self, strategy) -> tuple[HATBackbone, int]:
        model = unwrap_hat_model(strategy.model)
        task = experience_task(strategy.experience)
        if model.is_trained(task):
            raise ValueError(
                f"task {task} was already trained and its mask stored; HAT cannot retrain a "
                "task: give each experience a new task label"
            )
        return model, task

    def _check_optimizer(self, strategy, model: HATBackbone, require_all: bool = True) -> None:
        check_optimizer(strategy.optimizer, strategy.model, model, require_all=require_all)

    # ------------------------------------------------------------------ per experience
    def before_training(self, strategy, **kwargs) -> None:
        """Refuse a second HAT-family plugin; undo an experience a plain template left
        half-trained (an error raised outside this plugin's callbacks), before anything trains."""
        found = find_hat_plugins(strategy.plugins)
        if len(found) > 1:
            raise ValueError(two_plugins_message(found))
        unwrap_hat_model(strategy.model)
        check_no_task_mixing(strategy)
        self._pending_warnings = []  # of a train() call that stopped with an error (kept in the reports)
        if self.phase is ExperiencePhase.TRAINING:
            task = self.task
            self.rollback_experience(strategy)
            warnings.warn(
                f"the previous strategy.train() stopped with an error inside task {task}'s "
                "experience; it was rolled back (model as at the start of that experience, "
                "task not stored) before this train() call",
                RuntimeWarning,
                stacklevel=2,
            )
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
        """Refuse a wrapped model (``DataParallel``, ``torch.compile``) before it is called
        without task labels."""
        unwrap_hat_model(strategy.model)

    def before_train_dataset_adaptation(self, strategy, **kwargs) -> None:
        """Refuse a bad experience/optimizer before Avalanche adapts model and optimizer."""
        self.phase = ExperiencePhase.IDLE
        model, _ = self._check_experience(strategy)
        self._check_optimizer(strategy, model, require_all=False)

    def after_train_dataset_adaptation(self, strategy, **kwargs) -> None:
        """Refuse training data of other tasks (Cumulative, JointTraining) before the model
        or the optimizer is adapted."""
        check_single_task_data(strategy, experience_task(strategy.experience))

    def before_training_exp(self, strategy, **kwargs) -> None:
        """Start of an experience (after Avalanche's model and optimizer adaptation): check the
        optimizer holds every masked parameter, snapshot the model for rollback, clear the
        optimizer state, draw the new task's embeddings (``task_embedding_init_mode``),
        fold ``M`` into the regulariser and broadcast the rule's measure once."""
        model, task = self._check_experience(strategy)
        self._check_optimizer(strategy, model)
        self._experience_start = ModelSnapshot(strategy.model)
        self.phase = ExperiencePhase.TRAINING
        strategy.optimizer.state.clear()
        model.initialize_task_embeddings(self.task_embedding_init_mode)
        self._start_embeddings = model.task_embeddings.detach().clone()
        self._previous_cumulative = snapshot_cumulative(model)
        model.current_train_task = task
        self.task = task
        self._regularizer = MaskSparsityRegularizer(
            model.cumulative_masks(), self.mask_sparsity_reg_factor, self.mask_sparsity_reg_mode
        )
        self._prepare_rates(model)
        if self._constant_rates is not None:  # frozen weights: Adam's v seeded (same updates, faster CPU sqrt)
            seed_frozen_second_moments_(
                strategy.optimizer, [(param, rate) for (param, _, _), rate in zip(self._entries, self._constant_rates)]
            )

    def _prepare_rates(self, model: HATBackbone) -> None:
        """Broadcast the rule's measure once; evaluate constant rates once."""
        rule = self.rule
        self._entries = []
        self._constant_rates = None
        self._constant_capacity = None
        self._step_capacity = None
        if rule.measure is None:
            self._constant_capacity = 1.0
            return
        unit = self.unit_measure(model, rule.measure)
        for layout in model.param_layouts:
            weight_measure, bias_measure = broadcast(layout, unit, self.aggregation)
            self._entries.append((layout.weight, weight_measure.contiguous(), layout.out_key))
            if bias_measure is not None:
                self._entries.append((layout.bias, bias_measure, layout.out_key))
        self._rate_groups = _groups_up_to_largest([m.numel() for _, m, _ in self._entries])
        if not rule.per_step:
            self._constant_rates = [rule.rate(self, m, k) for _, m, k in self._entries]
            self._constant_capacity = self._mean_rate(self._constant_rates)

    @staticmethod
    def _mean_rate(rates: list[torch.Tensor]) -> float:
        """Mean over every element of ``rates`` (one host synchronisation)."""
        count = sum(r.numel() for r in rates)
        if count == 0:
            return 1.0
        total = torch.stack([r.sum(dtype=torch.float32) for r in rates]).sum()
        return float(total) / count

    def after_training_exp(self, strategy, **kwargs) -> None:
        """End of an experience: store ``1[e > 0]`` as the task's mask and update ``M`` and
        ``S`` (HAT Sec. 2.1), run the subclass's end-of-task work, then compute the
        :class:`~.diagnostics.ExperienceReport` (``last_report``; its warnings are issued at the
        end of ``train()``)."""
        model = unwrap_hat_model(strategy.model)
        model.commit_task(self.task)
        self._finish_experience(strategy, model)
        self._clear_training_state(model)
        self._experience_start = None
        self.phase = ExperiencePhase.FINISHING
        self.last_report = self._diagnose(model)

    def _diagnose(self, model: HATBackbone) -> ExperienceReport:
        """The end-of-experience :class:`ExperienceReport`. Its warnings (none with
        ``diagnostics=None``) are issued at the end of ``train()`` (:meth:`after_training`)."""
        report = diagnose(model, self.task, self._start_embeddings, self._previous_cumulative,
                          self.diagnostics, hard_freeze=self.adjustment_mode == "hat")
        self._pending_warnings.extend(report.warnings)
        self._start_embeddings, self._previous_cumulative = None, {}
        return report

    @staticmethod
    def _clear_training_state(model: HATBackbone) -> None:
        model.current_train_task = None
        model.gate_scale = None
        model.last_masks = {}
        model.last_mask_flat = None
        model.last_activations = {}

    def rollback_experience(self, strategy) -> bool:
        """Undo the experience being trained after an error; ``True`` if there was one.

        Every parameter and buffer of the model (weights, heads, embeddings, HAT-family
        buffers) gets back its value at the start of the experience (after Avalanche's
        model adaptation, which is kept: e.g. the new task's head exists, untrained); the
        optimizer state is cleared; the task is not stored. Train the experience again
        once the cause is fixed. The HAT-family strategies call this on any error raised
        while training an experience; with a plain ``SupervisedTemplate`` the plugin calls
        it itself on a non-finite loss.
        """
        snapshot, self._experience_start = self._experience_start, None
        self.phase = ExperiencePhase.IDLE
        if snapshot is None:
            return False
        model = unwrap_hat_model(strategy.model)
        snapshot.restore_(strategy.model)
        strategy.optimizer.state.clear()
        self._clear_training_state(model)
        model.record_activations = False
        self.task = None
        return True

    def _finish_experience(self, strategy, model: HATBackbone) -> None:
        """Extra end-of-experience work of subclasses (runs after the mask is stored)."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Load a plugin pickled by an earlier version (an Avalanche checkpoint): its
        ``layer_sparsity`` was a plain attribute and the per-step caches did not exist."""
        if "layer_sparsity" in state:
            state["_layer_sparsity"] = state.pop("layer_sparsity")
        state.setdefault("_sparsity_pending", None)
        state.setdefault("_layer_sparsity", {})
        state.setdefault("_rate_groups", [])
        state.setdefault("diagnostics", LearningDiagnostics())
        state.setdefault("last_report", None)
        state.setdefault("_pending_warnings", [])
        state.setdefault("warn_in_after_training", True)
        state.setdefault("_start_embeddings", None)
        state.setdefault("_previous_cumulative", {})
        state.setdefault(
            "phase", ExperiencePhase.IDLE if state.get("_experience_start") is None else ExperiencePhase.TRAINING
        )
        self.__dict__.update(state)

    # ------------------------------------------------------------------ per step
    @property
    def layer_sparsity(self) -> dict[str, torch.Tensor]:
        """``{layer: R_l}`` of the current step (the regulariser's per-layer values, detached).

        Computed on the first read after the step's regulariser (one matrix-vector product):
        HAT's own rules never read it, so HAT does not pay for it.
        """
        if self._sparsity_pending is not None:
            flat_mask, self._sparsity_pending = self._sparsity_pending, None
            self._layer_sparsity = self._regularizer.per_layer(self._regularizer.sparsity(flat_mask))
        return self._layer_sparsity

    @layer_sparsity.setter
    def layer_sparsity(self, value: dict[str, torch.Tensor]) -> None:
        self._sparsity_pending = None
        self._layer_sparsity = dict(value)

    def before_training_epoch(self, strategy, **kwargs) -> None:
        """Count the epoch's mini-batches ``B`` for the annealing schedule (HAT Eq. 3)."""
        self._num_batches = len(strategy.dataloader)

    def before_forward(self, strategy, **kwargs) -> None:
        """Refuse a mini-batch holding other tasks (rolled back, ``ValueError`` naming the
        cause); set the annealed gate scale ``s = 1/s_max + (s_max − 1/s_max)(b − 1)/(B − 1)``
        for the 1-based batch index ``b`` (HAT Eq. 3)."""
        model = unwrap_hat_model(strategy.model)
        labels = strategy.mb_task_id
        if isinstance(labels, torch.Tensor) and bool((labels != self.task).any()):
            found, task = sorted(set(labels.tolist())), self.task
            iteration = strategy.clock.train_epoch_iterations
            self.rollback_experience(strategy)
            raise ValueError(mixed_batch_message(strategy, task, found, iteration)
                             + "; the experience was rolled back")
        batch = strategy.clock.train_epoch_iterations + 1
        self.gate_scale = annealed_scale(min(batch, self._num_batches), self._num_batches, self.s_max)
        model.gate_scale = self.gate_scale

    def before_backward(self, strategy, **kwargs) -> None:
        """Refuse a non-finite loss before it reaches a weight (rolled back,
        ``FloatingPointError``); add the mask-sparsity regulariser (HAT Eq. 5) to the loss."""
        model = unwrap_hat_model(strategy.model)
        if self.check_finite_loss and not bool(torch.isfinite(strategy.loss).all()):
            loss, task = strategy.loss.detach().flatten().tolist(), self.task
            self.rollback_experience(strategy)
            raise FloatingPointError(
                f"training loss is {loss} at iteration {strategy.clock.train_epoch_iterations} "
                f"of task {task}: the experience was rolled back (every parameter and buffer "
                "of the model is as at its start, the task is not stored, the optimizer state "
                "is cleared). Lower the learning rate or check the inputs for NaN/inf, then "
                "train the experience again"
            )
        self._step_capacity = None
        if model.last_mask_flat is None:
            raise RuntimeError(
                f"the forward pass of this training step did not use task {self.task}'s soft mask: "
                "the model was not in training mode (a plugin called model.eval() during training, "
                "e.g. RWalkPlugin) or was called without the task's label. HAT needs the step's "
                "forward in training mode to learn its mask; remove that plugin"
            )
        self._sparsity_pending = model.last_mask_flat.detach()
        strategy.loss = strategy.loss + self._regularizer(model.last_mask_flat)

    def after_backward(self, strategy, **kwargs) -> None:
        """Multiply masked-layer gradients by the adjustment rates (HAT Eq. 2, AdaHAT Eq. 8,
        FG-AdaHAT Eq. 3) and compensate the embedding gradients (HAT Eq. 4)."""
        model = unwrap_hat_model(strategy.model)
        self.adjust_gradients_()
        compensate_embedding_gradient_(model.task_embeddings, self.gate_scale, self.s_max, self.clamp_threshold)

    def adjust_gradients_(self) -> None:
        """Multiply every masked-layer gradient by its adjustment rate, in place."""
        if self._constant_rates is not None:
            grads, rates = [], []
            for (param, _, _), rate in zip(self._entries, self._constant_rates):
                if param.grad is not None:
                    grads.append(param.grad)
                    rates.append(rate)
            if grads:
                torch._foreach_mul_(grads, rates)
            return
        rule = self.rule
        if rule.adjust_ is None:
            for param, measure, key in self._entries:
                if param.grad is not None:
                    param.grad.mul_(rule.rate(self, measure, key))
            return
        for group in self._rate_groups:
            live = [self._entries[i] for i in group if self._entries[i][0].grad is not None]
            if live:
                rule.adjust_(self, [p.grad for p, _, _ in live], [m for _, m, _ in live], [k for _, _, k in live])

    def after_update(self, strategy, **kwargs) -> None:
        """Clamp the embeddings to ``±embedding_clamp`` when set (the original HAT code's 6)."""
        if self.embedding_clamp is not None:
            model = unwrap_hat_model(strategy.model)
            with torch.no_grad():
                model.task_embeddings.clamp_(-self.embedding_clamp, self.embedding_clamp)

    # ------------------------------------------------------------------ metrics
    def network_capacity(self) -> float:
        """Mean adjustment rate over every masked-layer parameter (existing biases only).

        AdaHAT's network capacity (Wang et al. 2024, Sec. 4.3): under ``hat`` it is the
        fraction of parameters still free. Per-step rules use the last step's batch state
        (``R_l``); their value is computed once per step, on the first call after the
        step's regulariser (``hat_random``: one fresh draw of its noise). 1.0 before the
        first experience (every parameter free).
        """
        if self._constant_capacity is not None:
            return self._constant_capacity
        if not self._entries:
            return 1.0
        if self._step_capacity is None:
            rule = self.rule
            with torch.no_grad():
                rates = [torch.as_tensor(rule.rate(self, m, k)).expand_as(m) for _, m, k in self._entries]
            self._step_capacity = self._mean_rate(rates)
        return self._step_capacity

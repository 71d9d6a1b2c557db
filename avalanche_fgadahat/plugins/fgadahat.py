"""FGAdaHATPlugin: fine-grained adaptive gradient adjustment driven by neuron importance.

FG-AdaHAT (Wang et al., CLArena ``FGAdaHAT``) keeps HAT's masks and AdaHAT's soft
adjustment but replaces AdaHAT's summative mask by a learnt per-unit importance:

* rate of a masked-layer parameter (Eq. (1)–(3)):
  ``a = α / (c_l · P + α)`` with ``P = Agg(I^{<t}_l[i], I^{<t}_{l−1}[j])`` (weights; the
  ``neuron_to_weight_importance_aggregation_mode`` ∈ min/max/mean of
  ``masking.broadcast``), ``I^{<t}_l[i]`` for biases and first-layer weights, optionally
  ``× min(M_l[i], M_{l−1}[j])`` (``filter_by_cumulative_mask``), and the scheduler's
  ``c_l = (R_l + b_R) · L`` (``importance/schedulers.py``). ``P·L`` is broadcast once per
  task; ``R_l`` (the current batch's mask sparsity) is read every step.
* importance accumulation, after every ``optimizer.step()`` (``after_update``, CLArena's
  ``on_train_batch_end``): raw ``u_l`` from the chosen importance type
  (``importance/registry.py``) → min-max normalised (``importance/normalize.py``) →
  ``× σ(s·e_l)`` (the step's soft training mask, detached) when
  ``step_multiply_training_mask`` → added in place to the model buffer
  ``importance_step_sum``; the model buffer ``importance_steps`` counts the steps.
* at the end of the task (after the mask is stored): ``I^t = mean over steps + b_I``,
  ``× 1[e^t > 0]`` when ``filter_unmasked_importance``, stored in ``task_importances[t]``;
  ``summed_importance`` ← the summing strategy (``importance/summing.py``) over the
  tasks' importances in training order; the accumulator and the counter are reset.

Everything lives in model buffers, so ``state_dict`` and Avalanche checkpoints carry it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .._validation import check_choice, check_flag, check_number
from ..importance import IMPORTANCE_SCHEDULERS, IMPORTANCE_TYPES, REFERENCE_IMPORTANCE_TYPES, SUMMING_STRATEGIES
from ..importance.normalize import min_max_normalize_all
from ..importance.registry import (
    ImportanceType,
    StepContext,
    find_importance_type,
    short_name_of,
    types_sharing_short_name,
)
from ..importance.summing import STRATEGY_PARAMETERS
from ..masking.broadcast import AGGREGATIONS, broadcast
from ..models.base import HATBackbone
from .adahat import AdaHATPlugin, adahat_adjust_, adahat_rate
from .diagnostics import LearningDiagnostics
from .checks import unwrap_hat_model
from .rules import RateRule


def _fgadahat_rate(plugin: "FGAdaHATPlugin", measure: torch.Tensor, key: str) -> torch.Tensor:
    """``α / ((R_l + b_R) · P·L + α)``; ``measure`` is the per-parameter ``P·L``.

    Equal to ``1 / (1 + P·L · (R_l + b_R) / α)``: AdaHAT's soft rate with ``ε = b_R`` and the
    importance in place of the summative mask, so both share :func:`adahat_rate` (and its
    list form :func:`adahat_adjust_`, used in the training step).
    """
    return adahat_rate(plugin, measure, key)


def resolve_importance_type(name: object) -> ImportanceType:
    """The registered importance type ``name`` (full name, or a short name such as ``icu``,
    ``ig``, ``gxa`` that names one type alone); ``ValueError`` listing the accepted ones."""
    found = find_importance_type(name)
    if found is not None:
        return found
    accepted = [n for n in REFERENCE_IMPORTANCE_TYPES if n in IMPORTANCE_TYPES]
    accepted += [n for n in IMPORTANCE_TYPES if n not in REFERENCE_IMPORTANCE_TYPES]
    shared = types_sharing_short_name(name) if isinstance(name, str) else []
    if shared:
        raise ValueError(
            f"importance_type={name!r} is the short name of several types ({', '.join(shared)}); "
            "use the full name"
        )
    if isinstance(name, str) and name in REFERENCE_IMPORTANCE_TYPES:
        raise ValueError(
            f"importance_type={name!r} is one of the reference's 23 types but is not available in "
            "this installation (its module, importance/attribution.py, is missing); available: "
            + ", ".join(repr(n) for n in accepted)
        )
    shorts = [short for short in (short_name_of(IMPORTANCE_TYPES[n]) for n in accepted) if short]
    raise ValueError(
        f"importance_type={name!r} is not supported; accepted values are: "
        + ", ".join(repr(n) for n in accepted)
        + "; or their short names (any case): "
        + ", ".join(shorts)
    )


class FGAdaHATPlugin(AdaHATPlugin):
    """FG-AdaHAT on any Avalanche ``SupervisedTemplate`` (see module doc).

    Arguments are CLArena's, with the defaults of its HEAD paper configs except
    ``importance_type`` (ICU here):

    :param adjustment_intensity: α (> 0).
    :param importance_type: a name of :data:`~avalanche_fgadahat.importance.IMPORTANCE_TYPES`
        (``docs/importance.md``) or its short name, any case (``icu``, ``ig``, ``gxa``, as the
        experiments CLI accepts); stored as the full name.
    :param importance_summing_strategy: a name of ``SUMMING_STRATEGIES``.
    :param importance_scheduler_type: ``linear_sparsity_reg``, ``sparsity_reg`` or
        ``summative_mask_sparsity_reg``.
    :param neuron_to_weight_importance_aggregation_mode: ``min``, ``max`` or ``mean``.
    :param base_importance: ``b_I`` (≥ 0), added to every finalised importance.
    :param base_mask_sparsity_reg: ``b_R`` (> 0); also AdaHAT's ε.
    :param base_linear: ``b_L`` (> 0).
    :param filter_by_cumulative_mask: multiply the parameter importance by the min-broadcast
        cumulative mask (importance only counts on parameters earlier tasks use).
    :param filter_unmasked_importance: zero ``I^t`` on units the task's binary mask drops.
    :param step_multiply_training_mask: multiply each step's normalised importance by the
        soft training mask.
    :param importance_summing_strategy_linear_step: s (> 0), required by (and only by)
        ``linear_decrease``; ``..._exponential_rate`` r (> 1) by ``exponential_decrease``;
        ``..._log_base`` b (> 1) by ``log_decrease``.

    ``s_max``, ``clamp_threshold``, ``mask_sparsity_reg_factor``, ``mask_sparsity_reg_mode``,
    ``task_embedding_init_mode``, ``embedding_clamp``, ``check_finite_loss`` and ``diagnostics`` are
    :class:`HATPlugin` 's. The adjustment mode is fixed (``fgadahat``).
    """

    ADJUSTMENT_MODES: Mapping[str, RateRule] = {
        "fgadahat": RateRule("importance", _fgadahat_rate, per_step=True, adjust_=adahat_adjust_),
    }

    def __init__(
        self,
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
    ) -> None:
        self.importance_type = resolve_importance_type(importance_type).name  # the full name, also for "icu"
        self.importance_summing_strategy = check_choice(
            "importance_summing_strategy", importance_summing_strategy, SUMMING_STRATEGIES
        )
        self.importance_scheduler_type = check_choice(
            "importance_scheduler_type", importance_scheduler_type, IMPORTANCE_SCHEDULERS
        )
        self.neuron_to_weight_importance_aggregation_mode = check_choice(
            "neuron_to_weight_importance_aggregation_mode",
            neuron_to_weight_importance_aggregation_mode,
            AGGREGATIONS,
        )
        self.base_importance = float(check_number("base_importance", base_importance, minimum=0.0))
        self.base_mask_sparsity_reg = float(
            check_number("base_mask_sparsity_reg", base_mask_sparsity_reg, minimum=0.0, strict_minimum=True)
        )
        self.base_linear = float(check_number("base_linear", base_linear, minimum=0.0, strict_minimum=True))
        self.filter_by_cumulative_mask = check_flag("filter_by_cumulative_mask", filter_by_cumulative_mask)
        self.filter_unmasked_importance = check_flag("filter_unmasked_importance", filter_unmasked_importance)
        self.step_multiply_training_mask = check_flag(
            "step_multiply_training_mask", step_multiply_training_mask
        )
        self.summing_parameter = self._check_summing_parameters(
            {
                "importance_summing_strategy_linear_step": importance_summing_strategy_linear_step,
                "importance_summing_strategy_exponential_rate": importance_summing_strategy_exponential_rate,
                "importance_summing_strategy_log_base": importance_summing_strategy_log_base,
            }
        )
        super().__init__(
            adjustment_mode="fgadahat",
            adjustment_intensity=adjustment_intensity,
            epsilon=self.base_mask_sparsity_reg,
            s_max=s_max,
            clamp_threshold=clamp_threshold,
            mask_sparsity_reg_factor=mask_sparsity_reg_factor,
            mask_sparsity_reg_mode=mask_sparsity_reg_mode,
            task_embedding_init_mode=task_embedding_init_mode,
            embedding_clamp=embedding_clamp,
            check_finite_loss=check_finite_loss,
            diagnostics=diagnostics,
        )

    def _check_summing_parameters(self, given: dict[str, float | None]) -> float | None:
        """Validate the strategy-specific arguments; return the chosen strategy's one."""
        strategy = SUMMING_STRATEGIES[self.importance_summing_strategy]
        for name, value in given.items():
            user = STRATEGY_PARAMETERS[name]
            if value is None:
                if name == strategy.parameter:
                    raise ValueError(
                        f"importance_summing_strategy={self.importance_summing_strategy!r} needs "
                        f"{name} (a number > {strategy.parameter_lower_bound}); got None"
                    )
                continue
            if name != strategy.parameter:
                raise ValueError(
                    f"{name}={value!r} is only used by importance_summing_strategy={user!r}, "
                    f"not by {self.importance_summing_strategy!r}; leave it None"
                )
            check_number(name, value, minimum=strategy.parameter_lower_bound, strict_minimum=True)
        return None if strategy.parameter is None else float(given[strategy.parameter])

    @property
    def importance(self) -> ImportanceType:
        """The registered importance type (looked up, so the plugin pickles by name)."""
        return resolve_importance_type(self.importance_type)

    # ------------------------------------------------------------------ rate rule hooks
    @property
    def aggregation(self) -> str:
        """Neuron→parameter aggregation of the importance: ``min``, ``max`` or ``mean``."""
        return self.neuron_to_weight_importance_aggregation_mode

    def unit_measure(self, model: HATBackbone, name: str) -> dict[str, torch.Tensor]:
        """``importance``: the summed importance ``I^{<t}`` per unit group; otherwise HAT's."""
        if name == "importance":
            return {k: s.summed_importance for k, s in model.unit_state.items()}
        return super().unit_measure(model, name)

    def _prepare_rates(self, model: HATBackbone) -> None:
        """Broadcast ``Agg(I^{<t})`` (parent), then fold in ``L`` and the cumulative filter."""
        super()._prepare_rates(model)
        linear = IMPORTANCE_SCHEDULERS[self.importance_scheduler_type](
            model, self.task_position, self.base_linear
        )
        factors: list[torch.Tensor] = []
        for layout in model.param_layouts:
            weight_factor, bias_factor = broadcast(layout, linear, "min")
            if self.filter_by_cumulative_mask:
                weight_mask, bias_mask = broadcast(layout, model.cumulative_masks(), "min")
                weight_factor = weight_factor * weight_mask
                bias_factor = None if bias_factor is None else bias_factor * bias_mask
            factors.append(weight_factor)
            if bias_factor is not None:
                factors.append(bias_factor)
        if len(factors) != len(self._entries):
            raise RuntimeError("FG-AdaHAT factors do not match the broadcast parameter entries")
        self._entries = [
            (param, (measure * factor).contiguous(), key)
            for (param, measure, key), factor in zip(self._entries, factors)
        ]

    # ------------------------------------------------------------------ per experience
    def before_training_exp(self, strategy, **kwargs) -> None:
        """HAT's start of experience, then zero the task's importance accumulators and turn
        activation recording on when the importance type needs it."""
        super().before_training_exp(strategy, **kwargs)
        model = unwrap_hat_model(strategy.model)
        self._reset_accumulator(model)
        model.record_activations = self.importance.needs_activations

    @staticmethod
    @torch.no_grad()
    def _reset_accumulator(model: HATBackbone) -> None:
        for state in model.unit_state.values():
            state.importance_step_sum.zero_()
        model.importance_steps.zero_()

    # ------------------------------------------------------------------ per step
    def after_update(self, strategy, **kwargs) -> None:
        """Accumulate the step's min-max-normalised importance (times the training mask by
        default) into ``importance_step_sum`` (FG-AdaHAT Sec. 3)."""
        super().after_update(strategy, **kwargs)
        model = unwrap_hat_model(strategy.model)
        self.accumulate_importance_(
            model,
            StepContext(
                model=model,
                task=self.task,
                inputs=strategy.mb_x,
                targets=strategy.mb_y,
                masks={k: m.detach() for k, m in model.last_masks.items()},
                activations={k: a.detach() for k, a in model.last_activations.items()},
                gate_scale=self.gate_scale,
            ),
        )

    def accumulate_importance_(self, model: HATBackbone, ctx: StepContext) -> None:
        """Add this step's normalised (and mask-weighted) importance to the model buffers."""
        raw = self.importance.function(ctx)
        states = model.unit_state
        for key, state in states.items():
            if key not in raw or raw[key].shape != state.importance_step_sum.shape:
                got = None if key not in raw else tuple(raw[key].shape)
                raise RuntimeError(
                    f"importance type {self.importance_type!r} returned shape {got} for unit "
                    f"group {key!r}; expected ({state.num_units},)"
                )
        with torch.no_grad():
            sums = [state.importance_step_sum for state in states.values()]
            steps = min_max_normalize_all([raw[key].detach().to(total.dtype) for key, total in zip(states, sums)])
            if self.step_multiply_training_mask:
                torch._foreach_mul_(steps, [ctx.masks[key].detach() for key in states])
            torch._foreach_add_(sums, steps)
            model.importance_steps.add_(1)

    # ------------------------------------------------------------------ end of experience
    def _finish_experience(self, strategy, model: HATBackbone) -> None:
        self.finalize_importance_(model, self.task)
        model.record_activations = False

    @torch.no_grad()
    def finalize_importance_(self, model: HATBackbone, task: int) -> None:
        """``I^t``, its storage and the summing strategy; runs after ``commit_task(task)``."""
        steps = model.importance_steps.clamp_min(1)
        strategy = SUMMING_STRATEGIES[self.importance_summing_strategy]
        order = model.trained_tasks()
        for state in model.unit_state.values():
            importance = state.importance_step_sum / steps.to(state.importance_step_sum.dtype)
            importance = importance + self.base_importance
            if self.filter_unmasked_importance:
                importance = importance * state.task_masks[task]
            state.grow_(task + 1)
            state.task_importances[task] = importance
            history = [state.task_importances[k] for k in order]
            state.summed_importance.copy_(
                strategy.combine(state.summed_importance, history, self.summing_parameter)
            )
        self._reset_accumulator(model)

"""The settings of each method, held once: ``HATConfig`` ⊂ ``AdaHATConfig`` ⊂ ``FGAdaHATConfig``.

Each method's hyperparameters are one frozen dataclass, validated once when it is built
(every error names the argument, the value and what is accepted, before anything trains).
Plugins and strategies are built from a config (``HATPlugin(config)``) or from its fields
as keywords (``HATPlugin(s_max=400.0)``, ``HAT(model=..., optimizer=..., s_max=400.0)``);
their signatures are generated from these classes, so a default is written in one place.

Each config extends the previous method's: AdaHAT adds the soft rule's ``α`` and ``ε``
(its ``α`` also serves HAT's ``hat_const_alpha``), FG-AdaHAT adds the importance settings
(its ``ε`` is ``base_mask_sparsity_reg``, its mode is fixed). Derived fields
(``init=False``) are computed in ``__post_init__`` and cannot be passed.

Defaults are CLArena's (the paper configs of HAT, AdaHAT and FG-AdaHAT at its HEAD),
except FG-AdaHAT's ``importance_type`` (ICU here; see ``docs/deviations.md``).
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ._validation import check_choice, check_flag, check_number
from .diagnostics import LearningDiagnostics
from .importance.attribution.settings import DEFAULT_SETTINGS, AttributionSettings
from .importance.lookup import resolve_importance_type
from .adjustment.schedulers import IMPORTANCE_SCHEDULERS
from .importance.summing import STRATEGY_PARAMETERS, SUMMING_STRATEGIES
from .masking.broadcast import AGGREGATIONS
from .masking.regularizer import MASK_SPARSITY_REG_MODES
from .masking.subnormals import SUBNORMAL_GUARD_MODES
from .models.base import TASK_EMBEDDING_INITIALIZERS
from .task_inference.scores import FEATURE_SCORES, TASK_SCORES

HAT_MODES = ("hat", "hat_random", "hat_const_alpha", "hat_const_1")
ADAHAT_MODES = ("adahat", "adahat_no_sum", "adahat_no_reg")


def _set(config: Any, name: str, value: Any) -> None:
    object.__setattr__(config, name, value)


@dataclass(frozen=True, kw_only=True)
class HATConfig:
    """HAT's settings (Serrà et al., ICML 2018).

    :param adjustment_mode: ``hat`` (rate ``1 − P``), ``hat_random`` (``U(0,1)·P + 1 − P``,
        fresh noise every step), ``hat_const_alpha`` (``α·P + 1 − P``), ``hat_const_1``
        (rate 1: no protection), with ``P = min(M_l[i], M_{l−1}[j])``.
    :param s_max: the largest gate scale (> 0; HAT Eq. 3).
    :param clamp_threshold: θ of the compensation's ``clamp(s·e, −θ, θ)`` (> 0; HAT Eq. 4).
    :param mask_sparsity_reg_factor: the regulariser's factor c (≥ 0; HAT Eq. 5).
    :param mask_sparsity_reg_mode: ``original`` or ``cross`` (see ``masking.regularizer``).
    :param task_embedding_init_mode: ``N01``, ``U-11``, ``U01``, ``U-10`` or ``last``.
    :param alpha: α of ``hat_const_alpha`` (in [0, 1]).
    :param embedding_clamp: clamp the embeddings to ``±embedding_clamp`` after every step,
        as the original HAT code does with 6; ``None`` (default, as CLArena) disables it.
    :param check_finite_loss: raise ``FloatingPointError`` on a NaN/inf loss before the
        backward pass (costs one host sync per step on GPUs).
    :param diagnostics: thresholds of the end-of-experience checks that warn
        (:class:`~avalanche_fgadahat.diagnostics.HATDiagnosticWarning`, issued at the end of
        ``train()``) when a task barely learned, its mask is empty or the network is nearly
        full (:class:`~avalanche_fgadahat.diagnostics.LearningDiagnostics`); ``None`` turns
        the warnings off (the report's numbers are still computed, ``plugin.last_report``).
    :param task_inference: ``None`` (default): task-incremental, the task labels pick the masks;
        ``max_softmax``, ``entropy`` or ``energy``: class-/domain-incremental, each experience is
        a new task in training order and evaluation infers each sample's task with this score
        (``docs/class_incremental.md``).
    :param fused_step: ``False`` (default): the step's own element-wise work runs eagerly.
        ``True``: it runs as a few functions compiled by ``torch.compile`` — the gradient flush,
        rates and embedding-gradient compensation after the backward pass
        (``adjustment/gradient_step.py``), FG-AdaHAT's importance normalisation and accumulation
        after the update — fewer kernel launches, the same numbers bit for bit on the CPU and on
        CUDA (compiled with inductor's eager-numerics options; ``tests/test_fused_step.py``,
        ``docs/benchmark.md``, "Fused step"). The gate σ(s·e)
        stays eager (a compiled σ differs by up to two float32 ulps). Compile time, seconds on a
        CPU, is paid on the first training step of each network in each process, so short runs
        may lose time; without a working compiler it warns (``FusedStepWarning``) and runs eagerly.
        ``True`` or ``False`` only.
    :param subnormal_guards: where the step's subnormal flushes (``docs/deviations.md`` H16) run:
        ``"cpu"`` (default) for a model on a CPU, where subnormal float arithmetic is slow, and not
        on a GPU, which computes on subnormals at full speed (there the step keeps the reference's
        arithmetic, H16a); ``"always"`` on every device (a GPU run then computes what a CPU run
        computes, up to the devices' rounding); ``"never"``: nowhere, also on a CPU (the
        reference's arithmetic; on Intel CPUs the step can run 1.3–1.7× slower, issue 14).
    :raises ValueError: on any value outside the accepted ones (the message names it).
    """

    #: the adjustment modes this method accepts
    ADJUSTMENT_MODES: ClassVar[tuple[str, ...]] = HAT_MODES

    adjustment_mode: str = "hat"
    s_max: float = 400.0
    clamp_threshold: float = 50.0
    mask_sparsity_reg_factor: float = 0.1
    mask_sparsity_reg_mode: str = "original"
    task_embedding_init_mode: str = "N01"
    alpha: float = 1e-6
    embedding_clamp: float | None = None
    check_finite_loss: bool = True
    diagnostics: LearningDiagnostics | None = LearningDiagnostics()
    task_inference: str | None = None
    fused_step: bool = False
    subnormal_guards: str = "cpu"

    def __post_init__(self) -> None:
        check_choice("adjustment_mode", self.adjustment_mode, self.ADJUSTMENT_MODES)
        check_choice("task_inference", self.task_inference, (None, *TASK_SCORES))
        if self.task_inference in FEATURE_SCORES and self.adjustment_mode != "hat":
            warnings.warn(
                f"task_inference={self.task_inference!r} with adjustment_mode={self.adjustment_mode!r}: later tasks "
                "move earlier tasks' features, so their stored feature statistics go stale and task identification "
                "collapses (docs/class_incremental.md); use it with HAT (adjustment_mode='hat'), or a logit score "
                "such as 'entropy'", UserWarning, stacklevel=3)
        _set(self, "s_max", float(check_number("s_max", self.s_max, minimum=0.0, strict_minimum=True)))
        _set(self, "clamp_threshold", float(
            check_number("clamp_threshold", self.clamp_threshold, minimum=0.0, strict_minimum=True)))
        _set(self, "mask_sparsity_reg_factor", float(
            check_number("mask_sparsity_reg_factor", self.mask_sparsity_reg_factor, minimum=0.0)))
        check_choice("mask_sparsity_reg_mode", self.mask_sparsity_reg_mode, MASK_SPARSITY_REG_MODES)
        check_choice("task_embedding_init_mode", self.task_embedding_init_mode, TASK_EMBEDDING_INITIALIZERS)
        _set(self, "alpha", float(check_number("alpha", self.alpha, minimum=0.0, maximum=1.0)))
        if self.embedding_clamp is not None:
            check_number("embedding_clamp", self.embedding_clamp, minimum=0.0, strict_minimum=True)
        check_flag("check_finite_loss", self.check_finite_loss)
        check_flag("fused_step", self.fused_step)
        check_choice("subnormal_guards", self.subnormal_guards, SUBNORMAL_GUARD_MODES)
        if self.diagnostics is not None and not isinstance(self.diagnostics, LearningDiagnostics):
            raise ValueError(f"diagnostics must be a LearningDiagnostics or None, got {self.diagnostics!r}")

    # ------------------------------------------------------------------ construction helpers
    #: the order of the settings in signatures (the reference's argument order); settings
    #: not listed follow in field order
    SETTINGS_ORDER: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def setting_names(cls) -> tuple[str, ...]:
        """The settings a user passes (derived fields excluded), in signature order."""
        names = [f.name for f in dataclasses.fields(cls) if f.init]
        first = [name for name in cls.SETTINGS_ORDER if name in names]
        return tuple(first + [name for name in names if name not in first])

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], owner: str | None = None) -> "HATConfig":
        """Build from keyword settings; ``TypeError`` naming an unknown one and the accepted names."""
        unknown = [name for name in settings if name not in cls.setting_names()]
        if unknown:
            raise TypeError(
                f"{owner or cls.__name__} got unexpected argument(s) {', '.join(unknown)}; "
                f"its settings are: {', '.join(cls.setting_names())}"
            )
        return cls(**settings)

    @classmethod
    def signature_parameters(cls) -> list[inspect.Parameter]:
        """Keyword-only ``inspect.Parameter`` s of the settings (for generated signatures)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        return [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=fields[name].default,
                              annotation=fields[name].type)
            for name in cls.setting_names()
        ]

    def settings(self) -> dict[str, Any]:
        """``{name: value}`` of the settings (derived fields excluded)."""
        return {name: getattr(self, name) for name in self.setting_names()}

    def replace(self, **changes: Any) -> "HATConfig":
        """A copy with ``changes`` applied (validated again)."""
        return type(self).from_settings({**self.settings(), **changes})


@dataclass(frozen=True, kw_only=True)
class AdaHATConfig(HATConfig):
    """AdaHAT's settings (Wang et al., ECML-PKDD 2024): HAT's plus the soft rule's.

    :param adjustment_mode: ``adahat`` (default), ``adahat_no_sum``, ``adahat_no_reg``, or
        one of HAT's modes (``hat_const_alpha`` uses ``adjustment_intensity``, capped at 1,
        as its α).
    :param adjustment_intensity: α (> 0), 1e-6 in the AdaHAT paper configs.
    :param epsilon: ε (> 0), 0.1 in the paper configs.

    The other settings are :class:`HATConfig` 's, with the same defaults; ``alpha`` is derived.
    """

    ADJUSTMENT_MODES: ClassVar[tuple[str, ...]] = HAT_MODES + ADAHAT_MODES
    SETTINGS_ORDER: ClassVar[tuple[str, ...]] = ("adjustment_mode", "adjustment_intensity", "epsilon")

    adjustment_mode: str = "adahat"
    adjustment_intensity: float = 1e-6
    epsilon: float = 0.1
    alpha: float = field(default=1e-6, init=False)

    def __post_init__(self) -> None:
        _set(self, "adjustment_intensity", float(check_number(
            "adjustment_intensity", self.adjustment_intensity, minimum=0.0, strict_minimum=True)))
        self._set_epsilon()
        _set(self, "alpha", min(self.adjustment_intensity, 1.0))
        super().__post_init__()

    def _set_epsilon(self) -> None:
        _set(self, "epsilon", float(check_number("epsilon", self.epsilon, minimum=0.0, strict_minimum=True)))


@dataclass(frozen=True, kw_only=True)
class FGAdaHATConfig(AdaHATConfig):
    """FG-AdaHAT's settings (CLArena ``FGAdaHAT``): AdaHAT's plus the importance's.

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
    :param attribution_settings: steps, samples and batch rows of the attribution importance
        types (:class:`~avalanche_fgadahat.importance.AttributionSettings`; defaults are the
        reference's); unused by the other types.

    ``adjustment_mode`` (``fgadahat``), ``epsilon`` (= ``base_mask_sparsity_reg``) and
    ``alpha`` are derived. The other settings are :class:`HATConfig` 's.
    """

    ADJUSTMENT_MODES: ClassVar[tuple[str, ...]] = ("fgadahat",)
    SETTINGS_ORDER: ClassVar[tuple[str, ...]] = (  # CLArena's FGAdaHAT argument order
        "adjustment_intensity", "importance_type", "importance_summing_strategy", "importance_scheduler_type",
        "neuron_to_weight_importance_aggregation_mode", "s_max", "clamp_threshold", "mask_sparsity_reg_factor",
        "mask_sparsity_reg_mode", "base_importance", "base_mask_sparsity_reg", "base_linear",
        "filter_by_cumulative_mask", "filter_unmasked_importance", "step_multiply_training_mask",
        "task_embedding_init_mode", "importance_summing_strategy_linear_step",
        "importance_summing_strategy_exponential_rate", "importance_summing_strategy_log_base",
    )

    adjustment_mode: str = field(default="fgadahat", init=False)
    adjustment_intensity: float = 1.5e-7
    epsilon: float = field(default=0.1, init=False)
    importance_type: str = "input_weight_abs_sum_x_activation_abs"
    importance_summing_strategy: str = "add_all"
    importance_scheduler_type: str = "linear_sparsity_reg"
    neuron_to_weight_importance_aggregation_mode: str = "min"
    base_importance: float = 1e-8
    base_mask_sparsity_reg: float = 0.1
    base_linear: float = 5.0
    filter_by_cumulative_mask: bool = False
    filter_unmasked_importance: bool = False
    step_multiply_training_mask: bool = True
    importance_summing_strategy_linear_step: float | None = None
    importance_summing_strategy_exponential_rate: float | None = None
    importance_summing_strategy_log_base: float | None = None
    attribution_settings: AttributionSettings = DEFAULT_SETTINGS
    #: the chosen summing strategy's parameter (``None`` if it takes none)
    summing_parameter: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        _set(self, "importance_type", resolve_importance_type(self.importance_type).name)
        check_choice("importance_summing_strategy", self.importance_summing_strategy, SUMMING_STRATEGIES)
        check_choice("importance_scheduler_type", self.importance_scheduler_type, IMPORTANCE_SCHEDULERS)
        check_choice("neuron_to_weight_importance_aggregation_mode",
                     self.neuron_to_weight_importance_aggregation_mode, AGGREGATIONS)
        _set(self, "base_importance", float(check_number("base_importance", self.base_importance, minimum=0.0)))
        _set(self, "base_mask_sparsity_reg", float(check_number(
            "base_mask_sparsity_reg", self.base_mask_sparsity_reg, minimum=0.0, strict_minimum=True)))
        _set(self, "base_linear", float(check_number("base_linear", self.base_linear, minimum=0.0, strict_minimum=True)))
        for name in ("filter_by_cumulative_mask", "filter_unmasked_importance", "step_multiply_training_mask"):
            check_flag(name, getattr(self, name))
        _set(self, "summing_parameter", self._check_summing_parameters())
        if not isinstance(self.attribution_settings, AttributionSettings):
            raise ValueError(
                "attribution_settings must be an avalanche_fgadahat.importance.AttributionSettings, "
                f"got {self.attribution_settings!r}"
            )
        super().__post_init__()

    def _set_epsilon(self) -> None:
        _set(self, "epsilon", self.base_mask_sparsity_reg)

    def _check_summing_parameters(self) -> float | None:
        """Validate the strategy-specific settings; return the chosen strategy's one."""
        strategy = SUMMING_STRATEGIES[self.importance_summing_strategy]
        for name, user in STRATEGY_PARAMETERS.items():
            value = getattr(self, name)
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
        return None if strategy.parameter is None else float(getattr(self, strategy.parameter))

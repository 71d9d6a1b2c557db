"""Adjustment mode name → rule: the one place a mode is turned into its rule object."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .adahat_rules import AdaHATNoRegRule, AdaHATNoSumRule, AdaHATRule
from .base import AdjustmentRule
from .fgadahat_rule import FGAdaHATRule
from .hat_rules import ConstantAlphaRule, HATRule, NoProtectionRule, RandomRule

#: ``{adjustment_mode: build(settings) → rule}``; ``settings`` is the method's config
#: (:mod:`avalanche_fgadahat.config`), read for the rule's own parameters.
ADJUSTMENT_RULES: dict[str, Callable[[Any], AdjustmentRule]] = {
    "hat": lambda s: HATRule(),
    "hat_random": lambda s: RandomRule(),
    "hat_const_alpha": lambda s: ConstantAlphaRule(s.alpha),
    "hat_const_1": lambda s: NoProtectionRule(),
    "adahat": lambda s: AdaHATRule(s.adjustment_intensity, s.epsilon),
    "adahat_no_sum": lambda s: AdaHATNoSumRule(s.adjustment_intensity, s.epsilon),
    "adahat_no_reg": lambda s: AdaHATNoRegRule(s.adjustment_intensity, s.epsilon),
    "fgadahat": lambda s: FGAdaHATRule(
        s.adjustment_intensity,
        s.base_mask_sparsity_reg,
        aggregation=s.neuron_to_weight_importance_aggregation_mode,
        scheduler=s.importance_scheduler_type,
        base_linear=s.base_linear,
        filter_by_cumulative_mask=s.filter_by_cumulative_mask,
    ),
}


def build_rule(settings: Any) -> AdjustmentRule:
    """The rule of ``settings.adjustment_mode``, with its parameters taken from ``settings``."""
    return ADJUSTMENT_RULES[settings.adjustment_mode](settings)

"""Adjustment rules (HAT Eq. 2, AdaHAT Eq. 7–8, FG-AdaHAT Eq. 1–3) and the rate engine."""

from .adahat_rules import AdaHATNoRegRule, AdaHATNoSumRule, AdaHATRule, soft_rate
from .base import AdjustmentRule, StepSignals
from .engine import RateEngine
from .fgadahat_rule import FGAdaHATRule
from .hat_rules import ConstantAlphaRule, HATRule, NoProtectionRule, RandomRule
from .registry import ADJUSTMENT_RULES, build_rule

__all__ = [
    "ADJUSTMENT_RULES",
    "AdaHATNoRegRule",
    "AdaHATNoSumRule",
    "AdaHATRule",
    "AdjustmentRule",
    "ConstantAlphaRule",
    "FGAdaHATRule",
    "HATRule",
    "NoProtectionRule",
    "RandomRule",
    "RateEngine",
    "StepSignals",
    "build_rule",
    "soft_rate",
]

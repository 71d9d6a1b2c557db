"""AdaHAT's soft adjustment rules (Wang et al., ECML-PKDD 2024, Eq. 7–8) and its ablations.

With the summative mask ``S`` (how many earlier tasks use a unit), ``P = Agg_min S`` and the
current batch's mask sparsity ``R_l`` (:class:`~.base.StepSignals`):

* ``adahat``:        ``r_l = α / (ε + R_l)``, ``a = r_l / (P + r_l)``   (Eq. 7–8)
* ``adahat_no_sum``: ``a = r_l / (t + r_l)``, t the 1-based position of the task (ablation)
* ``adahat_no_reg``: ``r = α / ε``,          ``a = r / (P + r)``       (ablation)

Parameters no earlier task used have ``P = 0`` and rate exactly 1; as α → 0 the rate of used
parameters goes to 0 (HAT), as α → ∞ to 1 (fine-tuning). The rates are written
``1 / (1 + P · (1/r))``: one temporary of the parameter's size, exactly 1 where ``P`` is 0.
"""

from __future__ import annotations

import torch

from ..models.base import HATBackbone
from .base import AdjustmentRule, StepSignals


def soft_rate(measure: torch.Tensor, inverse_r) -> torch.Tensor:
    """``r / (P + r)`` written as ``1 / (1 + P · (1/r))``, updated in place."""
    return torch.mul(measure, inverse_r).add_(1.0).reciprocal_()


def soft_rate_divisors(measures: list[torch.Tensor], inverse_rs: list[torch.Tensor]) -> list[torch.Tensor]:
    """``1 + P · (1/r)`` for a list of parameters (the reciprocal of :func:`soft_rate`)."""
    divisors = torch._foreach_mul(measures, inverse_rs)
    torch._foreach_add_(divisors, 1.0)
    return divisors


class AdaHATRule(AdjustmentRule):
    """``a = r_l / (P + r_l)``, ``r_l = α / (ε + R_l)`` (AdaHAT Eq. 7–8).

    :param adjustment_intensity: α (> 0).
    :param epsilon: ε (> 0).
    """

    measure = "summative"
    per_step = True
    has_list_form = True

    def __init__(self, adjustment_intensity: float, epsilon: float) -> None:
        self.adjustment_intensity = float(adjustment_intensity)
        self.epsilon = float(epsilon)
        #: the 1-based training position ``t`` of the task (``adahat_no_sum``, FG-AdaHAT's scheduler)
        self.task_position = 1

    def prepare(self, model: HATBackbone) -> None:
        """The task's 1-based position ``t`` among the trained tasks."""
        self.task_position = len(model.trained_tasks()) + 1

    def inverse_intensity(self, key: str, signals: StepSignals) -> torch.Tensor:
        """``1 / r_l = (ε + R_l) / α``, computed for all layers at once, once per step."""
        return signals.memo(self, lambda: self._inverse_intensities(*signals.sparsity_vector()))[key]

    def _inverse_intensities(self, keys: list[str], sparsity: torch.Tensor | None) -> dict[str, torch.Tensor]:
        if sparsity is None:
            return {}
        return dict(zip(keys, ((self.epsilon + sparsity) / self.adjustment_intensity).unbind()))

    def rate(self, measure: torch.Tensor, key: str, signals: StepSignals) -> torch.Tensor:
        """``r_l / (P + r_l)``."""
        return soft_rate(measure, self.inverse_intensity(key, signals))

    def adjust_(self, grads: list[torch.Tensor], measures: list[torch.Tensor], keys: list[str],
                signals: StepSignals) -> None:
        """``grad ← grad / (1 + P·(1/r_l))``: three passes (multiply, add, divide), one
        temporary per parameter."""
        inverse = [self.inverse_intensity(key, signals) for key in keys]
        torch._foreach_div_(grads, soft_rate_divisors(measures, inverse))

    def soft_coefficients(self, keys: list[str], signals: StepSignals) -> list[torch.Tensor] | None:
        """``1/r_l = (ε + R_l)/α`` of each key (0-d tensors), for rules with this list form;
        ``None`` for the ablations without one (``adahat_no_sum``, ``adahat_no_reg``)."""
        if not self.has_list_form:
            return None
        return [self.inverse_intensity(key, signals) for key in keys]


class AdaHATNoSumRule(AdaHATRule):
    """``a = r_l / (t + r_l)``: the task's position ``t`` instead of ``S`` (ablation)."""

    has_list_form = False

    def rate(self, measure: torch.Tensor, key: str, signals: StepSignals) -> torch.Tensor:
        """``r_l / (t + r_l)`` (a 0-d tensor)."""
        return (self.inverse_intensity(key, signals) * self.task_position).add_(1.0).reciprocal_()


class AdaHATNoRegRule(AdaHATRule):
    """``a = r / (P + r)`` with the constant ``r = α / ε`` (no mask sparsity; ablation)."""

    per_step = False
    has_list_form = False

    def rate(self, measure: torch.Tensor, key: str, signals: StepSignals) -> torch.Tensor:
        """``r / (P + r)``, ``r = α / ε``."""
        return soft_rate(measure, self.epsilon / self.adjustment_intensity)

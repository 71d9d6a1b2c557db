"""HAT's adjustment rules (Serrà et al. 2018, Eq. 2) and their ablations (CLArena's modes).

With ``P = min(M_l[i], M_{l−1}[j])`` (biases ``M_l[i]``), ``M`` the cumulative mask:

* ``hat``:             ``a = 1 − P`` (parameters earlier tasks use are frozen);
* ``hat_random``:      ``a = 1 − P·(1 − U)``, ``U ~ U(0, 1)`` drawn afresh every step;
* ``hat_const_alpha``: ``a = 1 − P·(1 − α)``;
* ``hat_const_1``:     ``a = 1`` (no protection; the masks still gate the forward pass).
"""

from __future__ import annotations

import torch

from .base import AdjustmentRule, StepSignals


class HATRule(AdjustmentRule):
    """``a = 1 − P``: freeze what earlier tasks use (HAT Eq. 2). ``P`` is a min of binary
    cumulative masks, so every rate is 0 or 1."""

    binary_rates = True

    def rate(self, measure: torch.Tensor, key: str, signals: StepSignals) -> torch.Tensor:
        """``1 − P``."""
        return 1.0 - measure


class RandomRule(AdjustmentRule):
    """``a = 1 − P·(1 − U)`` with fresh uniform noise every step (``hat_random``)."""

    per_step = True

    def rate(self, measure: torch.Tensor, key: str, signals: StepSignals) -> torch.Tensor:
        """``1 − P·(1 − U)``, fresh ``U ~ U(0, 1)`` per call."""
        return 1.0 - measure * (1.0 - torch.rand_like(measure))


class ConstantAlphaRule(AdjustmentRule):
    """``a = 1 − P·(1 − α)``: used parameters move at the constant rate α (``hat_const_alpha``).

    :param alpha: α in [0, 1].
    """

    def __init__(self, alpha: float) -> None:
        self.alpha = float(alpha)

    def rate(self, measure: torch.Tensor, key: str, signals: StepSignals) -> torch.Tensor:
        """``1 − P·(1 − α)``."""
        return 1.0 - measure * (1.0 - self.alpha)


class NoProtectionRule(AdjustmentRule):
    """``a = 1``: gradients are left as they are (``hat_const_1``)."""

    measure = None

    def rate(self, measure: torch.Tensor, key: str, signals: StepSignals) -> torch.Tensor:
        """Ones shaped as ``P``."""
        return torch.ones_like(measure)

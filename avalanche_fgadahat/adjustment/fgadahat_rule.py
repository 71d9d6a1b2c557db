"""FG-AdaHAT's adjustment rule: AdaHAT's soft rate on a learnt per-unit importance.

FG-AdaHAT (Wang et al., CLArena ``FGAdaHAT``, Eq. (1)–(3)): the rate of a masked-layer
parameter is ``a = α / (c_l · P + α)`` with

* ``P = Agg(I^{<t}_l[i], I^{<t}_{l−1}[j])`` for weights (``aggregation`` ∈ min/max/mean of
  ``masking.broadcast``), ``I^{<t}_l[i]`` for biases and first-layer weights, optionally
  ``× min(M_l[i], M_{l−1}[j])`` (``filter_by_cumulative_mask``);
* ``c_l = (R_l + b_R) · L``, ``L`` the scheduler's linear term (``adjustment/schedulers.py``),
  ``R_l`` the current batch's mask sparsity.

``a = 1 / (1 + P·L · (R_l + b_R) / α)``: AdaHAT's soft rate with ``ε = b_R`` and ``P·L`` in
place of the summative mask, so it is :class:`~.adahat_rules.AdaHATRule` with ``P·L`` folded
into the per-parameter measure once per experience (``L`` does not change within a task).
"""

from __future__ import annotations

import torch

from .schedulers import IMPORTANCE_SCHEDULERS
from ..masking.broadcast import broadcast
from ..models.base import HATBackbone
from .adahat_rules import AdaHATRule


class FGAdaHATRule(AdaHATRule):
    """``a = α / ((R_l + b_R) · L · P + α)`` (see module doc).

    :param adjustment_intensity: α (> 0).
    :param base_mask_sparsity_reg: ``b_R`` (> 0), AdaHAT's ε.
    :param aggregation: neuron→parameter aggregation of the importance (``min``/``max``/``mean``).
    :param scheduler: a name of :data:`~avalanche_fgadahat.importance.IMPORTANCE_SCHEDULERS`.
    :param base_linear: ``b_L`` (> 0).
    :param filter_by_cumulative_mask: multiply ``P`` by ``min(M_l[i], M_{l−1}[j])``.
    """

    measure = "importance"

    def __init__(self, adjustment_intensity: float, base_mask_sparsity_reg: float, *, aggregation: str = "min",
                 scheduler: str = "linear_sparsity_reg", base_linear: float = 5.0,
                 filter_by_cumulative_mask: bool = False) -> None:
        super().__init__(adjustment_intensity, base_mask_sparsity_reg)
        self.aggregation = aggregation
        self.scheduler = scheduler
        self.base_linear = float(base_linear)
        self.filter_by_cumulative_mask = bool(filter_by_cumulative_mask)

    def parameter_factors(self, model: HATBackbone) -> list[torch.Tensor]:
        """``L`` (min-broadcast), times the min-broadcast cumulative mask when filtering."""
        linear = IMPORTANCE_SCHEDULERS[self.scheduler](model, self.task_position, self.base_linear)
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
        return factors

"""Adjustment-rate rules: how a plugin turns a per-parameter measure into gradient rates.

Every HAT-family method multiplies the gradient of each masked-layer parameter by a rate
``a ∈ [0, 1]`` computed from a per-parameter measure ``P`` (the broadcast of a per-unit
measure: HAT's cumulative mask, AdaHAT's summative mask, FG-AdaHAT's summed importance).
A :class:`RateRule` names the per-unit measure it needs and computes the rate; rules that
do not depend on the current batch are evaluated once per experience.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from .hat import HATPlugin

RateFunction = Callable[["HATPlugin", torch.Tensor, str], Any]
GradientAdjustment = Callable[["HATPlugin", list[torch.Tensor], list[torch.Tensor], list[str]], None]


@dataclass(frozen=True)
class RateRule:
    """``rate(plugin, P, unit_key)``; ``per_step`` rules read batch state (e.g. ``R_l``).

    ``adjust_(plugin, [grad, ...], [P, ...], [unit_key, ...])`` optionally applies the rates
    of a list of parameters to their gradients in place, by ``torch._foreach_*`` ops (one
    call per op, and on CUDA one kernel per op for the whole list); it must give the same
    numbers as multiplying by ``rate`` (a test checks it).

    ``measure`` names the per-unit measure broadcast into ``P`` (see
    ``HATPlugin.UNIT_MEASURES``); ``None`` means the rate is 1 and nothing is done.
    """

    measure: str | None
    rate: RateFunction | None
    per_step: bool = False
    #: the list form used in the training step where given (see above)
    adjust_: GradientAdjustment | None = None

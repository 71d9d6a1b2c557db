"""The one neuron→parameter broadcast of the HAT family.

HAT, AdaHAT and FG-AdaHAT all turn a per-unit measure μ (cumulative mask, summative
mask, importance) into a per-parameter measure (CLArena's
``get_layer_measure_parameter_wise``):

* weight ``W_l[i, j, ...]``: ``Agg(μ_l[i], μ_{l-1}[j])``, with ``Agg`` one of
  :data:`AGGREGATIONS` (HAT paper Eq. (2) uses ``min`` on the cumulative mask);
* first layer (no preceding unit group): ``μ_l[i]``, broadcast over the inputs;
* bias ``b_l[i]``: ``μ_l[i]``.

Conv kernels broadcast over kernel positions; after a conv→linear flatten every input
channel covers ``in_repeat`` consecutive inputs. Deviation from CLArena: its ``mean``
aggregation calls ``torch.mean(a, b)`` and crashes; here it is ``(a + b) / 2``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from .._validation import check_choice
from .layout import ParamLayout

Aggregation = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a + b) * 0.5


AGGREGATIONS: dict[str, Aggregation] = {
    "min": torch.minimum,
    "max": torch.maximum,
    "mean": _mean,
}


def unit_vectors(
    layout: ParamLayout, unit_measure: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The per-unit measures of ``layout``'s weight, shaped to broadcast against it: the output
    units' ``(n_out, 1, 1…)`` and the input positions' ``(1, n_in, 1…)`` (conv kernels: trailing 1s;
    a conv→linear flatten: each channel repeated ``in_repeat`` times; a concatenation: its groups
    side by side), or ``None`` for a first layer (no preceding unit group)."""
    extra = (1,) * (layout.weight.dim() - 2)
    out_measure = unit_measure[layout.out_key].reshape(-1, 1, *extra)
    if layout.in_segments:  # a concatenation of unit groups: their measures side by side
        parts = [unit_measure[key].repeat_interleave(repeat) if repeat > 1 else unit_measure[key]
                 for key, repeat in layout.in_segments]
        return out_measure, torch.cat(parts).reshape(1, -1, *extra)
    if layout.in_key is None:
        return out_measure, None
    in_measure = unit_measure[layout.in_key]
    if layout.in_repeat > 1:
        in_measure = in_measure.repeat_interleave(layout.in_repeat)
    return out_measure, in_measure.reshape(1, -1, *extra)


def broadcast_to_weight(
    layout: ParamLayout,
    unit_measure: Mapping[str, torch.Tensor],
    aggregation: str = "min",
) -> torch.Tensor:
    """Per-weight measure of ``layout`` from the per-unit measures (see module doc)."""
    agg = AGGREGATIONS[check_choice("aggregation", aggregation, AGGREGATIONS)]
    out_measure, in_measure = unit_vectors(layout, unit_measure)
    if in_measure is None:
        return out_measure.expand_as(layout.weight)
    return agg(out_measure, in_measure).expand_as(layout.weight)


def broadcast_to_bias(
    layout: ParamLayout, unit_measure: Mapping[str, torch.Tensor]
) -> torch.Tensor | None:
    """Per-bias measure ``μ_l[i]``, or ``None`` when the layer has no bias."""
    if layout.bias is None:
        return None
    return unit_measure[layout.out_key]


def broadcast(
    layout: ParamLayout,
    unit_measure: Mapping[str, torch.Tensor],
    aggregation: str = "min",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(weight measure, bias measure or None)`` for one masked layer."""
    return broadcast_to_weight(layout, unit_measure, aggregation), broadcast_to_bias(
        layout, unit_measure
    )

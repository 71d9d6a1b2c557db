"""Min-max normalisation of a step importance (FG-AdaHAT, before its Eq. (5)).

``(x − min x) / (max x − min x + 1e-8)`` over the whole vector, as CLArena's
``min_max_normalize(dim=None)``: a constant vector maps to all zeros, and a near-constant
one to values well below 1 (the 1e-8 is absolute).
"""

from __future__ import annotations

import torch

MIN_MAX_EPSILON = 1e-8


def min_max_normalize(x: torch.Tensor) -> torch.Tensor:
    """Scale ``x`` into ``[0, 1)`` (see module doc); no host synchronisation."""
    return min_max_normalize_all([x])[0]


def min_max_normalize_all(xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """:func:`min_max_normalize` of each tensor of ``xs``, by list ops (``torch._foreach_*``):
    a handful of calls for all layers instead of six per layer."""
    if not xs:
        return []
    lows, highs = zip(*(torch.aminmax(x) for x in xs))
    spans = torch._foreach_sub(list(highs), list(lows))
    torch._foreach_add_(spans, MIN_MAX_EPSILON)
    shifted = torch._foreach_sub(xs, list(lows))
    torch._foreach_div_(shifted, spans)
    return shifted

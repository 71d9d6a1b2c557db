"""Min-max normalisation of a step importance (FG-AdaHAT, before its Eq. (5)).

``(x − min x) / (max x − min x + 1e-8)`` over the whole vector, as CLArena's
``min_max_normalize(dim=None)``: a constant vector maps to all zeros, and a near-constant
one to values well below 1 (the 1e-8 is absolute).

With ``flush=True`` (what the accumulator uses, ``docs/deviations.md`` H16) no subnormal float
is produced: raw values below :data:`RAW_IMPORTANCE_FLOOR` count as 0, and normalised values
below :data:`STEP_IMPORTANCE_FLOOR` are 0 (decided before the division); every other value
is bit for bit the unflushed one.
"""

from __future__ import annotations

import torch

MIN_MAX_EPSILON = 1e-8
#: Raw importances below this count as 0. Then ``x − min x`` is 0 or at least ``2^-123`` (the
#: spacing of float32 numbers at 1e-30), never subnormal; the normalised value moves by at
#: most ``1e-30 / 1e-8 = 1e-22``.
RAW_IMPORTANCE_FLOOR = 1e-30
#: Step importances (normalised, and after the training mask's product) below this are 0.
#: Their mean over a task's steps moves by less than 1e-20: the finalised ``I^t`` (at least
#: ``b_I`` = 1e-8 by default, float32 spacing 9e-16 there) keeps its bits; with ``b_I`` = 0, a
#: change of 1e-20 in ``P`` moves FG-AdaHAT's rate ``1/(1 + c·P/α)`` by about ``c · 1e-20 / α``
#: (``7e-14 · c`` at the default α = 1.5e-7), below float32's resolution of a rate near 1.
STEP_IMPORTANCE_FLOOR = 1e-20


def min_max_normalize(x: torch.Tensor) -> torch.Tensor:
    """Scale ``x`` into ``[0, 1)`` (see module doc); no host synchronisation."""
    return min_max_normalize_all([x])[0]


def min_max_normalize_all(xs: list[torch.Tensor], flush: bool = False) -> list[torch.Tensor]:
    """:func:`min_max_normalize` of each tensor of ``xs``, by list ops (``torch._foreach_*``):
    a handful of calls for all layers instead of six per layer. ``flush``: see module doc."""
    if not xs:
        return []
    if flush:
        xs = [torch.nn.functional.hardshrink(x, RAW_IMPORTANCE_FLOOR) for x in xs]
    lows, highs = zip(*(torch.aminmax(x) for x in xs))
    spans = torch._foreach_sub(list(highs), list(lows))
    torch._foreach_add_(spans, MIN_MAX_EPSILON)
    shifted = torch._foreach_sub(xs, list(lows))
    if flush:  # shifted ≥ 0; keep it where shifted / span ≥ floor (span ≥ 1e-8: the threshold is normal)
        thresholds = torch._foreach_mul(spans, STEP_IMPORTANCE_FLOOR)
        shifted = [s.masked_fill_(s < t, 0.0) for s, t in zip(shifted, thresholds)]
    torch._foreach_div_(shifted, spans)
    return shifted

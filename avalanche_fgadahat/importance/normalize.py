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

import functools

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
    """Scale ``x`` (any shape; min and max over all its elements) into ``[0, 1)`` (see module doc);
    no host synchronisation."""
    return min_max_normalize_all([x])[0]


@functools.lru_cache(maxsize=16)
def segment_index(sizes: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lengths, segment)`` of a concatenation of vectors of ``sizes``: ``lengths`` ``(len(sizes),)``
    and, per element, the index of its vector, ``segment`` ``(sum(sizes),)`` (int64, on ``device``).
    Built once per sizes and device (no per-step host-to-device copy)."""
    lengths = torch.tensor(sizes, device=device)
    return lengths, torch.repeat_interleave(lengths, output_size=sum(sizes))


def min_max_normalize_segments(flat: torch.Tensor, lengths: torch.Tensor, segment: torch.Tensor,
                               flush: bool = False) -> torch.Tensor:
    """:func:`min_max_normalize` of every segment of ``flat`` at once (a new tensor shaped as ``flat``).

    :param flat: the concatenated vectors, ``(n,)``.
    :param lengths: ``(segments,)`` and ``segment`` ``(n,)``: :func:`segment_index` of their sizes.
    :param flush: see module doc.

    One op for all segments where the per-vector form takes one per vector: each segment's
    minimum and maximum by ``torch.segment_reduce``, and element-wise ops on the whole of
    ``flat``; the same float operations per element, so the same bits as normalising each vector.
    """
    if flush:
        flat = torch.nn.functional.hardshrink(flat, RAW_IMPORTANCE_FLOOR)
    lows = torch.segment_reduce(flat, "min", lengths=lengths)
    spans = torch.segment_reduce(flat, "max", lengths=lengths).sub_(lows).add_(MIN_MAX_EPSILON)
    shifted = flat - lows.index_select(0, segment)
    if flush:  # shifted ≥ 0; keep it where shifted / span ≥ floor (span ≥ 1e-8: the threshold is normal)
        shifted.masked_fill_(shifted < (spans * STEP_IMPORTANCE_FLOOR).index_select(0, segment), 0.0)
    return shifted.div_(spans.index_select(0, segment))


def min_max_normalize_all(xs: list[torch.Tensor], flush: bool = False) -> list[torch.Tensor]:
    """:func:`min_max_normalize` of each tensor of ``xs`` (any shapes; each keeps its shape, dtype
    and device), flattened, concatenated and normalised per segment
    (:func:`min_max_normalize_segments`); tensors of different dtypes or devices are normalised
    one at a time. ``flush``: see module doc."""
    if not xs:
        return []
    if len({(x.dtype, x.device) for x in xs}) > 1:
        return [min_max_normalize_all([x], flush)[0] for x in xs]
    sizes = tuple(x.numel() for x in xs)
    lengths, segment = segment_index(sizes, xs[0].device)
    flat = min_max_normalize_segments(torch.cat([x.reshape(-1) for x in xs]), lengths, segment, flush)
    return [part.view(x.shape) for part, x in zip(flat.split(sizes), xs)]

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
    """``(gather, segment)`` of a concatenation of vectors of ``sizes`` (int64, on ``device``).

    ``gather`` ``(len(sizes), max(sizes))``: row ``g`` holds the flat positions of vector ``g``'s
    elements, padded by repeating its first (position 0 for an empty vector), so the minimum and
    the maximum of a row are those of the vector; ``segment`` ``(sum(sizes),)``: per element, the
    index of its vector. Built once per sizes and device (no per-step host-to-device copy)."""
    lengths = torch.tensor(sizes, dtype=torch.long)
    starts = torch.cumsum(lengths, 0) - lengths
    columns = torch.arange(max(sizes, default=0) or 1)
    gather = starts[:, None] + torch.where(columns[None, :] < lengths[:, None], columns[None, :], 0)
    gather = torch.where(lengths[:, None] > 0, gather, 0)
    segment = torch.repeat_interleave(torch.arange(len(sizes)), lengths, output_size=sum(sizes))
    return gather.to(device), segment.to(device)


def min_max_normalize_segments(flat: torch.Tensor, gather: torch.Tensor, segment: torch.Tensor,
                               flush: bool = False) -> torch.Tensor:
    """:func:`min_max_normalize` of every segment of ``flat`` at once (a new tensor shaped as ``flat``).

    :param flat: the concatenated vectors, ``(n,)``.
    :param gather: ``(segments, largest)`` and ``segment`` ``(n,)``: :func:`segment_index` of their sizes.
    :param flush: see module doc.

    A few ops for all segments where the per-vector form takes a few per vector: each segment's
    minimum and maximum over the rows of ``flat`` gathered by ``gather`` (``take``, ``amin``,
    ``amax``: min and max are exact, so any order gives the same values), and element-wise ops on
    the whole of ``flat``; the same float operations per element, so the same bits as normalising
    each vector.
    """
    if flush:
        flat = torch.nn.functional.hardshrink(flat, RAW_IMPORTANCE_FLOOR)
    if flat.numel() == 0:
        return flat.clone()
    rows = torch.take(flat, gather)
    lows = rows.amin(1)
    spans = rows.amax(1).sub_(lows).add_(MIN_MAX_EPSILON)
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
    gather, segment = segment_index(sizes, xs[0].device)
    flat = min_max_normalize_segments(torch.cat([x.reshape(-1) for x in xs]), gather, segment, flush)
    return [part.view(x.shape) for part, x in zip(flat.split(sizes), xs)]

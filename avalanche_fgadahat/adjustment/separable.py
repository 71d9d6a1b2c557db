"""The soft rate's divisor from per-unit vectors, where that gives the same bits (AdaHAT, FG-AdaHAT).

AdaHAT's and FG-AdaHAT's rate divides a masked-layer gradient by ``d = 1 + P·k`` (``k = (ε +
R_l)/α`` of the layer, one number per step; ``adjustment/adahat_rules.py``). With the ``min``
(or ``max``) aggregation ``P`` of a weight is ``min(u[i], v[j])`` broadcast from two per-unit
vectors (``masking/broadcast.py``), and ``x ↦ fl(fl(x·k) + 1)`` is monotone for ``k > 0``
(float rounding is monotone), so for a finite positive ``k`` (checked every step, one host read
per layer: :func:`usable_coefficients`; otherwise the step divides by the stored ``P``)

    ``fl(fl(min(u_i, v_j)·k) + 1) = min(fl(fl(u_i·k) + 1), fl(fl(v_j·k) + 1))``

bit for bit: the divisor is formed from the two vectors (a few ops on ``units`` elements, then
one broadcast ``minimum`` written once) instead of from the stored ``P`` (a read of a
parameter-sized tensor and two passes over another one); a first-layer weight (``P = u[i]``
over its inputs) and a bias divide by the ``(units, 1, …)`` vector directly, with no
parameter-sized temporary at all. A per-parameter factor folded into ``P`` once per experience
(FG-AdaHAT's linear term ``L``) keeps the form where it is one number ``c ≥ 0`` per parameter:
``fl(min(u, v)·c) = min(fl(u·c), fl(v·c))``.

The engine uses this form on the CPU, where the step's cost is its passes over memory; on a
GPU it keeps the list form, whose ``torch._foreach_*`` kernels launch three times per group of
parameters instead of three to six times per parameter (the small-MLP GPU step is launch-bound).

:func:`separable_measures` finds the entries with this form at the start of an experience and
checks, per entry, that the vectors rebuild the stored ``P`` bit for bit (otherwise the entry
keeps the general path); :func:`divide_by_soft_rates_` applies them every step. The ``mean``
aggregation, a factor that varies within a parameter (the ``summative_mask_sparsity_reg``
scheduler, ``filter_by_cumulative_mask``) and rules without this rate keep the general path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from ..masking.broadcast import AGGREGATIONS, unit_vectors
from ..masking.layout import ParamLayout

__all__ = ["SEPARABLE_AGGREGATIONS", "SeparableMeasure", "divide_by_soft_rates_", "same_bits",
           "separable_measures", "usable_coefficients"]

#: aggregations under which a monotone function of ``P`` is the aggregation of the function
SEPARABLE_AGGREGATIONS = {name: AGGREGATIONS[name] for name in ("min", "max")}

#: ``(output vector (units, 1, …) or (units,), input vector (1, inputs, …) or None)``
SeparableMeasure = tuple[torch.Tensor, torch.Tensor | None]


def _layer_vectors(layout: ParamLayout, unit: Mapping[str, torch.Tensor]) -> list[SeparableMeasure]:
    """The vectors of a layout's weight (``masking.broadcast.unit_vectors``), then of its bias if it
    has one (the engine's entry order)."""
    vectors = [unit_vectors(layout, unit)]
    if layout.bias is not None:
        vectors.append((unit[layout.out_key], None))
    return vectors


def _constant(factor: torch.Tensor) -> torch.Tensor | None:
    """The one value of ``factor`` as a 0-d tensor when every element equals it and it is ``≥ 0``."""
    value = factor.reshape(-1)[0]
    return value if bool(((factor == value).all()) & (value >= 0)) else None


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` have one shape, one dtype and the same bits (NaN payloads and the
    sign of zero included); any layout (expanded views too)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.numel() == 0:
        return True
    return torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def separable_measures(layouts: Sequence[ParamLayout], unit: Mapping[str, torch.Tensor], aggregation: str,
                       measures: Sequence[torch.Tensor], factors: Sequence[torch.Tensor] | None
                       ) -> dict[int, SeparableMeasure]:
    """``{entry index: vectors}`` for the entries whose stored ``measures[index]`` (``P``, factors
    folded in) the vectors rebuild bit for bit (see module doc); ``{}`` for an aggregation other
    than ``min`` and ``max``.

    :param layouts: the model's ``param_layouts``; the entries are their weights, each followed
        by its bias if any (``RateEngine.entries``' order), and ``measures`` their ``P``.
    :param unit: the rule's per-unit measure; ``aggregation``: the rule's.
    :param factors: the rule's per-parameter factors in the same order, or ``None``.
    """
    agg = SEPARABLE_AGGREGATIONS.get(aggregation)
    if agg is None:
        return {}
    vectors = [v for layout in layouts for v in _layer_vectors(layout, unit)]
    if len(vectors) != len(measures) or (factors is not None and len(factors) != len(measures)):
        return {}
    found: dict[int, SeparableMeasure] = {}
    with torch.no_grad():
        for index, ((out, inputs), measure) in enumerate(zip(vectors, measures)):
            if measure.numel() == 0:  # nothing to divide (a layer with no inputs)
                continue
            if factors is not None:
                value = _constant(factors[index])
                if value is None:
                    continue
                out, inputs = out * value, None if inputs is None else inputs * value
            rebuilt = out if inputs is None else agg(out, inputs)
            if rebuilt.dim() == measure.dim() and same_bits(rebuilt.expand_as(measure), measure):
                # copies: the stored P was one too, so a later in-place change of the model's
                # per-unit buffers does not reach this experience's rates either
                found[index] = (_shared(out, found), None if inputs is None else inputs.clone())
    return found


def _shared(out: torch.Tensor, found: Mapping[int, SeparableMeasure]) -> torch.Tensor:
    """A copy of ``out``; a view of an earlier entry's output vector when that one has the same
    bits (a layer's bias and its weight; also another layer's equal vector, whose ``k`` differs, so
    :func:`divide_by_soft_rates_`, keyed by memory and ``k``, still forms its own divisor): a layer's
    weight and bias then form their divisor once."""
    for earlier, _ in found.values():
        if earlier.numel() == out.numel() and same_bits(earlier.reshape(-1), out.reshape(-1)):
            return earlier.view(out.shape)
    return out.clone()


def usable_coefficients(coefficients: Sequence[torch.Tensor]) -> bool:
    """Whether every ``k`` is finite and positive (one host read each; CPU tensors): the bits of
    the per-vector divisor are those of the stored ``P``'s only then. With ``k = inf`` a zero of one
    vector gives ``0·inf = NaN`` where the aggregated ``P`` is positive (``max``), with ``k = 0``
    an infinite importance gives ``inf·0`` where ``P`` is finite (``min``), and a negative ``k``
    would turn ``min`` into ``max``; the engine then divides by the stored ``P`` for the step."""
    return all(0.0 < float(k) < math.inf for k in coefficients)


def divide_by_soft_rates_(grads: Sequence[torch.Tensor], vectors: Sequence[SeparableMeasure],
                          coefficients: Sequence[torch.Tensor], aggregation: str) -> None:
    """``grad ← grad / (1 + P·k)`` in place for each gradient, with ``P`` given by its vectors and
    ``k`` (a 0-d tensor) by ``coefficients``: the same bits as dividing by ``1 + P·k`` formed from
    the stored ``P`` (module doc) when every ``k`` is finite and positive (:func:`usable_coefficients`).
    Shapes: each gradient as its parameter; the vectors broadcast to it. Entries whose output
    vectors are one memory (a layer's weight and bias, :func:`separable_measures`) and whose ``k``
    is one tensor form ``1 + out·k`` once (the same elements, so the same bits)."""
    agg = SEPARABLE_AGGREGATIONS[aggregation]
    formed: dict[tuple[int, int, int], torch.Tensor] = {}  # a layer's weight and bias share one
    for grad, (out, inputs), k in zip(grads, vectors, coefficients):
        shared = (out.data_ptr(), out.numel(), id(k))
        if shared not in formed:
            formed[shared] = torch.mul(out, k).add_(1.0)
        divisor = formed[shared]
        if divisor.shape != out.shape:
            divisor = divisor.view(out.shape)
        if inputs is not None:
            divisor = agg(divisor, torch.mul(inputs, k).add_(1.0))
        grad.div_(divisor)

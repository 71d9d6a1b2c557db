"""The HAT gate: annealed sigmoid masks and the embedding-gradient compensation.

Serrà et al. (2018), "Overcoming catastrophic forgetting with hard attention to the task":

* Eq. (1): the mask of layer l for task t is ``m_l = σ(s · e_l)``.
* Eq. (3): during an epoch of B batches the scale is annealed,
  ``s = 1/s_max + (s_max − 1/s_max) · (b − 1)/(B − 1)`` for ``b = 1..B``.
* Eq. (4): the gradient of the embedding is compensated by
  ``(s_max / s) · (cosh(clamp(s·e, −θ, θ)) + 1) / (cosh(e) + 1)``.

Deviation from CLArena: the reference feeds Lightning's 0-based ``batch_idx`` into the
formula, so the first batch of every epoch gets a negative ``s`` (an inverted mask and a
negative compensation). Here ``b`` is 1-based, so ``s`` runs exactly from ``1/s_max`` on
the first batch to ``s_max`` on the last (see ``docs/deviations.md``).

Subnormal floats (deviation H16 of ``docs/deviations.md``): at gate scales near ``s_max`` the
mask of a unit the task does not use saturates, ``σ(s·e) ≈ e^{s·e}``, and reaches the float32
subnormal range (``|x| < 1.18e-38``) for ``s·e < −87.3``; so do its gradient ``σ(1 − σ)`` and
the products of such masks with activations and gradients, and subnormal arithmetic is slow
on many CPUs. :func:`soft_mask` returns exactly 0, with gradient exactly 0, where
``σ(s·e) <`` :data:`MASK_FLOOR` (``s·e <`` :data:`SCALED_EMBEDDING_FLOOR`), and at least
:data:`KEPT_MASK_MINIMUM` elsewhere (values below it are raised to it; their gradient is that
of ``σ``); values from ``1e-15`` up are ``torch.sigmoid``'s bit for bit, and every gradient is
``torch.sigmoid``'s bit for bit but those whose float32 value would be below ``2 · 1.18e-38`` (set to 0). :func:`compensate_embedding_gradient_` leaves 0
where the compensated gradient would be below
:data:`~avalanche_fgadahat.masking.subnormals.GRADIENT_FLOOR`.
"""

from __future__ import annotations

import functools
import math

import torch

from .subnormals import GRADIENT_FLOOR, product_below, zero_where_product_below

#: a float, or a 0-d tensor holding its float32 value
Scalar = float | torch.Tensor

#: Soft-mask values below this are exactly 0, with zero gradient. Why 1e-30: the compensated
#: embedding gradient of a unit (HAT Eq. 4) is ``s_max · σ(1 − σ) · (cosh(clamp(s·e, ±θ)) + 1) /
#: (cosh e + 1)`` per unit of ``∂L/∂m``; below the floor it is less than ``2 · 1e-30 · (cosh θ + 1)
#: = 5.2e-9`` times that of a unit that is not saturated (``s_max / (2 (cosh e + 1))``) at the
#: default θ = 50 — under float32's relative precision (6e-8), so no flushed unit's embedding
#: would have moved by a resolvable amount. A larger floor would cut gradients the compensation
#: restores in full (it does so up to ``σ ≈ e^{−θ} ≈ 2e-22``). The forward change is at most
#: ``1e-30 · |h|`` per unit, and the stored mask ``1[e > 0]`` does not read ``σ``. Kept values
#: (``≥ 1e-30``) leave 1e8 of headroom above the subnormal range for their products with
#: activations and gradients.
MASK_FLOOR = 1e-30
#: ``logit(MASK_FLOOR) = ln(1e-30) ≈ −69.08``: the gate flushes where ``s·e`` is below it.
SCALED_EMBEDDING_FLOOR = math.log(MASK_FLOOR)
#: A kept mask value below this is raised to it in the forward pass; its gradient stays
#: ``σ(1 − σ)`` of the true ``σ`` (the derivative the unraised gate has, so the embedding learns
#: exactly as before). Why: the network multiplies the mask with its activations, with the
#: gradients flowing back through the gate, and (LRP, weight gradients between two such units)
#: with another mask; at ``1e-30`` those products are subnormal for factors below ``1e-8``, at
#: ``1e-15`` only below ``1.2e-23``, and the product of two masks is at least ``1e-30``. What it
#: changes: a unit at ``σ < 1e-15`` adds at most ``1e-15 · |h · w|`` to the next layer (1e-7 of
#: float32's resolution), its weights' gradients are ``1e-15 · ∂L/∂(h·m)·x`` instead of ``σ ·`` that
#: (an Adam update of at most ``lr · 1e-15 · |∂L/∂(h·m)·x| / ε``), the regulariser and ``R_l``
#: move by ``1e-15`` per such unit and FG-AdaHAT's step importance of the unit (× the mask) by at most 1e-15.
KEPT_MASK_MINIMUM = 1e-15

#: Smallest nonzero float32 gradient the gate's backward writes (twice the smallest normal).
_GATE_GRADIENT_FLOOR = 2 * torch.finfo(torch.float32).tiny


@functools.lru_cache(maxsize=16)
def _below(floor: float, dtype: torch.dtype) -> float:
    """The largest ``dtype`` value below ``floor`` (as ``dtype``): ``threshold(x, it, −inf)`` sends to
    ``−inf`` exactly the ``x`` of that dtype with ``x < floor`` in ``dtype``'s comparison."""
    value = torch.tensor(floor, dtype=dtype)
    return float(torch.nextafter(value, torch.tensor(-math.inf, dtype=dtype)))


def annealed_scale(batch: int, num_batches: int, s_max: float) -> float:
    """Gate scale ``s`` of HAT Eq. (3) for the 1-based ``batch`` of ``num_batches``.

    With a single batch per epoch the annealing has no room, and ``s_max`` is used.
    """
    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches}")
    if not 1 <= batch <= num_batches:
        raise ValueError(f"batch must be in 1..{num_batches}, got {batch}")
    if num_batches == 1:
        return float(s_max)
    return 1.0 / s_max + (s_max - 1.0 / s_max) * (batch - 1) / (num_batches - 1)


class _FlushedGate(torch.autograd.Function):
    """``m = σ(s · e)``: 0 below :data:`MASK_FLOOR`, raised to :data:`KEPT_MASK_MINIMUM` below that
    (module doc). Backward: ``∂L/∂e = s · σ(1 − σ) · ∂L/∂m`` with the true ``σ``, the
    same float32 operations as autograd's for ``torch.sigmoid(s * e)`` (``aten.sigmoid_backward``,
    then the product with ``s``), with ``∂L/∂m`` zeroed first wherever either product would
    fall below ``2 · 1.18e-38`` (and where ``m`` is 0 or 1: the gradient is 0 there anyway)."""

    @staticmethod
    def forward(ctx, embedding: torch.Tensor, scale: float) -> torch.Tensor:
        # s·e below the floor becomes −inf first, and σ(−inf) = 0 exactly: no sigmoid value below
        # the floor (subnormal or not) is computed, and σ is 0 exactly where the mask is flushed
        # (a kept σ is at least σ(floor) ≈ 1e-30)
        scaled = scale * embedding
        sigma = torch.sigmoid(torch.nn.functional.threshold(scaled, _below(SCALED_EMBEDDING_FLOOR, scaled.dtype), -math.inf))
        ctx.save_for_backward(sigma)  # the backward reads σ itself, not the raised value
        ctx.scale = scale
        return sigma.clamp_min(KEPT_MASK_MINIMUM).masked_fill_(sigma == 0, 0.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (sigma,) = ctx.saved_tensors
        # |∂L/∂m · σ(1 − σ) · min(s, 1)| ≥ floor keeps both products (each factor ≤ 1) normal
        slope = (1.0 - sigma).mul_(sigma).mul_(min(ctx.scale, 1.0))
        grad = zero_where_product_below(grad, slope, _GATE_GRADIENT_FLOOR)
        return torch.ops.aten.sigmoid_backward(grad, sigma) * ctx.scale, None


def soft_mask(embedding: torch.Tensor, scale: float, guards: bool = True) -> torch.Tensor:
    """HAT Eq. (1): ``σ(s · e)``, exactly 0 (gradient 0) where it is below :data:`MASK_FLOOR` and
    at least :data:`KEPT_MASK_MINIMUM` elsewhere (module doc). ``embedding``: any shape; the result
    has its shape. ``guards=False`` (``subnormal_guards`` off for the model's device): the plain
    ``torch.sigmoid(s · e)`` and its autograd gradient, the reference's (H16a)."""
    if not guards:
        return torch.sigmoid(scale * embedding)
    return _FlushedGate.apply(embedding, scale)


def binary_mask(embedding: torch.Tensor) -> torch.Tensor:
    """The test-time mask ``1[e > 0]`` (``σ(s·e) > 0.5`` for any s > 0), detached."""
    return (embedding.detach() > 0).to(embedding.dtype)


def compensate_embedding_gradient_(
    embedding: torch.Tensor, scale: float, s_max: float, clamp_threshold: float, guards: bool = True
) -> None:
    """Multiply ``embedding.grad`` in place by the compensation factor of HAT Eq. (4); where
    the product would be below :data:`~avalanche_fgadahat.masking.subnormals.GRADIENT_FLOOR`
    the gradient is set to 0 instead (decided before the product is formed), unless
    ``guards=False`` (the plain product, H16a)."""
    grad = embedding.grad
    if grad is None:
        return
    factor = compensation_factor(embedding.detach(), scale, s_max / scale, clamp_threshold)
    if guards:
        grad.masked_fill_(product_below(grad, factor, 2 * GRADIENT_FLOOR), 0.0)
    grad.mul_(factor)


def compensation_factor(embedding: torch.Tensor, scale: Scalar, ratio: Scalar, clamp_threshold: Scalar) -> torch.Tensor:
    """HAT Eq. (4)'s factor ``(s_max/s) · (cosh(clamp(s·e, −θ, θ)) + 1) / (cosh(e) + 1)``, shaped as
    ``embedding`` (detached); ``ratio`` is ``s_max / s``. Python floats, or 0-d tensors of the
    embedding's dtype and device holding their float32 values (the fused step's compiled form)."""
    numerator = torch.cosh(torch.clamp(scale * embedding, -clamp_threshold, clamp_threshold)) + 1
    return numerator.div_(torch.cosh(embedding) + 1).mul_(ratio)


def compensated_gradient(embedding: torch.Tensor, grad: torch.Tensor, scale: Scalar, ratio: Scalar,
                         clamp_threshold: Scalar, guards: bool = True) -> torch.Tensor:
    """:func:`compensate_embedding_gradient_` out of place: the compensated ``grad`` (a new tensor).

    ``embedding`` (detached) and ``grad`` have one shape (the flat embeddings, ``(units,)``);
    ``scale`` is ``s``, ``ratio`` is ``s_max / s`` (computed in Python, as the in-place form does)
    and ``clamp_threshold`` is θ: Python floats, or 0-d tensors of the embedding's dtype and
    device holding their float32 values. The float32 operations and their order are the in-place
    form's, so the result has its bits (the fused step, ``fused_step=True``, compiles this form).
    ``guards=False``: no floor test (H16a).
    """
    factor = compensation_factor(embedding, scale, ratio, clamp_threshold)
    if not guards:
        return grad * factor
    return grad.masked_fill(product_below(grad, factor, 2 * GRADIENT_FLOOR), 0.0) * factor

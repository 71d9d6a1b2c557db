"""A training step's gradient work after the backward pass (``HATPlugin.after_backward``), eager or fused.

In order: every gradient but the task embeddings' is flushed below
:data:`~avalanche_fgadahat.masking.subnormals.GRADIENT_FLOOR` (``docs/deviations.md`` H16); the
masked-layer gradients are multiplied by the rule's rates (HAT Eq. 2, AdaHAT Eq. 8, FG-AdaHAT
Eq. 3; :class:`~.engine.RateEngine`) and, for rates other than 0 and 1, flushed again; the
embedding gradient is compensated (HAT Eq. 4, :func:`~avalanche_fgadahat.masking.gate.compensated_gradient`).
With ``guards=False`` (the ``subnormal_guards`` setting off for the model's device: by default on
a GPU; ``docs/deviations.md`` H16a) no flush and no floor test runs: the rates and the
compensation are the plain products, the reference's arithmetic.

**Eager** (``fused=False``, the default): ``flush_gradients_``, ``RateEngine.adjust_`` and
``compensate_embedding_gradient_``: 24 ATen calls per step for HAT, 42 for AdaHAT (``R_l`` and
``k`` included) on the benchmark's ``HATMLP(784, (256, 100, 64))``.

**Fused** (``fused_step=True``): the masked-layer gradients and the embedding gradient go through
one compiled function (:class:`~avalanche_fgadahat.masking.fusion.FusedKernel`), chosen by the
rule's form, that computes for each element the same float32 operations in the same order and
writes the result into the gradient in place (no temporary of a parameter's size: the eager
path's flushed copy and rate temporary are gone):

* constant rates (``hat``, ``hat_const_alpha``, ``adahat_no_reg``; ``hat_const_1`` has none):
  ``hardshrink(g) · a``, then ``hardshrink`` again unless every rate is 0 or 1;
* the soft rate of ``adahat`` and ``fgadahat``: ``hardshrink(hardshrink(g) / (P · k + 1))`` with
  ``k = (ε + R_l)/α`` of the layer (computed eagerly, as before: ``StepSignals``);
* the compensation: ``cosh``, ``clamp``, the division and the floor test of HAT Eq. 4. The scalars
  ``s``, ``s_max/s`` and θ enter as one float32 tensor, so a new ``s`` every step reuses the
  compiled code.

What stays per step around the compiled call: the heads' flush (two ``hardshrink``), the scalars'
tensor, and for the soft rate ``R_l`` and ``k``.

Left eager, and why: the gradients of parameters outside the masked layers (heads: their set and
shapes change from task to task, which would recompile); the rates of ``hat_random`` (fresh noise:
a compiled generator draws other numbers) and ``adahat_no_sum`` (no list form), whose kernel then
only compensates; a step without an embedding gradient (the eager path). The result is the same,
bit for bit, as the eager path's (``tests/test_fused_step.py``).
"""

from __future__ import annotations

import torch

from ..masking.fusion import FusedKernel
from ..masking.gate import compensate_embedding_gradient_, compensated_gradient
from ..masking.subnormals import GRADIENT_FLOOR, flush_gradients_
from ..models.base import HATBackbone
from .base import StepSignals
from .engine import RateEngine

__all__ = ["adjust_step_gradients_"]


def _flushed(grad: torch.Tensor, guards: bool = True) -> torch.Tensor:
    """``grad`` with every element of magnitude at most ``GRADIENT_FLOOR`` at 0 (``flush_gradients_``);
    ``grad`` itself when ``guards`` is off (H16a)."""
    return torch.nn.functional.hardshrink(grad, GRADIENT_FLOOR) if guards else grad


def _compensate(embedding: torch.Tensor, grad: torch.Tensor, scalars: torch.Tensor, guards: bool = True) -> None:
    scale, ratio, threshold = scalars.unbind()
    grad.copy_(compensated_gradient(embedding, grad, scale, ratio, threshold, guards))


def _constant_rates(grads: list[torch.Tensor], rates: list[torch.Tensor], reflush: bool, embedding: torch.Tensor,
                    embedding_grad: torch.Tensor, scalars: torch.Tensor, guards: bool = True) -> None:
    for grad, rate in zip(grads, rates):
        adjusted = _flushed(grad, guards) * rate
        grad.copy_(_flushed(adjusted, guards) if reflush else adjusted)
    _compensate(embedding, embedding_grad, scalars, guards)


def _soft_rates(grads: list[torch.Tensor], measures: list[torch.Tensor], coefficients: list[torch.Tensor],
                embedding: torch.Tensor, embedding_grad: torch.Tensor, scalars: torch.Tensor,
                guards: bool = True) -> None:
    for grad, measure, k in zip(grads, measures, coefficients):
        grad.copy_(_flushed(_flushed(grad, guards) / (measure * k + 1.0), guards))
    _compensate(embedding, embedding_grad, scalars, guards)


#: the fused kernels, one compiled function each (compiled on first use, once per process and network)
CONSTANT_RATES_KERNEL = FusedKernel(_constant_rates, "flush + constant rates + compensation")
SOFT_RATES_KERNEL = FusedKernel(_soft_rates, "flush + soft rates + compensation")
COMPENSATION_KERNEL = FusedKernel(_compensate, "embedding-gradient compensation")


def adjust_step_gradients_(model: HATBackbone, engine: RateEngine, signals: StepSignals, scale: float,
                           s_max: float, clamp_threshold: float, fused: bool = False, guards: bool = True) -> None:
    """The step's gradient work after the backward pass (module doc), in place on ``.grad``.

    :param model: the HAT network being trained (its gradients are those of this step).
    :param engine: the rate engine prepared for the experience; ``signals``: this step's.
    :param scale: the step's gate scale ``s``; ``s_max``, ``clamp_threshold``: the settings.
    :param fused: run the fused kernels (``fused_step=True``); same numbers as eager.
    :param guards: run H16's flushes (``subnormal_guards`` for the model's device; off: the
        reference's arithmetic, H16a). The compiled kernels take it as a constant (one
        compilation per value).
    """
    embedding = model.task_embeddings
    operands = engine.fused_operands(signals) if fused and embedding.grad is not None else None
    if operands is not None and not all(param.grad.is_contiguous() for param in operands[0]):
        operands = None  # e.g. a gradient a user set to an expanded tensor: the kernel writes in place
    if operands is None:  # eager; or a fused step whose rates have no fused form
        if guards:
            flush_gradients_(engine.non_embedding_parameters(model))
        engine.adjust_(signals, guards)
        if fused and embedding.grad is not None:
            _compensate_fused_(embedding, scale, s_max, clamp_threshold, guards)
        else:
            compensate_embedding_gradient_(embedding, scale, s_max, clamp_threshold, guards)
        return
    params, values, coefficients = operands
    fused_ids = {id(param) for param in params}
    if guards:
        flush_gradients_(p for p in engine.non_embedding_parameters(model) if id(p) not in fused_ids)
    grads = [param.grad for param in params]
    scalars = _scalars(embedding, scale, s_max, clamp_threshold)
    with torch.no_grad():
        if coefficients is None:
            reflush = not engine.rule.binary_rates
            CONSTANT_RATES_KERNEL(grads, values, reflush, embedding.detach(), embedding.grad, scalars, guards)
        else:
            SOFT_RATES_KERNEL(grads, values, coefficients, embedding.detach(), embedding.grad, scalars, guards)


def _scalars(embedding: torch.Tensor, scale: float, s_max: float, clamp_threshold: float) -> torch.Tensor:
    """``[s, s_max/s, θ]`` in the embedding's dtype (one tensor on its device). On CUDA the values
    go through pinned memory and a non-blocking copy, so the step waits for no queued kernel."""
    values = [scale, s_max / scale, clamp_threshold]
    device = embedding.device
    if device.type == "cuda":
        return torch.tensor(values, dtype=embedding.dtype, pin_memory=True).to(device, non_blocking=True)
    return torch.tensor(values, dtype=embedding.dtype, device=device)


def _compensate_fused_(embedding: torch.nn.Parameter, scale: float, s_max: float, clamp_threshold: float,
                       guards: bool = True) -> None:
    with torch.no_grad():
        COMPENSATION_KERNEL(embedding.detach(), embedding.grad, _scalars(embedding, scale, s_max, clamp_threshold),
                            guards)

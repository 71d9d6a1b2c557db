"""FG-AdaHAT importances computed from what the training step already produced.

No extra forward or backward pass: each type reads, after ``optimizer.step()``, the
updated weights, their ``.grad`` (this step's gradients, already multiplied by the
adjustment rate, as in CLArena) and the activations recorded during the step's forward
pass (post-mask, post-ReLU). Per unit ``i`` of unit group ``l`` (see ``wiring.py`` for
which weights are "input" and "output" weights, conv kernels, flattening and ResNet):

* ``W^in_l[i]`` = Σ over the unit's input weights, ``W^out_l[i]`` = Σ over its output
  weights, of ``|w|``, ``|∂L/∂w|`` or ``(∂L/∂w)²``;
* ``A_l[i]`` = mean of ``|activation|`` over every dim but the unit dim (batch, and
  spatial positions of conv maps).

CBP = Continual Backpropagation (Dohare et al., Nature 2024): its "adaptation" is the
reciprocal of the input-weight magnitude and its "adaptive contribution" is
``A · Σ|W^out| / Σ|W^in|``. The reciprocal is taken of ``max(Σ|W^in|, tiny)`` so a unit
whose input weights are all zero gives a huge but finite value instead of ``inf``
(which would turn the step's min-max normalisation into NaN).

AFI (Activation Fisher Information) is ``Σ (∂L/∂W^in)² · A`` as at CLArena HEAD; the
May-2025 code that produced the paper's numbers dispatched it to ICU's function
(``Σ|W^in| · A``), see ``docs/importance.md``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..masking.subnormals import zero_where_product_below
from .registry import StepContext, register_importance
from .wiring import WeightTransform, sum_input_weights, sum_output_weights


def _detached(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``, detached where an op on it would be recorded by autograd (no op otherwise:
    the importances run under ``torch.no_grad()``, with detached step tensors)."""
    return tensor.detach() if tensor.requires_grad and torch.is_grad_enabled() else tensor


def weight_abs(param: nn.Parameter) -> torch.Tensor:
    """``|W|`` of a parameter (detached, same shape)."""
    return _detached(param).abs()


def gradient(param: nn.Parameter) -> torch.Tensor:
    """This step's gradient (zeros if the parameter received none)."""
    grad = param.grad
    return torch.zeros_like(param.detach()) if grad is None else _detached(grad)


def gradient_abs(param: nn.Parameter) -> torch.Tensor:
    """``|∂L/∂W|`` of the step (same shape as the parameter)."""
    return gradient(param).abs()


def gradient_square(param: nn.Parameter) -> torch.Tensor:
    """``(∂L/∂W)²`` of the step (same shape as the parameter)."""
    return gradient(param).square()


def activation_abs_mean(ctx: StepContext, key: str) -> torch.Tensor:
    """``A_l``: mean ``|activation|`` over every dim but dim 1 (the unit dim)."""
    if key not in ctx.activations:
        raise ValueError(
            f"no recorded activation for unit group {key!r}: the model must record "
            "activations during training (model.begin_training(task, record_activations=True))"
        )
    activation = _detached(ctx.activations[key])
    dims = [d for d in range(activation.dim()) if d != 1]
    return activation.abs().mean(dim=dims)


#: products of importance factors below this are 0 (twice the smallest normal float32)
_PRODUCT_FLOOR = 2 * torch.finfo(torch.float32).tiny


def product(a: torch.Tensor, b: torch.Tensor, guards: bool = True) -> torch.Tensor:
    """``a · b`` of two per-unit factors (``b ≥ 0``), with 0 wherever the product would be
    subnormal, decided before it is formed (``docs/deviations.md`` H16). Used where the first
    factor is a squared-gradient sum: the flushed gradients are ``0`` or above ``1e-16``, so
    their squares go down to ``1e-32``, and times the mean activation of a unit whose mask is
    near ``1e-15`` the product fell into the subnormal range (1–3 values per step on the
    benchmark MLP). Such values are below the accumulator's ``RAW_IMPORTANCE_FLOOR`` (1e-30)
    and counted as 0 there anyway, so the accumulated importance keeps its bits; every other
    element is the plain product's. The weight-magnitude products (ICU, CU, CBP) keep the plain
    product: no subnormal was measured there, and the guard costs five small ops per unit group.
    ``guards=False`` (``StepContext.subnormal_guards``, H16a): the plain product."""
    if not guards:
        return a * b
    return zero_where_product_below(a, b, _PRODUCT_FLOOR) * b


def _inputs(transform: WeightTransform) -> Callable[[StepContext, str], torch.Tensor]:
    return lambda ctx, key: sum_input_weights(ctx.model, key, transform)


def _outputs(transform: WeightTransform) -> Callable[[StepContext, str], torch.Tensor]:
    return lambda ctx, key: sum_output_weights(ctx.model, key, ctx.task, transform)


def _reciprocal(value: torch.Tensor) -> torch.Tensor:
    return value.clamp_min(torch.finfo(value.dtype).tiny).reciprocal()


_registered: list[str] = []


def _register(
    name: str,
    short_name: str,
    formula: str,
    per_unit: Callable[[StepContext, str], torch.Tensor],
    needs_activations: bool = False,
) -> None:
    def importance(ctx: StepContext) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {key: per_unit(ctx, key) for key in ctx.model.unit_sizes}

    importance.__name__ = name
    importance.__doc__ = f"{short_name}: {formula}"
    register_importance(
        name, short_name=short_name, formula=formula, needs_activations=needs_activations
    )(importance)
    _registered.append(name)


_w_in, _w_out = _inputs(weight_abs), _outputs(weight_abs)
_g_in, _g_out = _inputs(gradient_abs), _outputs(gradient_abs)
_g2_in, _g2_out = _inputs(gradient_square), _outputs(gradient_square)

_register("input_weight_abs_sum", "—", "Σ|W^in|", _w_in)
_register("output_weight_abs_sum", "—", "Σ|W^out|", _w_out)
_register("input_weight_gradient_abs_sum", "IG", "Σ|∂L/∂W^in|", _g_in)
_register("output_weight_gradient_abs_sum", "OG", "Σ|∂L/∂W^out|", _g_out)
_register("activation_abs", "—", "A", activation_abs_mean, needs_activations=True)
_register(
    "input_weight_abs_sum_x_activation_abs",
    "ICU",
    "Σ|W^in| · A",
    lambda ctx, key: _w_in(ctx, key) * activation_abs_mean(ctx, key),
    needs_activations=True,
)
_register(
    "output_weight_abs_sum_x_activation_abs",
    "CU",
    "Σ|W^out| · A",
    lambda ctx, key: _w_out(ctx, key) * activation_abs_mean(ctx, key),
    needs_activations=True,
)
_register("input_weight_gradient_square_sum", "—", "Σ(∂L/∂W^in)²", _g2_in)
_register("output_weight_gradient_square_sum", "—", "Σ(∂L/∂W^out)²", _g2_out)
_register(
    "input_weight_gradient_square_sum_x_activation_abs",
    "AFI",
    "Σ(∂L/∂W^in)² · A",
    lambda ctx, key: product(_g2_in(ctx, key), activation_abs_mean(ctx, key), ctx.subnormal_guards),
    needs_activations=True,
)
_register(
    "output_weight_gradient_square_sum_x_activation_abs",
    "—",
    "Σ(∂L/∂W^out)² · A",
    lambda ctx, key: product(_g2_out(ctx, key), activation_abs_mean(ctx, key), ctx.subnormal_guards),
    needs_activations=True,
)
_register("cbp_adaptation", "CBP adaptation", "1 / Σ|W^in|", lambda ctx, key: _reciprocal(_w_in(ctx, key)))
_register(
    "cbp_adaptive_contribution",
    "CBP adaptive contribution",
    "Σ|W^out| · A / Σ|W^in|",
    lambda ctx, key: _w_out(ctx, key) * activation_abs_mean(ctx, key) * _reciprocal(_w_in(ctx, key)),
    needs_activations=True,
)

#: The in-pass importance types, in registration order (the reference's order).
IN_PASS_TYPES: tuple[str, ...] = tuple(_registered)

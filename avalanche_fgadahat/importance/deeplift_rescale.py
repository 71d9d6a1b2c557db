"""DeepLIFT's Rescale rule for elementwise nonlinearities, as an autograd function.

DeepLIFT (Shrikumar et al., "Learning important features through propagating activation
differences", ICML 2017) replaces the derivative of each elementwise nonlinearity
``y = f(z)`` by the **Rescale multiplier** of the input against a reference input:

``m = Δy / Δz``, ``Δz = z(x) − z(x̄)``, ``Δy = f(z(x)) − f(z(x̄))``, and ``m = f′(z)`` (the
ordinary gradient) where ``|Δz| < 10⁻¹⁰``

— the formula of Captum's DeepLIFT backward hook (``captum.attr._core.deep_lift.nonlinear``).
:func:`rescale_elementwise` applies ``f`` with that backward to a batch
``cat([inputs, references])``, so one backward of the whole batch gives DeepLIFT's
multipliers for every (input, reference) pair; the ``"rescale"`` forward of
:class:`~avalanche_fgadahat.importance.forward_wrapper.TaskForward` routes every relu call
site and every :data:`ELEMENTWISE_NONLINEAR_MODULES` module through it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

#: Captum DeepLIFT's threshold below which a Rescale multiplier falls back to the gradient.
DEEPLIFT_EPSILON = 1e-10

#: Elementwise nonlinear modules that get DeepLIFT's Rescale rule (Captum's ``nonlinear``).
ELEMENTWISE_NONLINEAR_MODULES = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus)


def _halves_difference(tensor: torch.Tensor) -> torch.Tensor:
    first, second = tensor.chunk(2)
    difference = first - second
    return torch.cat([difference, difference])


class _RescaleElementwise(torch.autograd.Function):
    """``y = fn(z)`` whose backward is DeepLIFT's Rescale multiplier (Captum ``nonlinear``).

    The batch is ``cat([inputs, references])``; for both halves the gradient becomes
    ``grad · Δy / Δz`` with ``Δ = input half − reference half``, or the ordinary gradient
    where ``|Δz| < 1e-10``.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        ctx.fn = fn
        ctx.save_for_backward(z)
        return fn(z)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (z,) = ctx.saved_tensors
        with torch.enable_grad():
            leaf = z.detach().requires_grad_()
            y = ctx.fn(leaf)
            (plain,) = torch.autograd.grad(y, leaf, grad)
        delta_in = _halves_difference(z)
        delta_out = _halves_difference(y.detach())
        return torch.where(delta_in.abs() < DEEPLIFT_EPSILON, plain, grad * delta_out / delta_in), None


def rescale_elementwise(fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """Apply ``fn`` with DeepLIFT's Rescale rule in the backward (see :class:`_RescaleElementwise`)."""
    if z.shape[0] % 2:
        raise ValueError("DeepLIFT rescale needs a batch of cat([inputs, references]) (even size)")
    return _RescaleElementwise.apply(z, fn)


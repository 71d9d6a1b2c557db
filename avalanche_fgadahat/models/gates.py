"""The gate operations a HAT network's forward applies (HAT, Serrà et al. 2018, Eq. 1–2).

* :func:`apply_gate`: ``h · m``, a unit group's mask broadcast over the trailing (spatial) dims;
* :func:`masked_conv`: ``conv(x) · m`` for a convolution gated right after it, computed in
  training as ``conv_{W·m, b·m}(x)`` (the mask folded into the kernel);
* :func:`record_activation`: hands a unit group's activation to the open training step.

Both the hand-written subclasses of :class:`~.base.HATBackbone` and the networks rewritten by
:func:`~.conversion.to_hat` (whose ``torch.fx`` graphs call these functions) use them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn


def apply_gate(h: torch.Tensor, masks: Mapping[str, torch.Tensor], key: str, extra_dims: int) -> torch.Tensor:
    """``h · m_key``: ``h`` ``(B, units, *spatial)`` times the mask ``(units,)`` broadcast over
    ``extra_dims`` trailing dims (0 for ``nn.Linear``, 1 for ``nn.Conv1d``, 2 for ``nn.Conv2d``),
    or times a per-sample mask ``(B, units)`` (task inference: each sample under its own task)."""
    mask = masks[key]
    if mask.dim() == 2:
        return h * mask.view(*mask.shape, *([1] * extra_dims))
    if extra_dims:
        mask = mask.view(1, -1, *([1] * extra_dims))
    return h * mask


def masked_conv(conv: nn.Module, x: torch.Tensor, masks: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    """``conv(x) · m_key`` for a ``nn.Conv1d``/``nn.Conv2d`` whose output is gated directly.

    In training the mask is folded into the kernel: ``conv_{W·m, b·m}(x) = conv(x) · m`` (a
    convolution is linear in its kernel and bias, and output channel ``c`` has its own ``W[c],
    b[c]``), so the product costs ``C_out·C_in·k²`` multiplications instead of ``B·C_out·H·W``
    and no extra feature map is kept for the backward pass (``docs/benchmark.md``). In eval mode
    (testing, the attribution passes) the conv module itself runs and its output is gated, so
    forward hooks on the conv see its pre-mask output.
    """
    if not conv.training:
        return apply_gate(conv(x), masks, key, len(conv.kernel_size))
    mask = masks[key]
    weight = conv.weight * mask.view(-1, *([1] * (conv.weight.dim() - 1)))
    bias = conv.bias * mask if conv.bias is not None else None
    return conv._conv_forward(x, weight, bias)


def record_activation(record: Callable[[str, torch.Tensor], None], key: str, h: torch.Tensor) -> torch.Tensor:
    """Hand ``h`` (a unit group's activation, after its gate and nonlinearity) to ``record``; return it."""
    record(key, h)
    return h

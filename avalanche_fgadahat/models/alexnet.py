"""The AlexNet-like conv net of the HAT paper (Serrà et al. 2018, Sec. 4 / appendix), built by
the conversion."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._validation import check_number
from .builders import BuiltHATModel


class AlexNetwork(nn.Module):
    """The plain network of :class:`HATAlexNet`: per conv ``dropout(pool(relu(conv(h))))``,
    flatten, per linear ``dropout(relu(fc(h)))``; ``forward(x) → (B, features)``, no head."""

    def __init__(self, input_shape: Sequence[int], conv_channels: Sequence[int], kernel_sizes: Sequence[int],
                 fc_sizes: Sequence[int], conv_dropout: float, fc_dropout: float) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.convs = nn.ModuleList()
        for out_channels, kernel in zip(conv_channels, kernel_sizes):
            self.convs.append(nn.Conv2d(channels, out_channels, kernel))
            height, width = (height - kernel + 1) // 2, (width - kernel + 1) // 2
            if height < 1 or width < 1:
                raise ValueError(f"input_shape {tuple(input_shape)} is too small for the conv stack")
            channels = out_channels
        fan_in = channels * height * width
        self.fcs = nn.ModuleList()
        for width_fc in fc_sizes:
            self.fcs.append(nn.Linear(fan_in, width_fc))
            fan_in = width_fc
        #: the width of the output
        self.feature_size = fan_in
        self.pool = nn.MaxPool2d(2)
        self.conv_dropouts = nn.ModuleList(
            nn.Dropout(conv_dropout if i < 2 else fc_dropout) for i in range(len(conv_channels))
        )
        self.fc_dropout = nn.Dropout(fc_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, C, H, W)`` → ``(B, feature_size)``."""
        h = x
        for conv, dropout in zip(self.convs, self.conv_dropouts):
            h = dropout(self.pool(torch.relu(conv(h))))
        h = h.flatten(1)
        for fc in self.fcs:
            h = self.fc_dropout(torch.relu(fc(h)))
        return h


class HATAlexNet(BuiltHATModel):
    """Three masked convs (64 4×4, 128 3×3, 256 2×2), each ReLU + 2×2 max-pool, then two
    masked fully connected layers of 2048 units. Dropout 0.2 after the first two conv
    blocks and 0.5 after the rest, as in the HAT paper. Sizes follow ``input_shape``.
    Built as :func:`~.conversion.to_hat` converts any network (:class:`AlexNetwork`); unit
    groups ``conv0``, …, ``fc0``, …; layers ``model.convs[i]``, ``model.fcs[i]``. In training
    each conv's mask is folded into its kernel (:func:`~.gates.masked_conv`).

    :param input_shape: ``(channels, height, width)`` of one input image.
    """

    NETWORK = AlexNetwork
    LEGACY_LAYERS = ("convs", "fcs", "pool", "conv_dropouts", "fc_dropout")

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        *,
        multihead: bool = True,
        conv_channels: Sequence[int] = (64, 128, 256),
        kernel_sizes: Sequence[int] = (4, 3, 2),
        fc_sizes: Sequence[int] = (2048, 2048),
        conv_dropout: float = 0.2,
        fc_dropout: float = 0.5,
    ) -> None:
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (channels, height, width), got {tuple(input_shape)}")
        if len(conv_channels) != len(kernel_sizes):
            raise ValueError("conv_channels and kernel_sizes must have the same length")
        check_number("conv_dropout", conv_dropout, minimum=0.0, maximum=1.0)
        check_number("fc_dropout", fc_dropout, minimum=0.0, maximum=1.0)
        network = AlexNetwork(input_shape, conv_channels, kernel_sizes, fc_sizes, conv_dropout, fc_dropout)
        super().__init__(network, network.feature_size, multihead=multihead)

    @classmethod
    def unit_names(cls, network: nn.Module) -> dict[str, str]:
        """``convs.<i>`` → ``conv<i>``, ``fcs.<i>`` → ``fc<i>``."""
        return {**{f"convs.{i}": f"conv{i}" for i in range(len(network.convs))},
                **{f"fcs.{i}": f"fc{i}" for i in range(len(network.fcs))}}

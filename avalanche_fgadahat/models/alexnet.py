"""The AlexNet-like conv net of the HAT paper (Serrà et al. 2018, Sec. 4 / appendix)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .._validation import check_number
from ..masking.layout import ParamLayout
from .base import HATBackbone


class HATAlexNet(HATBackbone):
    """Three masked convs (64 4×4, 128 3×3, 256 2×2), each ReLU + 2×2 max-pool, then two
    masked fully connected layers of 2048 units. Dropout 0.2 after the first two conv
    blocks and 0.5 after the rest, as in the HAT paper. Sizes follow ``input_shape``.

    :param input_shape: ``(channels, height, width)`` of one input image.
    """

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
        super().__init__(multihead=multihead)
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (channels, height, width), got {tuple(input_shape)}")
        if len(conv_channels) != len(kernel_sizes):
            raise ValueError("conv_channels and kernel_sizes must have the same length")
        check_number("conv_dropout", conv_dropout, minimum=0.0, maximum=1.0)
        check_number("fc_dropout", fc_dropout, minimum=0.0, maximum=1.0)
        channels, height, width = input_shape
        self.convs = nn.ModuleList()
        layouts, sizes, previous = [], {}, None
        for index, (out_channels, kernel) in enumerate(zip(conv_channels, kernel_sizes)):
            conv = nn.Conv2d(channels, out_channels, kernel)
            key = f"conv{index}"
            self.convs.append(conv)
            layouts.append(ParamLayout(f"convs.{index}", conv, key, previous))
            sizes[key] = out_channels
            height, width = (height - kernel + 1) // 2, (width - kernel + 1) // 2
            if height < 1 or width < 1:
                raise ValueError(f"input_shape {tuple(input_shape)} is too small for the conv stack")
            channels, previous = out_channels, key
        repeat, fan_in = height * width, channels * height * width
        self.fcs = nn.ModuleList()
        for index, width_fc in enumerate(fc_sizes):
            fc = nn.Linear(fan_in, width_fc)
            key = f"fc{index}"
            self.fcs.append(fc)
            layouts.append(ParamLayout(f"fcs.{index}", fc, key, previous, in_repeat=repeat))
            sizes[key] = width_fc
            previous, fan_in, repeat = key, width_fc, 1
        self.pool = nn.MaxPool2d(2)
        self.conv_dropouts = nn.ModuleList(
            nn.Dropout(conv_dropout if i < 2 else fc_dropout) for i in range(len(conv_channels))
        )
        self.fc_dropout = nn.Dropout(fc_dropout)
        self._finish_init(layouts, fan_in, sizes)

    def forward_features(self, x: torch.Tensor, masks: Mapping[str, torch.Tensor], task: int) -> torch.Tensor:
        """``x`` ``(B, C, H, W)`` → per conv ``pool(relu(conv(h) · m))`` (with dropout), flatten,
        per linear ``relu(fc(h) · m)`` → ``(B, fc_sizes[-1])``."""
        h = x
        for index, conv in enumerate(self.convs):
            key = f"conv{index}"
            h = torch.relu(self._masked_conv(key, conv, h, masks))
            self._record(key, h)
            h = self.conv_dropouts[index](self.pool(h))
        h = h.flatten(1)
        for index, fc in enumerate(self.fcs):
            key = f"fc{index}"
            h = torch.relu(self._gate(key, fc(h), masks))
            self._record(key, h)
            h = self.fc_dropout(h)
        return h

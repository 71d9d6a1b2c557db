"""Frozen copies of ``HATMLP``, ``HATAlexNet`` and ``HATResNet18`` as they were written by hand
(commit f5e1c8a), before they became builders on :func:`~avalanche_fgadahat.models.to_hat`.

``tests/test_builders.py`` checks that the builders' outputs, gradients and training runs are
bit-identical to these. Do not edit them: they are the regression reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from avalanche_fgadahat._validation import check_choice, check_number
from avalanche_fgadahat.masking.layout import ParamLayout
from avalanche_fgadahat.models.base import HATBackbone
from avalanche_fgadahat.models.per_task_norm import PerTaskNorm

BATCH_NORM_MODES = ("none", "per_task")


class _LegacyBackbone(HATBackbone):
    """The hand-written gate helpers the three networks used."""

    def _gate(self, key: str, pre_activation: torch.Tensor, masks: Mapping[str, torch.Tensor]) -> torch.Tensor:
        mask = masks[key]
        extra = self.gate_extra_dims[key]
        if extra:
            mask = mask.view(1, -1, *([1] * extra))
        return pre_activation * mask

    def _masked_conv(self, key, conv, x, masks):
        if not self.training:
            return self._gate(key, conv(x), masks)
        mask = masks[key]
        weight = conv.weight * mask.view(-1, *([1] * (conv.weight.dim() - 1)))
        bias = conv.bias * mask if conv.bias is not None else None
        return conv._conv_forward(x, weight, bias)


class LegacyHATMLP(_LegacyBackbone):
    """MLP whose every hidden layer is gated by a HAT mask.

    Per layer: ``h = ReLU(mask ⊙ (W h_prev + b))`` then optional dropout; the input is
    flattened first. The last hidden layer (``hidden_sizes[-1]`` units) is masked too, as
    in CLArena; the head on top is not.

    :param input_size: number of input features (e.g. ``28 * 28``).
    :param hidden_sizes: widths of the masked layers, input to output.
    :param multihead: one head per task (task-incremental) or one shared head.
    :param dropout: dropout probability after each activation (0 disables it).
    """

    def __init__(
        self,
        input_size: int = 28 * 28,
        hidden_sizes: Sequence[int] = (256, 100, 64),
        *,
        multihead: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(multihead=multihead)
        check_number("input_size", input_size, minimum=1, integer=True)
        if len(hidden_sizes) == 0:
            raise ValueError("hidden_sizes must hold at least one layer width, got ()")
        for width in hidden_sizes:
            check_number("hidden_sizes[i]", width, minimum=1, integer=True)
        check_number("dropout", dropout, minimum=0.0, maximum=1.0)
        self.input_size = input_size
        self.fc = nn.ModuleList()
        layouts, sizes, previous, fan_in = [], {}, None, input_size
        for index, width in enumerate(hidden_sizes):
            layer = nn.Linear(fan_in, width)
            self.fc.append(layer)
            key = f"fc{index}"
            layouts.append(ParamLayout(f"fc.{index}", layer, key, previous))
            sizes[key] = width
            previous, fan_in = key, width
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._finish_init(layouts, hidden_sizes[-1], sizes)

    def forward_features(self, x: torch.Tensor, masks: Mapping[str, torch.Tensor], task: int) -> torch.Tensor:
        """``x`` ``(B, ...)`` flattened, then per layer ``relu(fc(h) · m)`` → ``(B, hidden_sizes[-1])``."""
        h = x.flatten(1)
        for index, layer in enumerate(self.fc):
            key = f"fc{index}"
            h = torch.relu(self._gate(key, layer(h), masks))
            self._record(key, h)
            h = self.dropout(h)
        return h


class LegacyHATAlexNet(_LegacyBackbone):
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


class PerTaskBatchNorm2d(PerTaskNorm):
    """One ``BatchNorm2d`` per task label (:class:`~.per_task_norm.PerTaskNorm` on a fresh
    ``BatchNorm2d``); a task never trained passes through unnormalised."""

    def __init__(self, num_features: int) -> None:
        super().__init__(nn.BatchNorm2d(num_features))


class _Block(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, per_task_bn: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
        self.bn1 = PerTaskBatchNorm2d(out_channels) if per_task_bn else None
        self.bn2 = PerTaskBatchNorm2d(out_channels) if per_task_bn else None
        self.bn_shortcut = PerTaskBatchNorm2d(out_channels) if per_task_bn and self.shortcut is not None else None


class LegacyHATResNet18(_LegacyBackbone):
    """ResNet-18 (basic blocks, 2-2-2-2) with a HAT mask after every conv.

    :param input_shape: ``(channels, height, width)``; only ``channels`` matters.
    :param batch_norm: ``"none"`` (default, as the paper configs) or ``"per_task"``.
    :param small_input_stem: a 3×3 stride-1 stem without max-pool, for 32×32 inputs
        (``False`` = the torchvision 7×7 stride-2 stem with max-pool, as CLArena).
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        *,
        multihead: bool = True,
        batch_norm: str = "none",
        small_input_stem: bool = False,
        widths: Sequence[int] = (64, 128, 256, 512),
    ) -> None:
        super().__init__(multihead=multihead)
        check_choice("batch_norm", batch_norm, BATCH_NORM_MODES)
        per_task_bn = batch_norm == "per_task"
        channels = input_shape[0]
        if small_input_stem:
            self.conv1 = nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False)
            self.stem_pool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(channels, widths[0], 7, 2, 3, bias=False)
            self.stem_pool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = PerTaskBatchNorm2d(widths[0]) if per_task_bn else None
        layouts = [ParamLayout("conv1", self.conv1, "conv1", None)]
        sizes = {"conv1": widths[0]}
        self.blocks = nn.ModuleList()
        self.block_keys: list[tuple[str, str]] = []
        previous, in_channels = "conv1", widths[0]
        for stage, width in enumerate(widths):
            for index in range(2):
                stride = 2 if stage > 0 and index == 0 else 1
                block = _Block(in_channels, width, stride, per_task_bn)
                name = f"blocks.{len(self.blocks)}"
                key1, key2 = f"layer{stage + 1}_{index}_conv1", f"layer{stage + 1}_{index}_conv2"
                layouts.append(ParamLayout(f"{name}.conv1", block.conv1, key1, previous))
                layouts.append(ParamLayout(f"{name}.conv2", block.conv2, key2, key1))
                if block.shortcut is not None:
                    layouts.append(ParamLayout(f"{name}.shortcut", block.shortcut, key2, previous))
                sizes[key1], sizes[key2] = width, width
                self.blocks.append(block)
                self.block_keys.append((key1, key2))
                previous, in_channels = key2, width
        self.pool = nn.AdaptiveAvgPool2d(1)
        self._finish_init(layouts, in_channels, sizes)

    @staticmethod
    def _norm(norm: PerTaskBatchNorm2d | None, h: torch.Tensor, task: int) -> torch.Tensor:
        return h if norm is None else norm(h, task)

    def forward_features(self, x: torch.Tensor, masks: Mapping[str, torch.Tensor], task: int) -> torch.Tensor:
        """``x`` ``(B, C, H, W)`` → stem, four stages of two basic blocks (each conv's output,
        and the block sum, gated by its mask; shortcuts masked too), global average pool →
        ``(B, widths[-1])``."""
        h = torch.relu(self._gate("conv1", self._norm(self.bn1, self.conv1(x), task), masks))
        self._record("conv1", h)
        h = self.stem_pool(h)
        for block, (key1, key2) in zip(self.blocks, self.block_keys):
            out = torch.relu(self._gate(key1, self._norm(block.bn1, block.conv1(h), task), masks))
            self._record(key1, out)
            out = self._norm(block.bn2, block.conv2(out), task)
            shortcut = h if block.shortcut is None else self._norm(block.bn_shortcut, block.shortcut(h), task)
            h = torch.relu(self._gate(key2, out + shortcut, masks))
            self._record(key2, h)
        return self.pool(h).flatten(1)

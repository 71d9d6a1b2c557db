"""HAT-masked ResNet-18 (CLArena's ``HATMaskResNet18``, with masked shortcuts).

Every conv is gated by a HAT mask: conv → (BN) → mask → ReLU; the second conv of a block
is gated after the residual add, so the block output is ``ReLU(m ⊙ (conv2 + shortcut))``.
The 1×1 shortcut projections are masked too (CLArena leaves them free, so every task
overwrites them — see ``docs/deviations.md``): their weights sit between the block input's
units and the block output's units, and the broadcast protects them like any other conv.

BatchNorm is off by default (the paper configs); ``batch_norm="per_task"`` gives every
task its own BatchNorm copy (``PerTaskBatchNorm2d``), created by Avalanche's model
adaptation when the task first appears, so no task's statistics move another's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .._validation import check_choice
from ..masking.layout import ParamLayout
from .base import HATBackbone
from .per_task_norm import PerTaskNorm

BATCH_NORM_MODES = ("none", "per_task")


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


class HATResNet18(HATBackbone):
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

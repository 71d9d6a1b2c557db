"""HAT-masked ResNet-18 (CLArena's ``HATMaskResNet18``, with masked shortcuts), built by the conversion.

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

from collections.abc import Sequence

import torch
from torch import nn

from .._validation import check_choice
from .builders import BuiltHATModel
from .per_task_norm import PerTaskNorm

BATCH_NORM_MODES = ("none", "per_task")


class PerTaskBatchNorm2d(PerTaskNorm):
    """One ``BatchNorm2d`` per task label (:class:`~.per_task_norm.PerTaskNorm` on a fresh
    ``BatchNorm2d``); a task never trained passes through unnormalised."""

    def __init__(self, num_features: int) -> None:
        super().__init__(nn.BatchNorm2d(num_features))


class _Block(nn.Module):
    """A basic block of :class:`ResNetwork`: ``relu(bn2(conv2(relu(bn1(conv1(h))))) + shortcut(h))``
    (the BatchNorms when present; the shortcut a 1×1 projection where the shape changes)."""

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

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = _norm(self.bn1, self.conv1(h))
        out = _norm(self.bn2, self.conv2(torch.relu(out)))
        shortcut = h if self.shortcut is None else _norm(self.bn_shortcut, self.shortcut(h))
        return torch.relu(out + shortcut)


def _norm(norm: nn.Module | None, h: torch.Tensor) -> torch.Tensor:
    """``norm(h)``, or ``h`` without a BatchNorm (a per-task BatchNorm gets its task label from
    the conversion)."""
    return h if norm is None else norm(h)


class ResNetwork(nn.Module):
    """The plain network of :class:`HATResNet18`: stem, four stages of two :class:`_Block`,
    global average pool; ``forward(x) → (B, widths[-1])``, no head."""

    def __init__(self, channels: int, widths: Sequence[int], small_input_stem: bool, per_task_bn: bool) -> None:
        super().__init__()
        if small_input_stem:
            self.conv1 = nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False)
            self.stem_pool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(channels, widths[0], 7, 2, 3, bias=False)
            self.stem_pool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = PerTaskBatchNorm2d(widths[0]) if per_task_bn else None
        self.blocks = nn.ModuleList()
        in_channels = widths[0]
        for stage, width in enumerate(widths):
            for index in range(2):
                stride = 2 if stage > 0 and index == 0 else 1
                self.blocks.append(_Block(in_channels, width, stride, per_task_bn))
                in_channels = width
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, C, H, W)`` → ``(B, widths[-1])`` (traced by the conversion, which gives each
        per-task BatchNorm its task label)."""
        h = self.stem_pool(torch.relu(_norm(self.bn1, self.conv1(x))))
        for block in self.blocks:
            h = block(h)
        return self.pool(h).flatten(1)


class HATResNet18(BuiltHATModel):
    """ResNet-18 (basic blocks, 2-2-2-2) with a HAT mask after every conv.

    Built as :func:`~.conversion.to_hat` converts any network (:class:`ResNetwork`): each conv's
    output (after its BatchNorm) is gated, the second conv of a block and its shortcut after the
    residual sum. Unit groups ``conv1`` and ``layer<stage>_<block>_conv<1|2>``; layers
    ``model.conv1``, ``model.blocks[i]``. The masks are not folded into the kernels (the gate
    multiplies the conv's output, as this network always did).

    :param input_shape: ``(channels, height, width)``; only ``channels`` matters.
    :param batch_norm: ``"none"`` (default, as the paper configs) or ``"per_task"``.
    :param small_input_stem: a 3×3 stride-1 stem without max-pool, for 32×32 inputs
        (``False`` = the torchvision 7×7 stride-2 stem with max-pool, as CLArena).
    """

    NETWORK = ResNetwork
    LEGACY_LAYERS = ("conv1", "stem_pool", "bn1", "blocks", "pool")
    FOLD_CONV_MASKS = False

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        *,
        multihead: bool = True,
        batch_norm: str = "none",
        small_input_stem: bool = False,
        widths: Sequence[int] = (64, 128, 256, 512),
    ) -> None:
        check_choice("batch_norm", batch_norm, BATCH_NORM_MODES)
        network = ResNetwork(input_shape[0], widths, small_input_stem, batch_norm == "per_task")
        super().__init__(network, widths[-1], multihead=multihead)
        self.block_keys = [(f"{_block_key(i)}_conv1", f"{_block_key(i)}_conv2") for i in range(len(network.blocks))]

    @classmethod
    def unit_names(cls, network: nn.Module) -> dict[str, str]:
        """``conv1``; ``blocks.<i>.conv<j>`` → ``layer<i // 2 + 1>_<i % 2>_conv<j>`` (the shortcut
        shares its block's ``conv2`` group)."""
        names = {"conv1": "conv1"}
        for i in range(len(network.blocks)):
            names[f"blocks.{i}.conv1"] = f"{_block_key(i)}_conv1"
            names[f"blocks.{i}.conv2"] = f"{_block_key(i)}_conv2"
        return names


def _block_key(index: int) -> str:
    """``layer<stage>_<block>`` of the ``index``-th block (two blocks a stage)."""
    return f"layer{index // 2 + 1}_{index % 2}"

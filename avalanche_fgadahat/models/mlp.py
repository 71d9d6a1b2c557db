"""HAT-masked multilayer perceptron (CLArena's ``HATMaskMLP``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .._validation import check_number
from ..masking.layout import ParamLayout
from .base import HATBackbone


class HATMLP(HATBackbone):
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

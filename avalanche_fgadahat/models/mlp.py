"""HAT-masked multilayer perceptron (CLArena's ``HATMaskMLP``), built by the conversion."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._validation import check_number
from .builders import BuiltHATModel


class MLPNetwork(nn.Module):
    """The plain network of :class:`HATMLP`: flatten, then per layer ``Linear → ReLU → dropout``
    (``nn.Identity`` when ``dropout`` is 0); ``forward(x) → (B, hidden_sizes[-1])``, no head."""

    def __init__(self, input_size: int, hidden_sizes: Sequence[int], dropout: float) -> None:
        super().__init__()
        self.fc = nn.ModuleList()
        fan_in = input_size
        for width in hidden_sizes:
            self.fc.append(nn.Linear(fan_in, width))
            fan_in = width
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, ...)`` → ``(B, hidden_sizes[-1])``."""
        h = x.flatten(1)
        for layer in self.fc:
            h = self.dropout(torch.relu(layer(h)))
        return h


class HATMLP(BuiltHATModel):
    """MLP whose every hidden layer is gated by a HAT mask.

    Per layer: ``h = ReLU(mask ⊙ (W h_prev + b))`` then optional dropout; the input is
    flattened first. The last hidden layer (``hidden_sizes[-1]`` units) is masked too, as
    in CLArena; the head on top is not. Built as :func:`~.conversion.to_hat` converts any
    network (:class:`MLPNetwork`); unit groups ``fc0``, ``fc1``, …; layers ``model.fc[i]``.

    :param input_size: number of input features (e.g. ``28 * 28``).
    :param hidden_sizes: widths of the masked layers, input to output.
    :param multihead: one head per task (task-incremental) or one shared head.
    :param dropout: dropout probability after each activation (0 disables it).
    """

    NETWORK = MLPNetwork
    LEGACY_LAYERS = ("fc", "dropout")

    def __init__(
        self,
        input_size: int = 28 * 28,
        hidden_sizes: Sequence[int] = (256, 100, 64),
        *,
        multihead: bool = True,
        dropout: float = 0.0,
    ) -> None:
        check_number("input_size", input_size, minimum=1, integer=True)
        if len(hidden_sizes) == 0:
            raise ValueError("hidden_sizes must hold at least one layer width, got ()")
        for width in hidden_sizes:
            check_number("hidden_sizes[i]", width, minimum=1, integer=True)
        check_number("dropout", dropout, minimum=0.0, maximum=1.0)
        super().__init__(MLPNetwork(input_size, hidden_sizes, dropout), hidden_sizes[-1], multihead=multihead)
        self.input_size = input_size

    @classmethod
    def unit_names(cls, network: nn.Module) -> dict[str, str]:
        """``fc.<i>`` → ``fc<i>``."""
        return {f"fc.{i}": f"fc{i}" for i in range(len(network.fc))}

"""The HAT network of a user's model (built by :func:`~.conversion.to_hat`).

:class:`ConvertedHATModel` is a :class:`~.base.HATBackbone` whose body is the user's network
rewritten by ``torch.fx`` (``body``: a ``GraphModule`` holding the user's own layer objects,
with a gate after each unit group and a per-task BatchNorm in place of each BatchNorm). The
head is the user's (or Avalanche's ``MultiHeadClassifier``); every HAT-family mechanism —
masks, cumulative and summative masks, importances, state dict, checkpoints — is the
backbone's, exactly as for the package's own networks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import fx, nn

from ..masking.layout import ParamLayout
from .base import HATBackbone


def apply_gate(h: torch.Tensor, masks: Mapping[str, torch.Tensor], key: str, extra_dims: int) -> torch.Tensor:
    """``h · m_key``, the mask broadcast over ``extra_dims`` trailing (spatial) dims (HAT Eq. 1)."""
    mask = masks[key]
    if extra_dims:
        mask = mask.view(1, -1, *([1] * extra_dims))
    return h * mask


def record_activation(record: Callable[[str, torch.Tensor], None], key: str, h: torch.Tensor) -> torch.Tensor:
    """Hand ``h`` (a unit group's activation, after its gate and nonlinearity) to ``record``; return it."""
    record(key, h)
    return h


class BodyTracer(fx.Tracer):
    """The tracer ``torch.fx`` uses when it rebuilds a converted body from its code (unpickling):
    the gate and the recording stay single calls, as in the converted graph."""

    def __init__(self) -> None:
        super().__init__(autowrap_functions=(apply_gate, record_activation))


class ConvertedHATModel(HATBackbone):
    """A user's network with HAT masks (see module doc); build it with :func:`~.conversion.to_hat`.

    :param body: the rewritten feature extractor, called as ``body(x, masks, task, record)``.
    :param layouts: one :class:`~avalanche_fgadahat.masking.ParamLayout` per masked layer.
    :param unit_sizes: ``{unit group: units}``.
    :param head: the classifier head (not masked).
    :param feature_size: the head's input width.
    :param multihead: whether the head is a ``MultiHeadClassifier`` (called with the task label).
    :param source: the class name of the converted model (for messages).
    """

    def __init__(self, body: fx.GraphModule, layouts: Sequence[ParamLayout], unit_sizes: Mapping[str, int], *,
                 head: nn.Module, feature_size: int, multihead: bool, source: str) -> None:
        super().__init__(multihead=multihead)
        self.body = body
        self.source = source
        self._finish_init(layouts, feature_size, unit_sizes, head=head)

    def forward_features(self, x: torch.Tensor, masks: Mapping[str, torch.Tensor], task: int) -> torch.Tensor:
        """The masked body: ``x`` → features ``(B, feature_size)``."""
        return self.body(x, masks, task, self._record)

    def extra_repr(self) -> str:
        """The converted class and the unit groups, in ``print(model)``."""
        return f"converted from {self.source}; unit groups: {dict(self.unit_sizes)}"

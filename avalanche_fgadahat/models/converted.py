"""The HAT network of a user's model (built by :func:`~.conversion.to_hat`).

:class:`ConvertedHATModel` is a :class:`~.base.HATBackbone` whose body is the user's network
rewritten by ``torch.fx`` (``body``: a ``GraphModule`` holding the user's own layer objects,
with a gate after each unit group and a per-task BatchNorm in place of each BatchNorm). The
head is the user's (or Avalanche's ``MultiHeadClassifier``); every HAT-family mechanism —
masks, cumulative and summative masks, importances, state dict, checkpoints — is the
backbone's, exactly as for the package's own networks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import fx, nn

from ..masking.layout import ParamLayout
from .base import HATBackbone
from .gates import apply_gate, masked_conv, record_activation

__all__ = ["BodyTracer", "ConvertedHATModel", "apply_gate", "masked_conv", "record_activation"]


class BodyTracer(fx.Tracer):
    """The tracer ``torch.fx`` uses when it rebuilds a converted body from its code (unpickling):
    the gate and the recording stay single calls, as in the converted graph."""

    def __init__(self) -> None:
        super().__init__(autowrap_functions=(apply_gate, masked_conv, record_activation))


class ConvertedHATModel(HATBackbone):
    """A user's network with HAT masks (see module doc); build it with :func:`~.conversion.to_hat`.

    :param body: the rewritten feature extractor, called as ``body(x, masks, task, record)``.
    :param layouts: one :class:`~avalanche_fgadahat.masking.ParamLayout` per masked layer.
    :param unit_sizes: ``{unit group: units}``.
    :param head: the classifier head (not masked); ``None``: Avalanche's ``MultiHeadClassifier``
        (``multihead``) or ``IncrementalClassifier`` of ``feature_size`` inputs, created after the
        task embeddings (the order the package's networks draw their initial values in).
    :param feature_size: the head's input width.
    :param multihead: whether the head is a ``MultiHeadClassifier`` (called with the task label).
    :param source: the class name of the converted model (for messages).
    """

    def __init__(self, body: fx.GraphModule, layouts: Sequence[ParamLayout], unit_sizes: Mapping[str, int], *,
                 head: nn.Module | None, feature_size: int, multihead: bool, source: str) -> None:
        super().__init__(multihead=multihead)
        self.body = body
        self.source = source
        self._finish_init(layouts, feature_size, unit_sizes, head=head)

    def forward_features(self, x: torch.Tensor, masks: Mapping[str, torch.Tensor], task: int) -> torch.Tensor:
        """The masked body: ``x`` → features ``(B, feature_size)``."""
        return self.body(x, masks, task, self._record)

    def __getattr__(self, name: str):
        """A layer container of the body by its name on the converted network (``model.features``,
        ``HATMLP``'s ``model.fc[0]``), after the model's own attributes."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            body = self.__dict__.get("_modules", {}).get("body")
            if body is not None and name in body._modules:
                return body._modules[name]
            raise

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """PyTorch's ``load_state_dict``; a state dict whose body layers are named without the
        ``body.`` prefix (``fc.0.weight``: ``HATMLP``, ``HATAlexNet`` and ``HATResNet18`` before
        they were built by :func:`~.conversion.to_hat`) loads too."""
        return super().load_state_dict(self._with_body_prefix(state_dict, ""), strict=strict, assign=assign)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        renamed = self._with_body_prefix(state_dict, prefix)
        if renamed is not state_dict:
            for old in [k for k in state_dict if k not in renamed]:
                del state_dict[old]
            state_dict.update(renamed)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _with_body_prefix(self, state_dict, prefix: str):
        """``state_dict`` with ``<prefix><layer>…`` renamed ``<prefix>body.<layer>…`` for the body's
        top-level layers (the same object when nothing is renamed)."""
        tops = tuple(f"{prefix}{name}." for name in self.body._modules if name not in self._modules)
        if not tops or not any(k.startswith(tops) for k in state_dict):
            return state_dict
        renamed = state_dict.__class__()
        for key, value in state_dict.items():
            renamed[prefix + "body." + key[len(prefix):] if key.startswith(tops) else key] = value
        if hasattr(state_dict, "_metadata"):
            renamed._metadata = state_dict._metadata
        return renamed

    def extra_repr(self) -> str:
        """The converted class and the unit groups, in ``print(model)``."""
        return f"converted from {self.source}; unit groups: {dict(self.unit_sizes)}"

"""Plain multi-head models for the baselines, with exactly the HAT backbones' layers.

A baseline must see the same network as the HAT family, minus the masks. Rather than a
second copy of every architecture, :class:`UnmaskedBody` takes a freshly built HAT
backbone, removes its HAT-only parts (task embeddings, mask buffers, head) and runs its own
``forward_features`` with every mask equal to 1 — so layer shapes, initialisation and
forward code are shared by construction.

* :class:`PlainMultiHead`: body + Avalanche ``MultiHeadClassifier`` (a ``MultiTaskModule``,
  the multi-head model of Naive, EWC, SI, LwF, MAS and joint training).
* :class:`PlainSingleHead`: body + one ``nn.Linear`` over all classes (streams without task labels).
* :class:`PackNetMultiHead`: Avalanche's ``PackNetModel`` wrapping **only the body**, with an
  unwrapped ``MultiHeadClassifier`` on top. ``PackNetModel(whole_model)`` would also wrap
  the head's ``nn.Linear`` layers into ``_PnLinear``, which has no ``in_features``, and the
  head adaptation of the next task then crashes; new heads are also built as plain
  ``nn.Linear``. Per-task heads need no pruning: each is trained by one task only.
"""

from __future__ import annotations

import torch
from avalanche.models import MultiHeadClassifier, MultiTaskModule
from avalanche.models.packnet import PackNetModel
from torch import nn

from ..models.base import HATBackbone

#: Attributes of a HAT backbone that a plain network does not have.
HAT_ONLY_ATTRIBUTES = ("task_embeddings", "unit_state", "classifier")


class UnmaskedBody(nn.Module):
    """The feature extractor of a HAT backbone with every mask fixed to 1.

    ``forward(x)`` returns ``backbone.forward_features(x, ones, task=0)``: with unit masks
    the gates are identities, which is the plain network of the same shape.
    """

    def __init__(self, backbone: HATBackbone) -> None:
        super().__init__()
        if not isinstance(backbone, HATBackbone):
            raise TypeError(f"backbone must be a HATBackbone, got {type(backbone).__name__}")
        self.feature_size = backbone.feature_size
        self.unit_keys = tuple(backbone.unit_sizes)
        for name in HAT_ONLY_ATTRIBUTES:
            delattr(backbone, name)
        self.net = backbone
        self.register_buffer("_one", torch.ones(()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        masks = dict.fromkeys(self.unit_keys, self._one)
        return self.net.forward_features(x, masks, 0)


class PlainMultiHead(MultiTaskModule):
    """``UnmaskedBody`` + one ``MultiHeadClassifier`` head per task."""

    def __init__(self, backbone: HATBackbone) -> None:
        super().__init__()
        self.body = UnmaskedBody(backbone)
        self.classifier = MultiHeadClassifier(self.body.feature_size)

    def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
        return self.classifier(self.body(x), task_label)


class PlainSingleHead(nn.Module):
    """``UnmaskedBody`` + one ``nn.Linear`` head over all ``classes`` of the stream: the baselines'
    model on a stream without task labels (class-/domain-incremental; as Avalanche's ``SimpleMLP``),
    called without task labels, its width fixed (DER compares stored logits with new ones)."""

    def __init__(self, backbone: HATBackbone, classes: int) -> None:
        super().__init__()
        self.body = UnmaskedBody(backbone)
        self.classifier = nn.Linear(self.body.feature_size, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, classes seen)``."""
        return self.classifier(self.body(x))


class PackNetMultiHead(PackNetModel):
    """Avalanche's ``PackNetModel`` over the body only, plus per-task heads (see module doc).

    ``PackNetModel.forward`` asserts one task label per mini-batch and activates that
    task's weight subset before the body runs; the head of the task is applied after.
    """

    def __init__(self, backbone: HATBackbone) -> None:
        body = UnmaskedBody(backbone)
        super().__init__(body)
        self.classifier = MultiHeadClassifier(body.feature_size)

    def forward(self, x: torch.Tensor, task_labels: torch.Tensor) -> torch.Tensor:
        if isinstance(task_labels, int):
            task_labels = torch.full((x.shape[0],), task_labels, dtype=torch.long, device=x.device)
        features = super().forward(x, task_labels)
        return self.classifier(features, task_labels)

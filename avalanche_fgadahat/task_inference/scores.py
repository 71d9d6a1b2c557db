"""How confident a task's head is on a sample: the task-identity scores (higher = more confident).

Each score maps the logits ``z`` ``(..., C)`` of one task's head to ``(...)``. A head's outputs
for classes its task never saw are Avalanche's mask value (−1000): their softmax weight and their
``exp`` are 0 in float32, so every score is the score over the task's own classes.

* ``max_softmax``: ``max_c softmax(z)_c`` (maximum softmax probability; Hendrycks & Gimpel,
  ICLR 2017);
* ``entropy``: ``−H(softmax(z)) = Σ_c p_c log p_c`` (a peaked prediction scores high);
* ``energy``: ``logsumexp_c z_c``, the negative free energy at temperature 1 (Liu et al.,
  "Energy-based out-of-distribution detection", NeurIPS 2020).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def max_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``max_c softmax(z)_c`` over the last dim."""
    return logits.softmax(dim=-1).amax(dim=-1)


def negative_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``Σ_c p_c log p_c`` with ``p = softmax(z)`` (``0 log 0 = 0``), over the last dim."""
    return -torch.special.entr(logits.softmax(dim=-1)).sum(dim=-1)


def energy(logits: torch.Tensor) -> torch.Tensor:
    """``logsumexp_c z_c`` over the last dim (the negative energy)."""
    return torch.logsumexp(logits, dim=-1)


#: score name → function ``(..., C) logits → (...)`` (higher = more confident)
TASK_SCORES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "max_softmax": max_softmax,
    "entropy": negative_entropy,
    "energy": energy,
}

#: the score ``docs/class_incremental.md`` recommends (measured there)
DEFAULT_TASK_SCORE = "entropy"

"""How confident a task's head is on a sample: the task-identity scores (higher = more confident).

Each score maps the logits ``z`` ``(..., C)`` of one task's head to ``(...)``. A head's outputs
for classes its task never saw are Avalanche's mask value (−1000): their softmax weight and their
``exp`` are 0 in float32, so every score is the score over the task's own classes.

* ``max_softmax``: ``max_c softmax(z)_c`` (maximum softmax probability; Hendrycks & Gimpel,
  ICLR 2017);
* ``entropy``: ``−H(softmax(z)) = Σ_c p_c log p_c`` (a peaked prediction scores high);
* ``energy``: ``logsumexp_c z_c``, the negative free energy at temperature 1 (Liu et al.,
  "Energy-based out-of-distribution detection", NeurIPS 2020).

One score reads the task's masked features instead of its logits (:data:`FEATURE_SCORES`):

* ``mahalanobis``: ``−d_t(f)``, the unit-normalised Mahalanobis distance of the features to the
  nearest class mean of task ``t`` under its tied covariance (Lee et al., NeurIPS 2018), from the
  statistics each task stores after training (:mod:`.feature_statistics`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .feature_statistics import TaskFeatureStatistics


def max_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``max_c softmax(z)_c`` over the last dim."""
    return logits.softmax(dim=-1).amax(dim=-1)


def negative_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``Σ_c p_c log p_c`` with ``p = softmax(z)`` (``0 log 0 = 0``), over the last dim."""
    return -torch.special.entr(logits.softmax(dim=-1)).sum(dim=-1)


def energy(logits: torch.Tensor) -> torch.Tensor:
    """``logsumexp_c z_c`` over the last dim (the negative energy)."""
    return torch.logsumexp(logits, dim=-1)


def mahalanobis(features: torch.Tensor, statistics: TaskFeatureStatistics, task: int) -> torch.Tensor:
    """``−d_t(f)`` of each row of ``features`` ``(B, F)`` → ``(B,)`` (``−inf`` for a task
    without statistics; :meth:`~.feature_statistics.TaskFeatureStatistics.distance`)."""
    return -statistics.distance(task, features)


#: score name → function ``(..., C) logits → (...)`` (higher = more confident)
LOGIT_SCORES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "max_softmax": max_softmax,
    "entropy": negative_entropy,
    "energy": energy,
}

#: score name → function ``(features (B, F), statistics, task) → (B,)`` (higher = more confident)
FEATURE_SCORES: dict[str, Callable[[torch.Tensor, TaskFeatureStatistics, int], torch.Tensor]] = {
    "mahalanobis": mahalanobis,
}

#: every task-identity score by name (``task_inference=`` accepts these)
TASK_SCORES: dict[str, Callable[..., torch.Tensor]] = {**LOGIT_SCORES, **FEATURE_SCORES}

#: the score ``docs/class_incremental.md`` recommends (measured there)
DEFAULT_TASK_SCORE = "entropy"

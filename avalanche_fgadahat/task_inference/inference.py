"""The forward over every trained task and the choice of the most confident one.

:func:`infer_tasks` runs the trained tasks' masked sub-networks on a batch — stacked into one
batched pass (each sample repeated once per task, each copy gated by its task's stored mask) where
the network allows it, one pass per task where it holds per-task layers (BatchNorm) — then each
task's head, scores each task on each sample, and returns the chosen task's logits padded to
all the classes seen (global class ids).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..models.per_task_norm import PerTaskNorm
from .feature_statistics import TaskFeatureStatistics, task_statistics_of
from .scores import FEATURE_SCORES

#: the most samples (batch × tasks) one stacked pass holds; more are split into several passes
MAX_STACKED_ROWS = 16384


@dataclass(frozen=True)
class TaskInference:
    """The result of :func:`infer_tasks` on a batch of ``B`` samples and ``T`` candidate tasks.

    :ivar tasks: ``(T,)`` the candidate task labels (HAT tasks, in training order).
    :ivar scores: ``(T, B)`` each task's confidence on each sample.
    :ivar chosen: ``(B,)`` the task label chosen for each sample.
    :ivar logits: ``(B, C)`` the chosen task's logits over the ``C`` classes seen so far; the
        classes outside its head are the head's mask value (−1000).
    """

    tasks: torch.Tensor
    scores: torch.Tensor
    chosen: torch.Tensor
    logits: torch.Tensor


def _features_per_task(model, x: torch.Tensor, tasks: Sequence[int]) -> list[torch.Tensor]:
    """``[features (B, F) of x under task t's masks]`` for each task (stacked passes if possible)."""
    masks = [model.masks_for_task(t) for t in tasks]
    if any(isinstance(m, PerTaskNorm) for m in model.modules()):
        return [model.forward_features(x, m, t) for m, t in zip(masks, tasks)]
    batch, out = x.shape[0], []
    per_pass = max(1, MAX_STACKED_ROWS // max(batch, 1))
    for start in range(0, len(tasks), per_pass):
        chunk = masks[start:start + per_pass]
        n = len(chunk)
        stacked_x = x.repeat(n, *([1] * (x.dim() - 1)))
        stacked_masks = {k: torch.stack([m[k] for m in chunk]).repeat_interleave(batch, dim=0) for k in chunk[0]}
        features = model.forward_features(stacked_x, stacked_masks, tasks[start])
        out.extend(features.split(batch))
    return out


def infer_tasks(model, x: torch.Tensor, tasks: Sequence[int],
                score: Callable[[torch.Tensor], torch.Tensor]) -> TaskInference:
    """Run every task of ``tasks`` on ``x``, score them, answer with the most confident one.

    :param model: a :class:`~avalanche_fgadahat.models.HATBackbone` with one head per task.
    :param x: inputs ``(B, ...)``.
    :param tasks: candidate task labels (each has masks: stored, or the task in training).
    :param score: a :data:`~.scores.TASK_SCORES` function (a :data:`~.scores.FEATURE_SCORES`
        one reads ``model.task_statistics``; a task without statistics scores ``−inf``).
    :returns: the :class:`TaskInference` (ties go to the task trained first).
    """
    features = _features_per_task(model, x, tasks)
    logits = [model.classifier(f, t) for f, t in zip(features, tasks)]
    width = max([model.max_class_label] + [z.shape[1] for z in logits])
    fill = float(getattr(model.classifier, "mask_value", -1000))
    padded = logits[0].new_full((len(tasks), x.shape[0], width), fill)
    for i, z in enumerate(logits):
        padded[i, :, : z.shape[1]] = z
    if score in FEATURE_SCORES.values():
        statistics = task_statistics_of(model) or TaskFeatureStatistics(model.feature_size).to(x.device)
        scores = torch.stack([score(f, statistics, t) for f, t in zip(features, tasks)])
    else:
        scores = torch.stack([score(z) for z in logits])
    best = scores.argmax(dim=0)
    task_labels = torch.tensor(list(tasks), dtype=torch.long, device=x.device)
    rows = torch.arange(x.shape[0], device=x.device)
    return TaskInference(tasks=task_labels, scores=scores, chosen=task_labels[best], logits=padded[best, rows])

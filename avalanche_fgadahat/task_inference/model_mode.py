"""Task inference as a mode of a HAT network: :class:`TaskInferenceMixin` (of ``HATBackbone``)."""

from __future__ import annotations

import warnings

import torch

from .._validation import check_choice
from .adaptation import adapt_relabeled, set_automatic_adaptation
from .feature_statistics import collect_task_statistics, task_statistics_of
from .inference import TaskInference, infer_tasks
from .scores import DEFAULT_TASK_SCORE, FEATURE_SCORES, TASK_SCORES


class TaskInferenceMixin:
    """The task-inference mode of :class:`~avalanche_fgadahat.models.HATBackbone` (off by default)."""

    #: the task-identity score of class-/domain-incremental evaluation (``None``: the task labels
    #: pick the masks; :meth:`set_task_inference`)
    task_inference: str | None = None
    #: the :class:`~.inference.TaskInference` of the last inferred batch
    last_task_inference: TaskInference | None = None
    #: whether the missing-statistics warning of :meth:`_score_for` was given (once per model)
    _warned_missing_statistics: bool = False

    def set_task_inference(self, score: str | None) -> None:
        """Infer the task at evaluation with ``score`` (a :data:`~avalanche_fgadahat.task_inference.
        TASK_SCORES` name), or use the task labels (``None``). With a score, the ``k``-th experience
        trained is task ``k`` whatever its label (its head and per-task BatchNorms adapted as task
        ``k``), and :meth:`forward` in evaluation answers for every trained task
        (``docs/class_incremental.md``). The plugins set it from their ``task_inference``.

        :raises ValueError: an unknown score, or a model without one head per task.
        """
        if score is not None:
            check_choice("task_inference", score, TASK_SCORES)
            if not self.multihead:
                raise ValueError("task_inference needs one head per task: build the model with multihead=True "
                                 "(to_hat(..., task_incremental_heads=True) for a single-head network)")
        self.task_inference = score
        set_automatic_adaptation(self, score is None)

    def store_task_statistics(self, dataset, task: int, batch_size: int, device=None) -> None:
        """After ``task`` is trained and its mask stored: with a :data:`~avalanche_fgadahat.
        task_inference.scores.FEATURE_SCORES` score, one pass over its training ``dataset``
        stores its feature statistics (:func:`~.feature_statistics.collect_task_statistics`);
        nothing otherwise."""
        if self.task_inference in FEATURE_SCORES:
            collect_task_statistics(self, dataset, task, batch_size, device)

    def next_inference_task(self) -> int:
        """The task the next training experience becomes with task inference (training order)."""
        step = self.training_step
        return step.task if step is not None else len(self.trained_tasks())

    def adaptation(self, experience) -> None:
        """Avalanche's model adaptation; with task inference, a training experience adapts the
        heads and per-task layers as task :meth:`next_inference_task` (evaluation adapts none)."""
        super().adaptation(experience)
        if self.task_inference is not None and self.training:
            adapt_relabeled(self, experience, self.next_inference_task())

    def _forward_inferred(self, x: torch.Tensor) -> torch.Tensor:
        """Task inference: the task in training (train mode), else the most confident of the
        trained tasks and the one in training (``last_task_inference``); ``(B, classes seen)``."""
        step = self.training_step
        if self.training and step is not None:
            return self.forward_single_task(x, step.task)
        tasks = self.trained_tasks() + ([step.task] if step is not None else [])
        if not tasks:  # nothing trained yet: no prediction to make
            self.last_task_inference = None
            return x.new_zeros(x.shape[0], max(self.max_class_label, 1))
        self.last_task_inference = infer_tasks(self, x, tasks, TASK_SCORES[self._score_for(tasks, step)])
        return self.last_task_inference.logits

    def _score_for(self, tasks: list[int], step) -> str:
        """The score name to use on ``tasks``: :attr:`task_inference`, or, for a feature score while
        a candidate has no statistics (the task in training, during a periodic evaluation; tasks
        trained before the score was set, with a ``UserWarning`` once), :data:`DEFAULT_TASK_SCORE`
        for every candidate (mixing the two kinds of score would compare unlike numbers)."""
        name = self.task_inference
        if name not in FEATURE_SCORES:
            return name
        statistics = task_statistics_of(self)
        missing = [t for t in tasks if statistics is None or not statistics.has(t)]
        if not missing:
            return name
        trained = [t for t in missing if step is None or t != step.task]
        if trained and not self._warned_missing_statistics:
            self._warned_missing_statistics = True
            warnings.warn(
                f"task_inference={name!r}: task(s) {trained} have no feature statistics (trained before this score "
                f"was set, or loaded without them); every task is scored with {DEFAULT_TASK_SCORE!r} instead. The "
                "statistics are stored when a task is trained with the score set (docs/class_incremental.md)",
                UserWarning, stacklevel=4)
        return DEFAULT_TASK_SCORE


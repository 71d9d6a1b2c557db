"""Which HAT task each training experience becomes: :class:`TaskAssignment`.

Task-incremental (``task_inference=None``, the default): the experience's task label is the HAT
task (each experience a new label). With task inference (class- and domain-incremental streams,
``docs/class_incremental.md``): the ``k``-th experience trained is HAT task ``k``, and every
experience of the stream must carry the same task label (Avalanche gives 0 without task
identity); a stream whose labels change is task-labelled, which task inference refuses rather
than ignore.
"""

from __future__ import annotations

import warnings
from typing import Any

from .checks import experience_task


class TaskAssignment:
    """The HAT task of each training experience (see module doc).

    :param task_inference: the plugin's ``task_inference`` (``None``: task labels are tasks).
    :ivar stream_label: the task label every experience carries (task inference), once seen.
    :ivar experience_tasks: ``{experience index (current_experience): HAT task}`` of the trained
        experiences (the task-identification metric reads it).
    """

    def __init__(self, task_inference: str | None) -> None:
        self.task_inference = task_inference
        self.stream_label: int | None = None
        self.experience_tasks: dict[int, int] = {}
        self._warned_labels: set[int] = set()

    def label_of(self, experience: Any) -> int:
        """The experience's one task label; with task inference, ``ValueError`` if it differs from
        the stream's (the first experience trained)."""
        label = experience_task(experience)
        if self.task_inference is not None:
            if self.stream_label is None:
                self.stream_label = label
            elif label != self.stream_label:
                raise ValueError(
                    f"task_inference={self.task_inference!r} is for streams without task identity (every "
                    f"experience has the same task label), but this experience has task label {label} and "
                    f"the first one trained had {self.stream_label}: with task labels, use task_inference=None "
                    "(task-incremental), or build the benchmark without them (return_task_id=False)")
        return label

    def task_of(self, experience: Any, model) -> int:
        """The HAT task ``experience`` trains (its label, or the next task in training order)."""
        label = self.label_of(experience)
        return label if self.task_inference is None else model.next_inference_task()

    def record(self, experience: Any, task: int) -> None:
        """Remember that ``experience`` trains as ``task`` (from the start of its training, so a
        periodic evaluation counts it; a later experience of the same index replaces it)."""
        index = getattr(experience, "current_experience", None)
        if index is not None:
            self.experience_tasks[int(index)] = int(task)

    def forget(self, task: int | None) -> None:
        """Drop the experiences recorded as ``task`` (its training was rolled back)."""
        self.experience_tasks = {k: t for k, t in self.experience_tasks.items() if t != task}

    def check_evaluation(self, experience: Any) -> None:
        """With task inference, a ``UserWarning`` (once per label) when an evaluation experience
        carries a task label other than the training stream's: task inference ignores it."""
        labels = getattr(experience, "task_labels", None)
        if self.task_inference is None or self.stream_label is None or not labels:
            return
        other = sorted({int(t) for t in labels} - {self.stream_label} - self._warned_labels)
        if other:
            self._warned_labels.update(other)
            warnings.warn(
                f"task_inference={self.task_inference!r}: this evaluation experience has task label(s) {other}, "
                f"the training stream had {self.stream_label}; the labels are ignored and each sample's task is "
                "inferred (Avalanche's per-task metric names still show the labels)", UserWarning, stacklevel=2)

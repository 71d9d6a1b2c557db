"""Task-embedding initialisers and the errors/warnings of a task-conditioned forward pass.

* :data:`TASK_EMBEDDING_INITIALIZERS`: CLArena's ``task_embedding_init_mode`` values — how a
  new task's embeddings ``e`` are drawn before it trains (HAT Sec. 2.1 draws ``N(0, 1)``).
* :class:`MixedTaskBatchError`: a training mini-batch holds other tasks than the one trained.
* :class:`UntrainedTaskWarning`: a task that was never trained was evaluated.
"""

from __future__ import annotations

import torch
from torch import nn


def _normal(e: torch.Tensor) -> None:
    nn.init.normal_(e, 0.0, 1.0)


TASK_EMBEDDING_INITIALIZERS = {
    "N01": _normal,
    "U-11": lambda e: nn.init.uniform_(e, -1.0, 1.0),
    "U01": lambda e: nn.init.uniform_(e, 0.0, 1.0),
    "U-10": lambda e: nn.init.uniform_(e, -1.0, 0.0),
    "last": None,  # keep the previous task's embedding
}


class MixedTaskBatchError(ValueError):
    """A training mini-batch holds task labels other than the task being trained.

    :param task: the task being trained.
    :param found: the sorted task labels of the mini-batch.
    """

    def __init__(self, task: int, found: list[int]) -> None:
        self.task, self.found = task, found
        super().__init__(
            f"task_labels of a training mini-batch must all equal the task being trained ({task}); "
            f"found {found}: the strategy or a plugin mixes other tasks' samples into training "
            "(replay, concatenated experiences). HAT trains one task at a time on the experience's "
            "own data and keeps the old tasks with its stored masks: use one task label per "
            "training experience and no replay"
        )


class UntrainedTaskWarning(UserWarning):
    """A task that was never trained was evaluated (see :class:`HATBackbone`)."""

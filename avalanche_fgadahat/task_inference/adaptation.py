"""Training experiences as HAT tasks in training order, whatever their task label.

With task inference, the ``k``-th experience trained becomes HAT task ``k`` (its mask, its
head, its per-task BatchNorms). Avalanche adapts a model's dynamic modules (heads, per-task
BatchNorms) with the experience's own task label (0 for every experience of a class-incremental
stream), so the model adapts them itself with a :class:`RelabeledExperience` carrying the HAT
task, and they are kept out of Avalanche's automatic walk (their ``_auto_adapt`` flag).
"""

from __future__ import annotations

from typing import Any

from avalanche.models import DynamicModule
from torch import nn


class RelabeledExperience:
    """``experience`` seen with the single task label ``task`` (``task_labels == [task]``);
    every other attribute (classes, dataset, index) is the experience's own."""

    def __init__(self, experience: Any, task: int) -> None:
        self._experience = experience
        self.task_labels = [int(task)]
        self.task_label = int(task)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._experience, name)


def dynamic_children(model: nn.Module) -> list[DynamicModule]:
    """The outermost dynamic modules inside ``model`` (not ``model``): heads, per-task BatchNorms."""
    found: list[DynamicModule] = []

    def walk(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, DynamicModule):
                found.append(child)
            else:
                walk(child)

    walk(model)
    return found


def set_automatic_adaptation(model: nn.Module, automatic: bool) -> None:
    """Let Avalanche's adaptation walk reach ``model``'s dynamic modules (``True``) or not."""
    for module in dynamic_children(model):
        module._auto_adapt = automatic


def adapt_relabeled(model: nn.Module, experience: Any, task: int) -> None:
    """Adapt ``model``'s dynamic modules to ``experience`` as HAT task ``task``."""
    relabeled = RelabeledExperience(experience, task)
    for module in dynamic_children(model):
        module.adaptation(relabeled)

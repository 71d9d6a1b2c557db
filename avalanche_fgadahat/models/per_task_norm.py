"""Per-task BatchNorm for converted networks: one copy of the user's BatchNorm per task label.

HAT keeps each task's sub-network intact; a shared BatchNorm would keep updating its running
statistics (and affine parameters) with every new task and change the old tasks' outputs.
:class:`PerTaskNorm` holds one BatchNorm per task label, created at Avalanche's model
adaptation like a new head (the first task label adapted gets the user's own BatchNorm object,
so its parameters stay those of the model the optimizer was built from); a task label without
one passes its input through unnormalised. :class:`~.resnet.PerTaskBatchNorm2d` (``HATResNet18``)
is this module on a fresh ``BatchNorm2d``.
"""

from __future__ import annotations

import copy

import torch
from avalanche.models import DynamicModule
from torch import nn


class PerTaskNorm(DynamicModule):
    """One ``BatchNorm1d``/``BatchNorm2d`` per task label (see module doc).

    :param template: the user's BatchNorm: its settings are copied for every new task; the
        module itself serves the first task label adapted.
    """

    def __init__(self, template: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.num_features = template.num_features
        self.norms = nn.ModuleDict()
        self._template: list[nn.Module] = [template]  # a list: not a registered submodule

    def adaptation(self, experience) -> None:
        """Create a BatchNorm for every new task label of ``experience``."""
        super().adaptation(experience)
        self.ensure_tasks_(experience.task_labels)

    def __setstate__(self, state: dict) -> None:
        """Load one pickled before the template was kept (an earlier ``PerTaskBatchNorm2d``)."""
        super().__setstate__(state)
        if "_template" not in self.__dict__:
            template = nn.BatchNorm2d(self.num_features)
            template._hat_task_used = True  # the first task's BatchNorm exists already
            self._template = [template]

    def ensure_tasks_(self, tasks, device: torch.device | None = None) -> None:
        """Create the BatchNorm of every task label in ``tasks`` that has none, on ``device`` or
        where the existing ones are (also when a state dict is loaded into a fresh model)."""
        for task in tasks:
            if str(task) in self.norms:
                continue
            template = self._template[0]
            if not self.norms and not getattr(template, "_hat_task_used", False):
                norm = template  # the user's own object serves the first task
            else:
                norm = copy.deepcopy(template)
                norm.reset_parameters()
            norm._hat_per_task = True
            norm._hat_task_used = True
            param = next(self.parameters(), None)
            target = device if device is not None else (param.device if param is not None else None)
            if target is not None:
                norm = norm.to(target)
            self.norms[str(task)] = norm

    def forward(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """``x`` normalised with ``task``'s BatchNorm (unchanged for a task without one)."""
        key = str(task)
        return self.norms[key](x) if key in self.norms else x

"""HAT-family state of one unit group, kept as model buffers.

Everything the HAT family learns besides the weights lives here, so ``state_dict()``,
``.to(device)`` and Avalanche checkpoints carry it:

* ``task_masks`` (T × n): the binary test mask ``1[e > 0]`` of each trained task, row =
  task label (rows of untrained labels are zero; ``HATBackbone.trained_tasks`` says which);
* ``cumulative`` (n): ``M = max_t m^t`` — HAT's union of earlier tasks' masks;
* ``summative`` (n): ``S = Σ_t m^t`` — AdaHAT's count of earlier tasks using each unit;
* ``importance_step_sum`` (n): FG-AdaHAT's running sum of the current task's per-step
  normalised importances;
* ``task_importances`` (T × n): FG-AdaHAT's finalised importance ``I^t`` of each task;
* ``summed_importance`` (n): FG-AdaHAT's ``I^{<t}`` after the summing strategy.

Buffers with a task dimension grow as tasks arrive; loading a state dict resizes them
to the saved number of tasks and refuses a different number of units.
"""

from __future__ import annotations

import torch
from torch import nn

TASK_INDEXED_BUFFERS = ("task_masks", "task_importances")
UNIT_BUFFERS = ("cumulative", "summative", "importance_step_sum", "summed_importance")


class UnitGroupState(nn.Module):
    """Buffers of one unit group (see module doc)."""

    def __init__(self, num_units: int) -> None:
        super().__init__()
        self.num_units = num_units
        for name in TASK_INDEXED_BUFFERS:
            self.register_buffer(name, torch.zeros(0, num_units))
        for name in UNIT_BUFFERS:
            self.register_buffer(name, torch.zeros(num_units))

    def grow_(self, num_tasks: int) -> None:
        """Make the task-indexed buffers hold at least ``num_tasks`` rows."""
        for name in TASK_INDEXED_BUFFERS:
            old = getattr(self, name)
            if old.shape[0] < num_tasks:
                new = old.new_zeros(num_tasks, self.num_units)
                new[: old.shape[0]] = old
                setattr(self, name, new)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: D401
        for name in TASK_INDEXED_BUFFERS + UNIT_BUFFERS:
            saved = state_dict.get(prefix + name)
            if saved is None:
                continue
            if saved.shape[-1] != self.num_units:
                raise ValueError(
                    f"state dict entry {prefix + name!r} has {saved.shape[-1]} units but this "
                    f"model's layer has {self.num_units}: the checkpoint comes from a model of "
                    "another shape; build the model with the same sizes it was saved with"
                )
            if name in TASK_INDEXED_BUFFERS:
                self.grow_(saved.shape[0])
                if getattr(self, name).shape[0] > saved.shape[0]:
                    setattr(self, name, getattr(self, name)[: saved.shape[0]].clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

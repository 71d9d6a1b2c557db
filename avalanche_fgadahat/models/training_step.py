"""The one object through which a HAT-family plugin and a masked backbone share a step's state.

A training experience opens a :class:`TrainingStep` on the model
(:meth:`~avalanche_fgadahat.models.HATBackbone.begin_training`) and closes it at the end
(:meth:`~avalanche_fgadahat.models.HATBackbone.end_training`). Inputs (set by the plugin):
the task being trained, the step's annealed gate scale ``s`` (HAT Eq. 3), whether to record
activations (FG-AdaHAT's activation-based importances). Outputs (written by the model's
training-mode forward of that task): the soft masks ``σ(s·e)`` per unit group, the flat soft
mask (the regulariser's input, HAT Eq. 5) and the recorded activations. Nothing else of the
model changes during a step, and ``masks_for_task`` has no side effect.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TrainingStep:
    """Per-step state of the task being trained (see module doc).

    :param task: the task label being trained.
    :param record_activations: record each masked layer's activation in ``activations``.
    :param gate_scale: ``s`` of the current step; ``None`` until the first step (a forward
        of the task then uses its binary mask ``1[e > 0]``).
    :param subnormal_guards: whether the gate flushes its subnormal values (``docs/deviations.md``
        H16; the plugin's ``subnormal_guards`` setting for the model's device).
    :param masks: ``{unit group: σ(s·e_l)}`` of the last training-mode forward, shape ``(units,)``.
    :param mask_flat: the same masks as one flat vector (all unit groups, in order).
    :param activations: ``{unit group: activation}`` of the last forward, batch first.
    """

    task: int
    record_activations: bool = False
    gate_scale: float | None = None
    subnormal_guards: bool = True
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    mask_flat: torch.Tensor | None = None
    activations: dict[str, torch.Tensor] = field(default_factory=dict)

    def clear_outputs(self) -> None:
        """Drop the last forward's tensors (they hold that step's autograd graph)."""
        self.masks, self.mask_flat, self.activations = {}, None, {}

    def __getstate__(self) -> dict:
        """Pickle and deep-copy without the last forward's tensors (graph-bound, not copyable)."""
        state = dict(self.__dict__)
        state.update(masks={}, mask_flat=None, activations={})
        return state

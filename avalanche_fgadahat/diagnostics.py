"""Tell users when HAT cannot learn: end-of-experience diagnostics.

With few optimizer steps per task (e.g. 27 Adam steps at lr 1e-3) the task embeddings move
by about ``lr`` per step, so the stored mask ``1[e > 0]`` stays the sign of the embedding's
random initialisation: about half of every layer, chosen at random. The sparsity
regulariser has no time to act, and random half-masks use the free capacity up
geometrically (1.00 → 0.63 → 0.26 → 0.11 of the parameters), after which new tasks
cannot train. This is inherent to HAT (the reference implementation gives the same
numbers); the rule of thumb (``docs/diagnostics.md``): with Adam, HAT learns reliably once
``lr × optimizer steps per task ≳ 0.1``.

After storing a task's mask, the plugin computes an :class:`ExperienceReport` and, at the
end of ``train()`` (once Avalanche has counted the experience, so a warning turned into an
error leaves a consistent strategy), warns (:class:`HATDiagnosticWarning`) when

* a unit group of the task's mask is empty (no unit on): the task cannot learn;

* ``mask_change < min_mask_change`` and ``embedding_shift < min_embedding_shift``: almost
  no mask bit differs from the sign of the embedding the task started from, and the
  embeddings barely moved (measured on the digits, 128-128 MLP: 24 Adam steps per task at
  lr 1e-3 give a mean shift of 0.008 and 0.65 % changed bits, and some tasks at chance;
  320 steps give 0.046 and 2.3 %, and every task learned — ``docs/diagnostics.md``);

and, for rules that freeze used parameters outright (``adjustment_mode="hat"``; AdaHAT's and
FG-AdaHAT's soft rates still train them, so the two numbers are only reported):

* ``free_capacity < min_free_capacity``: the fraction of masked-layer parameters still
  free for the next task (HAT's network capacity, ``1 − mean min(M_l[i], M_{l−1}[j])``)
  is small;
* ``min(trainable_used) < min_trainable_used``: in some layer, almost none of the
  parameters the new task uses (``min(m_l[i], m_{l−1}[j]) = 1``) could still be trained
  (``min(M_l[i], M_{l−1}[j]) = 0`` before the task) — the task had to make do with
  frozen weights.

The same numbers are Avalanche metrics (``metrics.hat_diagnostic_metrics``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ._validation import check_number
from .masking.broadcast import broadcast
from .masking.gate import binary_mask
from .models.base import HATBackbone


class HATDiagnosticWarning(UserWarning):
    """A HAT-family task barely learned or the network is nearly full (see module doc).

    Silence it with ``warnings.filterwarnings("ignore", category=HATDiagnosticWarning)``
    or ``diagnostics=None`` on the strategy/plugin.
    """


@dataclass(frozen=True)
class LearningDiagnostics:
    """Thresholds of the end-of-experience checks (fractions in [0, 1]; see module doc).

    :param min_mask_change: warn when fewer units than this fraction changed their mask bit
        during the task (default 0.01) ...
    :param min_embedding_shift: ... and the mean absolute change of the embeddings is below
        this (default 0.02; embeddings start at N(0, 1)).
    :param min_free_capacity: warn when less than this fraction of the masked-layer
        parameters stays free for the next task (default 0.02; HAT's Permuted MNIST
        10-task runs pass it around task 6 and train task 10 with 0.0004).
    :param min_trainable_used: warn when, in some layer, less than this fraction of the
        parameters the new task uses could still be trained (default 0.01).
    """

    min_mask_change: float = 0.01
    min_embedding_shift: float = 0.02
    min_free_capacity: float = 0.02
    min_trainable_used: float = 0.01

    def __post_init__(self) -> None:
        for name in ("min_mask_change", "min_free_capacity", "min_trainable_used"):
            check_number(f"diagnostics.{name}", getattr(self, name), minimum=0.0, maximum=1.0)
        check_number("diagnostics.min_embedding_shift", self.min_embedding_shift, minimum=0.0)


@dataclass(frozen=True)
class ExperienceReport:
    """What one trained task did to the masks (fractions in [0, 1]).

    :param task: the task label.
    :param mask_change: fraction of all units whose bit ``1[e > 0]`` at the end differs
        from the one at the start of the experience.
    :param embedding_shift: mean ``|e_end − e_start|`` over all units.
    :param free_capacity: fraction of masked-layer parameters (weights and existing
        biases) free for the next task under HAT, after this task's mask was stored.
    :param trainable_used: ``{layer: fraction}``: of the weights the task uses
        (``min(m_l[i], m_{l−1}[j]) = 1``), the fraction that were free before it
        (``min(M_l[i], M_{l−1}[j]) = 0``); a layer the task uses no weight of is left out.
    :param warnings: the messages warned about (empty when all is well, and with
        ``diagnostics=None``).
    :param empty_groups: the unit groups in which the task's mask has no unit on.
    """

    task: int
    mask_change: float
    embedding_shift: float
    free_capacity: float
    trainable_used: Mapping[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    empty_groups: tuple[str, ...] = ()


@torch.no_grad()
def _parameter_fractions(model: HATBackbone, previous: Mapping[str, torch.Tensor],
                         task_masks: Mapping[str, torch.Tensor]) -> tuple[float, dict[str, float]]:
    cumulative = model.cumulative_masks()
    frozen_total, count = 0.0, 0
    trainable_used: dict[str, float] = {}
    for layout in model.param_layouts:
        frozen_w, frozen_b = broadcast(layout, cumulative, "min")
        before_w, _ = broadcast(layout, previous, "min")
        used_w, _ = broadcast(layout, task_masks, "min")
        frozen_total += float(frozen_w.sum()) + (float(frozen_b.sum()) if frozen_b is not None else 0.0)
        count += frozen_w.numel() + (frozen_b.numel() if frozen_b is not None else 0)
        used = float(used_w.sum())
        trainable = float((used_w * (1.0 - before_w)).sum())
        if used > 0:  # a layer the task does not use at all is left out
            trainable_used[layout.name] = trainable / used
    free = 1.0 - frozen_total / count if count else 1.0
    return free, trainable_used


def diagnose(
    model: HATBackbone,
    task: int,
    start_embeddings: torch.Tensor,
    previous_cumulative: Mapping[str, torch.Tensor],
    thresholds: LearningDiagnostics | None,
    hard_freeze: bool = True,
) -> ExperienceReport:
    """The :class:`ExperienceReport` of ``task``, right after its mask was stored.

    The messages are returned in the report, not warned here (the plugin warns at the end
    of ``train()``, after every state change).

    :param start_embeddings: the flat task embeddings at the start of the experience.
    :param previous_cumulative: ``M^{<t}`` before the task was stored.
    :param thresholds: ``None``: numbers only, no messages.
    :param hard_freeze: the rule freezes used parameters (HAT): check the capacity too.
    """
    end = model.task_embeddings.detach()
    start = start_embeddings.to(end.device)
    mask_change = float((binary_mask(end) != binary_mask(start)).float().mean()) if end.numel() else 0.0
    shift = float((end - start).abs().mean()) if end.numel() else 0.0
    task_masks = model.stored_masks(task)
    free, trainable_used = _parameter_fractions(model, previous_cumulative, task_masks)
    empty = [key for key, mask in task_masks.items() if not bool(mask.any())]
    messages: list[str] = []
    if thresholds is not None:
        messages = _messages(task, thresholds, hard_freeze, mask_change, shift, free, trainable_used, empty)
    return ExperienceReport(task, mask_change, shift, free, trainable_used, tuple(messages), tuple(empty))


def _messages(task, thresholds, hard_freeze, mask_change, shift, free, trainable_used, empty) -> list[str]:
    messages = []
    if empty:
        messages.append(
            f"task {task}'s mask is empty in {', '.join(empty)} (no unit on): the task's outputs do not "
            "depend on its input there, so it cannot learn. The sparsity regulariser or the embedding "
            "initialisation switched every unit off (task_embedding_init_mode='U-10' starts them all "
            "off): train longer, lower mask_sparsity_reg_factor, or use task_embedding_init_mode='N01'"
        )
    if mask_change < thresholds.min_mask_change and shift < thresholds.min_embedding_shift:
        messages.append(
            f"task {task}: only {100 * mask_change:.2f}% of the mask bits changed during training "
            f"(mean embedding change {shift:.3g}); the stored mask is mostly the sign of the "
            "embeddings' random initialisation. Train longer or with a larger learning rate "
            "(with Adam, HAT learns reliably once lr x optimizer steps per task >= ~0.1)"
        )
    if hard_freeze and free < thresholds.min_free_capacity:
        messages.append(
            f"after task {task} only {100 * free:.1f}% of the masked-layer parameters are free "
            "for the next task: later tasks can barely train. Raise mask_sparsity_reg_factor, "
            "train each task longer so the regulariser can shrink its mask, or use a wider network"
        )
    starved = {
        name: value for name, value in trainable_used.items() if value < thresholds.min_trainable_used
    } if hard_freeze else {}
    if starved:
        listed = ", ".join(f"{name} {100 * value:.2f}%" for name, value in starved.items())
        messages.append(
            f"task {task} could train almost none of the weights it uses ({listed} of them were free "
            f"before it; {100 * free:.1f}% of the network is free now): it relies on weights frozen by "
            "earlier tasks. Use a wider network, or a larger mask_sparsity_reg_factor from the first "
            "task so that earlier tasks leave more units free"
        )
    return messages


def snapshot_cumulative(model: HATBackbone) -> dict[str, torch.Tensor]:
    """A copy of ``M^{<t}`` (the cumulative masks before the task is stored)."""
    return {key: mask.detach().clone() for key, mask in model.cumulative_masks().items()}

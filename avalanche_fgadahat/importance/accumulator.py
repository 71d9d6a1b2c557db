"""FG-AdaHAT's importance accumulation: per step, per task, and the summing across tasks.

* after every ``optimizer.step()`` (CLArena's ``on_train_batch_end``): raw ``u_l`` from the
  importance type (``registry.py``) → min-max normalised (``normalize.py``) → ``× σ(s·e_l)``
  (the step's soft training mask, detached) when ``step_multiply_training_mask`` → added in
  place to the model buffer ``importance_step_sum``; the buffer ``importance_steps`` counts
  the steps (:meth:`ImportanceAccumulator.accumulate_`). No subnormal float is produced
  (``docs/deviations.md`` H16): raw values below 1e-30 count as 0, and a step's value below
  ``STEP_IMPORTANCE_FLOOR`` = 1e-20, normalised or after the mask's product, is 0 (decided
  before the product is formed);
* at the end of the task, after its mask is stored: ``I^t = mean over steps + b_I``,
  ``× 1[e^t > 0]`` when ``filter_unmasked_importance``, stored in ``task_importances[t]``;
  ``summed_importance`` ← the summing strategy (``summing.py``) over the tasks' importances in
  training order; the accumulator and the counter are reset (:meth:`ImportanceAccumulator.finalize_`).

Everything lives in model buffers, so ``state_dict`` and Avalanche checkpoints carry it.
"""

from __future__ import annotations

import torch

from ..masking.fusion import FusedKernel
from ..masking.subnormals import product_threshold
from ..models.base import HATBackbone
from .lookup import resolve_importance_type
from .normalize import STEP_IMPORTANCE_FLOOR, min_max_normalize_segments, segment_index
from .registry import ImportanceType, StepContext
from .summing import SUMMING_STRATEGIES


def add_step_importances_(sums: list[torch.Tensor], raws: list[torch.Tensor], masks: list[torch.Tensor] | None,
                          gather: torch.Tensor, segment: torch.Tensor, guards: bool = True) -> None:
    """``sums[l] += normalised(raws[l]) · masks[l]`` in place, for every unit group ``l`` at once.

    :param sums: the ``importance_step_sum`` buffers, ``(units_l,)`` each (updated in place).
    :param raws: the step's raw importances (detached, the buffers' dtype), shaped as ``sums``.
    :param masks: the step's soft training masks (detached), shaped as ``sums``; ``None``: no
        product (``step_multiply_training_mask=False``).
    :param gather: ``(groups, largest)`` and ``segment`` ``(units,)``: ``normalize.segment_index`` of the sizes.
    :param guards: H16's floors; ``False``: the plain normalisation and product (H16a).

    The unit groups are concatenated into one vector and min-max normalised per group with the
    flush of H16 (``normalize.min_max_normalize_segments``: a few ops for all groups, not a few
    per group); a normalised value whose product with the mask would be below
    ``STEP_IMPORTANCE_FLOOR`` is 0 (decided before the product is formed). Eager, or compiled as
    :data:`FUSED_ACCUMULATION`.
    """
    step = min_max_normalize_segments(torch.cat(raws), gather, segment, flush=guards)
    if masks is not None:  # step ≥ 0 (a fresh tensor): its own magnitude, zeroed in place
        mask = torch.cat(masks)
        if guards:
            step.masked_fill_(step < product_threshold(mask, 2 * STEP_IMPORTANCE_FLOOR), 0.0)
        step.mul_(mask)
    torch._foreach_add_(sums, step.split([s.numel() for s in sums]))


#: :func:`add_step_importances_` compiled on first use (``fused_step=True``; ``masking/fusion.py``)
FUSED_ACCUMULATION = FusedKernel(add_step_importances_, "importance normalisation + accumulation")


def _in_dtype(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor`` in ``dtype``, without an op where it already is."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


class ImportanceAccumulator:
    """Accumulates one importance type into a model's buffers (see module doc).

    :param importance_type: a registered importance type's full name.
    :param summing_strategy: a name of ``SUMMING_STRATEGIES``; ``summing_parameter`` its parameter.
    :param base_importance: ``b_I`` added to every finalised importance.
    :param filter_unmasked_importance: zero ``I^t`` on units the task's binary mask drops.
    :param step_multiply_training_mask: multiply each step's normalised importance by the soft mask.
    """

    def __init__(self, importance_type: str, summing_strategy: str, summing_parameter: float | None,
                 base_importance: float, filter_unmasked_importance: bool,
                 step_multiply_training_mask: bool) -> None:
        self.importance_type = importance_type
        self.summing_strategy = summing_strategy
        self.summing_parameter = summing_parameter
        self.base_importance = base_importance
        self.filter_unmasked_importance = filter_unmasked_importance
        self.step_multiply_training_mask = step_multiply_training_mask

    @property
    def importance(self) -> ImportanceType:
        """The registered importance type (looked up, so the accumulator pickles by name)."""
        return resolve_importance_type(self.importance_type)

    @staticmethod
    @torch.no_grad()
    def reset_(model: HATBackbone) -> None:
        """Zero every ``importance_step_sum`` and the step counter."""
        for state in model.unit_state.values():
            state.importance_step_sum.zero_()
        model.importance_steps.zero_()

    def accumulate_(self, model: HATBackbone, ctx: StepContext, fused: bool = False) -> None:
        """Add this step's normalised (and mask-weighted) importance to the model buffers.

        ``fused`` (``fused_step=True``): the normalisation, the mask's product and the addition
        (:func:`add_step_importances_`) run as one compiled function (:data:`FUSED_ACCUMULATION`),
        with the same numbers; the raw importance is computed eagerly either way (its sums over
        the batch and the weights would be reordered by a compiler).

        :raises RuntimeError: if the importance type returns a wrong shape for a unit group.
        """
        raw = self.importance.function(ctx)
        states = model.unit_state
        for key, state in states.items():
            if key not in raw or raw[key].shape != state.importance_step_sum.shape:
                got = None if key not in raw else tuple(raw[key].shape)
                raise RuntimeError(
                    f"importance type {self.importance_type!r} returned shape {got} for unit "
                    f"group {key!r}; expected ({state.num_units},)"
                )
        with torch.no_grad():  # nothing below is recorded by autograd, so no input needs a detach op
            sums = [state.importance_step_sum for state in states.values()]
            raws = [_in_dtype(raw[key], total.dtype) for key, total in zip(states, sums)]
            masks = [ctx.masks[key] for key in states] if self.step_multiply_training_mask else None
            gather, segment = segment_index(tuple(s.numel() for s in sums), sums[0].device)
            (FUSED_ACCUMULATION if fused else add_step_importances_)(sums, raws, masks, gather, segment,
                                                                     ctx.subnormal_guards)
            model.importance_steps.add_(1)

    @torch.no_grad()
    def finalize_(self, model: HATBackbone, task: int) -> None:
        """``I^t``, its storage and the summing strategy; runs after ``commit_task(task)``."""
        steps = model.importance_steps.clamp_min(1)
        strategy = SUMMING_STRATEGIES[self.summing_strategy]
        order = model.trained_tasks()
        for state in model.unit_state.values():
            importance = state.importance_step_sum / steps.to(state.importance_step_sum.dtype)
            importance = importance + self.base_importance
            if self.filter_unmasked_importance:
                importance = importance * state.task_masks[task]
            state.grow_(task + 1)
            state.task_importances[task] = importance
            history = [state.task_importances[k] for k in order]
            state.summed_importance.copy_(strategy.combine(state.summed_importance, history, self.summing_parameter))
        self.reset_(model)

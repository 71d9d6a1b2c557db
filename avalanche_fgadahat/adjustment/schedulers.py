"""FG-AdaHAT's importance schedulers: the factor ``c`` multiplying the parameter importance.

The adjustment rate of a masked-layer parameter is (FG-AdaHAT Eq. (1)–(3))
``a = α / (c · Agg(I^{<t}) + α)`` with ``c = (R_l + b_R) · L``:

* ``R_l``: the current task's mask sparsity of layer ``l`` on the current batch (the HAT
  regulariser's per-layer value, ``masking.regularizer``), ``b_R`` = ``base_mask_sparsity_reg``;
* ``L``, the scheduler's *linear term*, per scheduler:

  * ``linear_sparsity_reg``: ``L = t + b_L`` with ``t`` the 1-based training position of
    the current task (CLArena: the 1-based task id) and ``b_L`` = ``base_linear``;
  * ``sparsity_reg``: ``L = 1``;
  * ``summative_mask_sparsity_reg``: ``L = min(S_l[i], S_{l−1}[j]) + b_L`` per weight,
    ``S_l[i] + b_L`` per bias and for the first layer — AdaHAT's summative mask ``S``
    (number of earlier tasks using a unit) broadcast with ``min`` like HAT's masks. This
    is the reference docstring's formula; CLArena's code adds a float to a dict and
    raises ``TypeError`` (``docs/deviations.md``).

A scheduler returns ``L`` per unit; the plugin broadcasts it to the parameters with
``min`` (so a constant ``L`` stays constant) once per task, since ``L`` does not change
within a task. Only ``R_l`` changes from step to step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..models.base import HATBackbone

LinearTerm = Callable[[HATBackbone, int, float], dict[str, torch.Tensor]]


def _constant(model: HATBackbone, value: float) -> dict[str, torch.Tensor]:
    return {key: torch.full_like(state.summative, value) for key, state in model.unit_state.items()}


def _linear_sparsity_reg(model: HATBackbone, task_position: int, base_linear: float):
    return _constant(model, task_position + base_linear)


def _sparsity_reg(model: HATBackbone, task_position: int, base_linear: float):
    return _constant(model, 1.0)


def _summative_mask_sparsity_reg(model: HATBackbone, task_position: int, base_linear: float):
    return {key: state.summative + base_linear for key, state in model.unit_state.items()}


#: name → ``(model, task_position, base_linear) → {unit_key: L}`` (see module doc)
IMPORTANCE_SCHEDULERS: dict[str, LinearTerm] = {
    "linear_sparsity_reg": _linear_sparsity_reg,
    "sparsity_reg": _sparsity_reg,
    "summative_mask_sparsity_reg": _summative_mask_sparsity_reg,
}

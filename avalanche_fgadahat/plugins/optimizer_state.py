"""Seed Adam's second moment on frozen weights: a CPU speed fix with unchanged updates.

HAT freezes the weights earlier tasks use by multiplying their gradients by a rate of exactly
0, so Adam's moments of those weights start at 0 and stay there: ``m = 0``, ``v = 0``. Every
step torch's CPU Adam (the default ``foreach`` and the single-tensor implementations) takes
``sqrt(v)``, and the CPU ``sqrt`` kernel is several times slower on zeros than on positive
numbers (``benchmarks/adam_zero_state.py``: 5.8× for ``sqrt``, 2.2× for the Adam step of the
MLP's first layer), which made a HAT step with Adam slower than an AdaHAT step.

The update of such a weight is ``lr · m̂ / (sqrt(v̂) + eps)`` with ``m = 0`` at every step (its
gradient is exactly 0 for the whole experience, and weight decay on masked layers is refused),
so it is exactly 0 **whatever** ``v`` is. :func:`seed_frozen_second_moments_` therefore creates
the optimizer state of a masked-layer parameter at the start of an experience, as Adam itself
would (``step`` 0, ``exp_avg`` 0, ``exp_avg_sq`` 0), except that ``exp_avg_sq`` is
:data:`FROZEN_SECOND_MOMENT` where the HAT rate is exactly 0. Every parameter then moves
exactly as before, bit for bit (``tests/test_hat.py``), and ``sqrt`` never sees a zero there.

Applied only where it is known to be exact and useful: ``torch.optim.Adam`` / ``AdamW`` (not
subclasses), CPU parameters, groups without ``fused``, ``capturable``, ``amsgrad`` or
``differentiable``, and parameters whose state is still empty. ``1e30`` decays by ``β₂`` per step
and stays a normal float32 for more than 10⁵ steps at ``β₂ = 0.999``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

FROZEN_SECOND_MOMENT = 1e30
_SKIPPED_GROUP_FLAGS = ("fused", "capturable", "amsgrad", "differentiable")


def _step_dtype() -> torch.dtype:
    # what torch's Adam uses for a CPU-hosted ``step`` (``optimizer._get_scalar_dtype``)
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def seed_frozen_second_moments_(
    optimizer: torch.optim.Optimizer, rates: Iterable[tuple[torch.nn.Parameter, torch.Tensor]]
) -> int:
    """Create the Adam state of each ``(parameter, rate)`` with ``v = 1e30`` where ``rate == 0``.

    Returns how many parameters were seeded (0 for other optimizers, see module doc).
    """
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW):
        return 0
    eligible = {
        id(p)
        for group in optimizer.param_groups
        if not any(group.get(flag) for flag in _SKIPPED_GROUP_FLAGS)
        for p in group["params"]
    }
    seeded = 0
    for param, rate in rates:
        if id(param) not in eligible or param.device.type != "cpu" or optimizer.state.get(param):
            continue
        frozen = torch.as_tensor(rate, device=param.device).expand_as(param) == 0
        if not bool(frozen.any()):
            continue
        optimizer.state[param] = {
            "step": torch.tensor(0.0, dtype=_step_dtype()),
            "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format).masked_fill_(
                frozen, FROZEN_SECOND_MOMENT
            ),
        }
        seeded += 1
    return seeded

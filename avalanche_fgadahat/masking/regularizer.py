"""HAT's mask-sparsity regulariser (Serrà et al. 2018, Eq. (5)).

With the soft training mask ``m_l`` and the cumulative mask ``M_l`` of earlier tasks:

* ``avail_l = Σ_i (1 − M_l[i])`` (units still free), ``occ_l = Σ_i m_l[i] (1 − M_l[i])``;
* per-layer sparsity ``R_l = occ_l / avail_l`` if ``avail_l > 10`` else 0 (AdaHAT and
  FG-AdaHAT read it as the current task's use of the free capacity);
* ``original``: ``reg = c · Σ_l occ_l / Σ_l avail_l`` if ``Σ_l avail_l > 10`` else 0.

``cross`` (CLArena's is broken, see ``docs/deviations.md``) is defined here as the
``original`` term plus the overlap with units used by earlier tasks,
``c · Σ_l Σ_i m_l[i] M_l[i] / Σ_l Σ_i M_l[i]`` (0 while no unit is used): it also pushes
the new task away from units earlier tasks hold, leaving the shared units frozen but
unused. The factor is applied once.

No host synchronisation: the thresholds are applied with ``torch.where``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

MASK_SPARSITY_REG_MODES = ("original", "cross")
MIN_AVAILABLE_UNITS = 10


def _ratio_if_enough(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    enough = denominator > MIN_AVAILABLE_UNITS
    return torch.where(enough, numerator / denominator.clamp_min(1.0), torch.zeros_like(numerator))


def mask_sparsity_regularizer(
    masks: Mapping[str, torch.Tensor],
    cumulative_masks: Mapping[str, torch.Tensor],
    factor: float,
    mode: str = "original",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Return ``(reg, {layer: R_l})``; ``reg`` keeps its graph, the ``R_l`` are detached."""
    occupied, available, overlap, used = [], [], [], []
    sparsity: dict[str, torch.Tensor] = {}
    for key, mask in masks.items():
        free = 1.0 - cumulative_masks[key]
        occ = (mask * free).sum()
        avail = free.sum()
        sparsity[key] = _ratio_if_enough(occ.detach(), avail)
        occupied.append(occ)
        available.append(avail)
        if mode == "cross":
            overlap.append((mask * cumulative_masks[key]).sum())
            used.append(cumulative_masks[key].sum())
    reg = _ratio_if_enough(torch.stack(occupied).sum(), torch.stack(available).sum())
    if mode == "cross":
        total_used = torch.stack(used).sum()
        cross = torch.where(
            total_used > 0,
            torch.stack(overlap).sum() / total_used.clamp_min(1.0),
            torch.zeros_like(reg),
        )
        reg = reg + cross
    return factor * reg, sparsity

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

Speed: ``M`` is constant within an experience, so :class:`MaskSparsityRegularizer` packs
it once; a step then costs a handful of vectorised ops on the flat mask of all layers
(per-layer sums by one ``index_add``), and no host synchronisation (thresholds via
``torch.where``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

MASK_SPARSITY_REG_MODES = ("original", "cross")
MIN_AVAILABLE_UNITS = 10


def _ratio_if_enough(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    enough = denominator > MIN_AVAILABLE_UNITS
    return torch.where(enough, numerator / denominator.clamp_min(1.0), torch.zeros_like(numerator))


class MaskSparsityRegularizer:
    """The regulariser for one experience (fixed ``M``); call it with the flat soft mask."""

    def __init__(self, cumulative_masks: Mapping[str, torch.Tensor], factor: float, mode: str = "original") -> None:
        self.keys = list(cumulative_masks)
        self.factor = factor
        self.mode = mode
        used = torch.cat([cumulative_masks[k].reshape(-1) for k in self.keys])
        sizes = torch.tensor([cumulative_masks[k].numel() for k in self.keys], device=used.device)
        self.segments = torch.repeat_interleave(torch.arange(len(self.keys), device=used.device), sizes)
        self.free = 1.0 - used
        self.available = torch.zeros(len(self.keys), device=used.device).index_add_(0, self.segments, self.free)
        self.total_available = self.available.sum()
        self.used = used
        self.total_used = used.sum()

    def __call__(self, flat_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reg, R)``: ``reg`` keeps its graph; ``R`` (one value per layer) is detached."""
        occupied = torch.zeros_like(self.available).index_add(0, self.segments, flat_mask * self.free)
        sparsity = _ratio_if_enough(occupied.detach(), self.available)
        reg = _ratio_if_enough(occupied.sum(), self.total_available)
        if self.mode == "cross":
            overlap = (flat_mask * self.used).sum()
            reg = reg + torch.where(
                self.total_used > 0, overlap / self.total_used.clamp_min(1.0), torch.zeros_like(reg)
            )
        return self.factor * reg, sparsity

    def per_layer(self, sparsity: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{layer: R_l}`` (0-d views) from the vector ``R`` of :meth:`__call__`."""
        return dict(zip(self.keys, sparsity.unbind()))


def mask_sparsity_regularizer(
    masks: Mapping[str, torch.Tensor],
    cumulative_masks: Mapping[str, torch.Tensor],
    factor: float,
    mode: str = "original",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Return ``(reg, {layer: R_l})`` for per-layer dicts (see module doc)."""
    regularizer = MaskSparsityRegularizer(cumulative_masks, factor, mode)
    reg, sparsity = regularizer(torch.cat([masks[k].reshape(-1) for k in regularizer.keys]))
    return reg, regularizer.per_layer(sparsity)

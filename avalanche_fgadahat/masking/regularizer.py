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

Speed: ``M`` is constant within an experience, so everything but the soft mask is folded
once into two weight tensors (:class:`MaskSparsityRegularizer`): with ``m`` the flat soft
mask of all layers, a step costs ``reg = w · m`` (one dot product, the thresholds, the
factor and the ``cross`` term folded into ``w``) and, only when a rule or a metric asks for
it, ``R = W m`` (one matrix-vector product, ``W[l, i] = (1 − M[i]) / avail_l`` on layer l's
units, 0 elsewhere and for layers with at most 10 free units). No host synchronisation.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

MASK_SPARSITY_REG_MODES = ("original", "cross")
MIN_AVAILABLE_UNITS = 10


def _inverse_if(condition: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``1 / value`` where ``condition`` holds, else 0 (elementwise, no host synchronisation)."""
    return torch.where(condition, 1.0 / value.clamp_min(1.0), torch.zeros_like(value))


class MaskSparsityRegularizer:
    """The regulariser for one experience (fixed ``M``); call it with the flat soft mask."""

    def __init__(self, cumulative_masks: Mapping[str, torch.Tensor], factor: float, mode: str = "original") -> None:
        self.keys = list(cumulative_masks)
        self.factor = factor
        self.mode = mode
        used = torch.cat([cumulative_masks[k].reshape(-1) for k in self.keys])
        sizes = torch.tensor([cumulative_masks[k].numel() for k in self.keys], device=used.device)
        segments = torch.repeat_interleave(torch.arange(len(self.keys), device=used.device), sizes)
        free = 1.0 - used
        available = torch.zeros(len(self.keys), device=used.device, dtype=free.dtype).index_add_(0, segments, free)
        # R_l = Σ_{i∈l} m_i (1 − M_i) / avail_l  (0 when avail_l ≤ 10): one row of W per layer
        per_layer = free * _inverse_if(available > MIN_AVAILABLE_UNITS, available)[segments]
        self.sparsity_weights = torch.zeros(len(self.keys), used.numel(), device=used.device, dtype=free.dtype)
        self.sparsity_weights[segments, torch.arange(used.numel(), device=used.device)] = per_layer
        # reg = c · Σ_i m_i (1 − M_i) / Σ avail  (0 when Σ avail ≤ 10)
        total_available = available.sum()
        weights = free * _inverse_if(total_available > MIN_AVAILABLE_UNITS, total_available)
        if mode == "cross":  # + c · Σ_i m_i M_i / Σ_i M_i  (0 while no unit is used)
            total_used = used.sum()
            weights = weights + used * _inverse_if(total_used > 0, total_used)
        self.weights = factor * weights

    def __call__(self, flat_mask: torch.Tensor) -> torch.Tensor:
        """``reg`` (differentiable in ``flat_mask``)."""
        return torch.dot(self.weights, flat_mask)

    def sparsity(self, flat_mask: torch.Tensor) -> torch.Tensor:
        """``R``, one value per layer, detached."""
        return torch.mv(self.sparsity_weights, flat_mask.detach())

    def per_layer(self, sparsity: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{layer: R_l}`` (0-d views) from the vector ``R`` of :meth:`sparsity`."""
        return dict(zip(self.keys, sparsity.unbind()))


def mask_sparsity_regularizer(
    masks: Mapping[str, torch.Tensor],
    cumulative_masks: Mapping[str, torch.Tensor],
    factor: float,
    mode: str = "original",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Return ``(reg, {layer: R_l})`` for per-layer dicts (see module doc)."""
    regularizer = MaskSparsityRegularizer(cumulative_masks, factor, mode)
    flat_mask = torch.cat([masks[k].reshape(-1) for k in regularizer.keys])
    return regularizer(flat_mask), regularizer.per_layer(regularizer.sparsity(flat_mask))

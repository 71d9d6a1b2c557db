"""The HAT gate: annealed sigmoid masks and the embedding-gradient compensation.

Serrà et al. (2018), "Overcoming catastrophic forgetting with hard attention to the task":

* Eq. (1): the mask of layer l for task t is ``m_l = σ(s · e_l)``.
* Eq. (3): during an epoch of B batches the scale is annealed,
  ``s = 1/s_max + (s_max − 1/s_max) · (b − 1)/(B − 1)`` for ``b = 1..B``.
* Eq. (4): the gradient of the embedding is compensated by
  ``(s_max / s) · (cosh(clamp(s·e, −θ, θ)) + 1) / (cosh(e) + 1)``.

Deviation from CLArena: the reference feeds Lightning's 0-based ``batch_idx`` into the
formula, so the first batch of every epoch gets a negative ``s`` (an inverted mask and a
negative compensation). Here ``b`` is 1-based, so ``s`` runs exactly from ``1/s_max`` on
the first batch to ``s_max`` on the last (see ``docs/deviations.md``).
"""

from __future__ import annotations

import torch


def annealed_scale(batch: int, num_batches: int, s_max: float) -> float:
    """Gate scale ``s`` of HAT Eq. (3) for the 1-based ``batch`` of ``num_batches``.

    With a single batch per epoch the annealing has no room, and ``s_max`` is used.
    """
    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches}")
    if not 1 <= batch <= num_batches:
        raise ValueError(f"batch must be in 1..{num_batches}, got {batch}")
    if num_batches == 1:
        return float(s_max)
    return 1.0 / s_max + (s_max - 1.0 / s_max) * (batch - 1) / (num_batches - 1)


def soft_mask(embedding: torch.Tensor, scale: float) -> torch.Tensor:
    """HAT Eq. (1): ``σ(s · e)``."""
    return torch.sigmoid(scale * embedding)


def binary_mask(embedding: torch.Tensor) -> torch.Tensor:
    """The test-time mask ``1[e > 0]`` (``σ(s·e) > 0.5`` for any s > 0), detached."""
    return (embedding.detach() > 0).to(embedding.dtype)


def compensate_embedding_gradient_(
    embedding: torch.Tensor, scale: float, s_max: float, clamp_threshold: float
) -> None:
    """Multiply ``embedding.grad`` in place by the compensation factor of HAT Eq. (4)."""
    grad = embedding.grad
    if grad is None:
        return
    e = embedding.detach()
    numerator = torch.cosh(torch.clamp(scale * e, -clamp_threshold, clamp_threshold)) + 1
    denominator = torch.cosh(e) + 1
    grad.mul_(numerator.div_(denominator).mul_(s_max / scale))

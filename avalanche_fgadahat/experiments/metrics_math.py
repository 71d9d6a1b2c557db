"""Continual-learning summary measures from an accuracy matrix.

``A[i][j]`` is the test accuracy on task ``j`` after training tasks ``0..i`` (``T × T``,
0-based). With ``T`` tasks:

* ACC after task ``i``:  ``(1 / (i+1)) Σ_{j ≤ i} A[i][j]`` — mean over the tasks seen so far;
  ACC = ACC after the last task ``= (1/T) Σ_j A[T−1][j]`` (Lopez-Paz & Ranzato 2017, Eq. 2).
* BWT = ``(1 / (T−1)) Σ_{j < T−1} (A[T−1][j] − A[j][j])`` (Lopez-Paz & Ranzato 2017, Eq. 3):
  how much learning later tasks changed earlier ones (negative = forgetting).
* Forgetting = ``(1 / (T−1)) Σ_{j < T−1} max_{l ∈ [j, T−2]} (A[l][j] − A[T−1][j])``
  (Chaudhry et al. 2018, Eq. 4): the drop from each task's best accuracy to its final one.

BWT and forgetting need ``T ≥ 2`` (``None`` otherwise). Avalanche's ``StreamForgetting``
uses ``A[j][j]`` instead of the maximum, i.e. ``−BWT`` when nothing is gained back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Matrix = Sequence[Sequence[float]]


def _square(matrix: Matrix) -> int:
    size = len(matrix)
    if size == 0 or any(len(row) != size for row in matrix):
        shape = [len(row) for row in matrix]
        raise ValueError(f"accuracy matrix must be square T×T with T ≥ 1, got row lengths {shape}")
    return size


def accuracy_after_each_task(matrix: Matrix) -> list[float]:
    """``[ACC after task 0, …, ACC after task T−1]``."""
    size = _square(matrix)
    return [sum(matrix[i][: i + 1]) / (i + 1) for i in range(size)]


def average_accuracy(matrix: Matrix) -> float:
    """ACC: the mean accuracy over all tasks after the last one."""
    size = _square(matrix)
    return sum(matrix[size - 1]) / size


def backward_transfer(matrix: Matrix) -> float | None:
    """BWT (see module doc); ``None`` for a single task."""
    size = _square(matrix)
    if size < 2:
        return None
    last = matrix[size - 1]
    return sum(last[j] - matrix[j][j] for j in range(size - 1)) / (size - 1)


def forgetting(matrix: Matrix) -> float | None:
    """Average forgetting (see module doc); ``None`` for a single task."""
    size = _square(matrix)
    if size < 2:
        return None
    last = matrix[size - 1]
    drops = [max(matrix[l][j] for l in range(j, size - 1)) - last[j] for j in range(size - 1)]
    return sum(drops) / (size - 1)


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (``ddof = 1``) of the non-``None`` values.

    ``(None, None)`` without values; the std is ``None`` for a single value.
    """
    present = [float(v) for v in values if v is not None]
    if not present:
        return None, None
    mean = sum(present) / len(present)
    if len(present) < 2:
        return mean, None
    variance = sum((v - mean) ** 2 for v in present) / (len(present) - 1)
    return mean, math.sqrt(variance)

"""Benchmarks that need no download, and fast in-memory Permuted MNIST.

* :func:`split_digits` — scikit-learn's real 8×8 handwritten digits (1797 images, shipped
  with scikit-learn) split into task-incremental experiences: the embedded default data
  set of the package, usable on any machine without a network.
* :func:`fast_permuted_mnist` — the same benchmark as Avalanche's
  ``PermutedMNIST(return_task_id=True)`` (same permutations from the same seed, same
  normalisation), but with every permuted image computed once into a tensor instead of
  on every access of every epoch.
"""

from __future__ import annotations

import numpy as np
import torch
from avalanche.benchmarks import tensors_benchmark

from ._validation import check_number


def split_digits(
    n_experiences: int = 5,
    *,
    test_fraction: float = 0.3,
    seed: int = 0,
    class_ids_from_zero_in_each_exp: bool = True,
):
    """Task-incremental Split Digits: ``n_experiences`` tasks of ``10 / n_experiences`` classes.

    Pixels are scaled to [0, 1] (features are 8×8 = 64). The split into train and test is
    stratified and fixed by ``seed``. Each experience carries its task label (0..n−1) and,
    by default, class ids renumbered from 0 within the task (one small head per task).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    check_number("n_experiences", n_experiences, minimum=1, maximum=10, integer=True)
    if 10 % n_experiences:
        raise ValueError(f"n_experiences must divide 10 (1, 2, 5 or 10), got {n_experiences}")
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=test_fraction, random_state=seed, stratify=digits.target
    )
    per_task = 10 // n_experiences
    train, test = [], []
    for task in range(n_experiences):
        classes = torch.arange(task * per_task, (task + 1) * per_task)
        for indices, out in ((train_idx, train), (test_idx, test)):
            idx = torch.as_tensor(indices)
            keep = idx[torch.isin(y[idx], classes)]
            labels = y[keep] - (task * per_task if class_ids_from_zero_in_each_exp else 0)
            out.append((x[keep], labels))
    return tensors_benchmark(
        train_tensors=train, test_tensors=test, task_labels=list(range(n_experiences))
    )

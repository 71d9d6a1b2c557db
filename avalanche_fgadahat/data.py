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
    class_ids_from_zero_in_each_exp: bool | None = None,
    return_task_id: bool = True,
):
    """Split Digits: ``n_experiences`` experiences of ``10 / n_experiences`` classes.

    Pixels are scaled to [0, 1] (features are 8×8 = 64). The split into train and test is
    stratified and fixed by ``seed``. Task-incremental (default): each experience carries its
    task label (0..n−1) and, by default, class ids renumbered from 0 within the task (one small
    head per task). ``return_task_id=False``: class-incremental, as Avalanche's
    ``SplitMNIST(return_task_id=False)``: every experience has task label 0 and global class ids.

    :raises ValueError: ``class_ids_from_zero_in_each_exp=True`` without task labels (the
        classes of different experiences would share ids).
    """
    if class_ids_from_zero_in_each_exp is None:
        class_ids_from_zero_in_each_exp = return_task_id
    if class_ids_from_zero_in_each_exp and not return_task_id:
        raise ValueError("class_ids_from_zero_in_each_exp=True needs return_task_id=True: without task "
                         "labels the experiences' classes must keep their global ids")
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
    return tensors_benchmark(train_tensors=train, test_tensors=test,
                             task_labels=list(range(n_experiences)) if return_task_id else [0] * n_experiences)


def permuted_digits(n_experiences: int = 10, *, test_fraction: float = 0.3, seed: int = 0,
                    return_task_id: bool = True):
    """Task-incremental Permuted Digits: every task is all 10 digit classes under its own
    fixed permutation of the 64 pixels (the Permuted MNIST protocol on the embedded
    scikit-learn digits, no download).

    The stratified train/test split is fixed (``random_state=0``, as :func:`split_digits`);
    the permutations come from ``np.random.RandomState(seed)``, one ``permutation(64)`` per
    task in task order (as Avalanche's ``PermutedMNIST`` draws them), so the seed varies
    the tasks. Pixels are scaled to [0, 1]; task labels 0..n−1 (all 0 with
    ``return_task_id=False``: domain-incremental); classes 0..9 in every task.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    check_number("n_experiences", n_experiences, minimum=1, integer=True)
    check_number("test_fraction", test_fraction, minimum=0.0, maximum=1.0, strict_minimum=True)
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=test_fraction, random_state=0, stratify=digits.target
    )
    rng = np.random.RandomState(seed)
    train, test = [], []
    for _ in range(n_experiences):
        permutation = torch.from_numpy(rng.permutation(64)).type(torch.int64)
        for indices, out in ((train_idx, train), (test_idx, test)):
            idx = torch.as_tensor(indices)
            out.append((x[idx][:, permutation], y[idx]))
    return tensors_benchmark(train_tensors=train, test_tensors=test,
                             task_labels=list(range(n_experiences)) if return_task_id else [0] * n_experiences)


#: Avalanche's MNIST normalisation (``cmnist._default_mnist_train_transform``).
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def _class_ordered(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stable sort by class: the sample order ``nc_benchmark`` gives each experience."""
    order = torch.sort(y, stable=True).indices
    return x[order], y[order]


def fast_permuted_mnist(
    n_experiences: int,
    seed: int | None = None,
    dataset_root=None,
    return_task_id: bool = True,
):
    """Avalanche's ``PermutedMNIST``, with every permuted image computed once.

    Reproduces ``avalanche.benchmarks.classic.PermutedMNIST(n_experiences,
    return_task_id=..., seed=seed, dataset_root=...)`` sample for sample:

    * one ``np.random.RandomState(seed)``; experience ``k`` uses its ``k``-th
      ``permutation(784)`` of the flattened pixels (Avalanche draws them in the same order);
    * pixels ``x / 255`` permuted, then normalised ``(x − 0.1307) / 0.3081`` (Avalanche's
      default train and eval transform; elementwise, so its order with the permutation
      does not matter);
    * the samples of each experience ordered by class (stable), as ``nc_benchmark`` orders
      them, so index ``i`` is the same image in both and a seeded shuffle draws the same
      mini-batches; task label ``k`` (or 0 with ``return_task_id=False``).

    Costs ``n_experiences × 70 000 × 784 × 4`` bytes (about 220 MB per experience).
    """
    from avalanche.benchmarks.datasets.external_datasets.mnist import get_mnist_dataset

    check_number("n_experiences", n_experiences, minimum=1, integer=True)
    mnist_train, mnist_test = get_mnist_dataset(dataset_root)
    flat = [
        (split.data.reshape(len(split.data), -1).float() / 255.0, split.targets.clone())
        for split in (mnist_train, mnist_test)
    ]
    rng = np.random.RandomState(seed)
    train, test = [], []
    for _ in range(n_experiences):
        permutation = torch.from_numpy(rng.permutation(784)).type(torch.int64)
        for (pixels, targets), out in zip(flat, (train, test)):
            images = ((pixels[:, permutation] - MNIST_MEAN) / MNIST_STD).view(-1, 1, 28, 28)
            out.append(_class_ordered(images, targets))
    task_labels = list(range(n_experiences)) if return_task_id else [0] * n_experiences
    return tensors_benchmark(train_tensors=train, test_tensors=test, task_labels=task_labels)

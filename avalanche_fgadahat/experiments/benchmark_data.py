"""The benchmarks of the presets: ``build(settings, seed)`` → an Avalanche benchmark.

With task labels (task-incremental): ``digits``, ``pdigits``, ``pmnist``, ``smnist``,
``split_cifar100``. Without (the HAT family infers the task, ``scenarios.py``): ``digits_ci``
and ``smnist_ci`` (class-incremental), ``pdigits_di`` and ``pmnist_di`` (domain-incremental).
"""

from __future__ import annotations

from typing import Any


def digits(s: Any, seed: int) -> Any:
    """``split_digits``: task-incremental Split digits (task labels, class ids from 0 per task)."""
    from ..data import split_digits

    return split_digits(s.n_experiences, seed=seed)


def pdigits(s: Any, seed: int) -> Any:
    """``permuted_digits``: task-incremental Permuted digits."""
    from ..data import permuted_digits

    return permuted_digits(s.n_experiences, seed=seed)


def pmnist(s: Any, seed: int) -> Any:
    """``fast_permuted_mnist``: Permuted MNIST with task labels (MNIST from ``data_root``)."""
    from ..data import fast_permuted_mnist

    return fast_permuted_mnist(s.n_experiences, seed=seed, dataset_root=s.data_root)


def _split_mnist(s: Any, seed: int, task_labels: bool) -> Any:
    """Avalanche's ``SplitMNIST``, fixed class order; with task labels, classes renumbered per task."""
    from avalanche.benchmarks.classic import SplitMNIST

    return SplitMNIST(s.n_experiences, return_task_id=task_labels, seed=seed, fixed_class_order=list(range(10)),
                      class_ids_from_zero_in_each_exp=task_labels, dataset_root=s.data_root)


def smnist(s: Any, seed: int) -> Any:
    """Avalanche's ``SplitMNIST`` with task labels, classes renumbered per task, fixed class order."""
    return _split_mnist(s, seed, task_labels=True)


def digits_ci(s: Any, seed: int) -> Any:
    """``split_digits(return_task_id=False)``: class-incremental Split digits."""
    from ..data import split_digits

    return split_digits(s.n_experiences, seed=seed, return_task_id=False)


def pdigits_di(s: Any, seed: int) -> Any:
    """``permuted_digits(return_task_id=False)``: domain-incremental Permuted digits."""
    from ..data import permuted_digits

    return permuted_digits(s.n_experiences, seed=seed, return_task_id=False)


def pmnist_di(s: Any, seed: int) -> Any:
    """``fast_permuted_mnist(return_task_id=False)``: domain-incremental Permuted MNIST."""
    from ..data import fast_permuted_mnist

    return fast_permuted_mnist(s.n_experiences, seed=seed, dataset_root=s.data_root, return_task_id=False)


def smnist_ci(s: Any, seed: int) -> Any:
    """Avalanche's ``SplitMNIST(return_task_id=False)``: class-incremental, global class ids, fixed class order."""
    return _split_mnist(s, seed, task_labels=False)


def split_cifar100(s: Any, seed: int) -> Any:
    """Avalanche's ``SplitCIFAR100`` with task labels, no augmentation."""
    from avalanche.benchmarks.classic import SplitCIFAR100
    from avalanche.benchmarks.classic.ccifar100 import _default_cifar100_eval_transform

    # No augmentation: CLArena HEAD's split_cifar100.yaml has none.
    return SplitCIFAR100(
        s.n_experiences,
        return_task_id=True,
        seed=seed,
        fixed_class_order=list(range(100)),
        class_ids_from_zero_in_each_exp=True,
        train_transform=_default_cifar100_eval_transform,
        eval_transform=_default_cifar100_eval_transform,
        dataset_root=s.data_root,
    )

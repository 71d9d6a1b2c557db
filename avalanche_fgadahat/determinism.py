"""Seeding for reproducible runs.

Avalanche 0.6 has no ``set_seed`` function (neither ``avalanche.training.utils`` nor
``avalanche.training.determinism`` defines one); its seeding entry point is
``RNGManager.set_random_seeds``, which seeds Python's ``random``, NumPy's global RNG, the
torch CPU generator and every CUDA device. Those are also the generators whose state
Avalanche's checkpoints store and restore, so a seeded run that is checkpointed and
resumed continues the same random stream (``tests/test_reliability.py``).

On CPU, seeding is enough for bit-identical runs (same machine, same library versions,
``num_workers=0`` data loaders). On GPU, some kernels (e.g. atomics in convolution
backward, scatter/index_add) are non-deterministic: pass ``deterministic_algorithms=True``.
"""

from __future__ import annotations

import os

import torch
from avalanche.training.determinism.rng_manager import RNGManager

from ._validation import check_number


def set_seed(seed: int, *, deterministic_algorithms: bool = False) -> None:
    """Seed every generator Avalanche manages; optionally force deterministic kernels.

    :param seed: an integer in ``[0, 2**32 − 1]`` (NumPy's range).
    :param deterministic_algorithms: also call ``torch.use_deterministic_algorithms(True)``,
        disable the cuDNN autotuner and set ``CUBLAS_WORKSPACE_CONFIG=":4096:8"`` if unset
        (cuBLAS reads it when first used: call this before any CUDA work). Operations
        without a deterministic implementation then raise instead of varying.
    """
    check_number("seed", seed, minimum=0, maximum=2**32 - 1, integer=True)
    if not isinstance(deterministic_algorithms, bool):
        raise ValueError(f"deterministic_algorithms must be True or False, got {deterministic_algorithms!r}")
    RNGManager.set_random_seeds(seed)
    if deterministic_algorithms:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True

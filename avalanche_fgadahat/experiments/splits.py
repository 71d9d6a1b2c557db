"""The benchmark a run trains on: the preset's, subsampled, or its tuning twin.

* :func:`build_benchmark` — the preset's benchmark for a seed, each experience cut to at most
  ``max_train_samples`` / ``max_test_samples`` samples (a seeded random subset); what every
  test-set run of a sweep trains and evaluates on.
* :func:`validation_benchmark` — what ``--tune`` scores hyperparameters on: each task's
  (capped) **training** data split, seeded, into a fit part (90 %) and a validation part
  (10 %), given as the benchmark's train and evaluation streams. Avalanche's builders make the
  test stream too, but this function never reads it (``tests/test_ray_executor.py`` replaces
  it by an object that raises on access).
"""

from __future__ import annotations

from typing import Any

import torch

from .presets import BENCHMARKS, ExperimentSettings

#: the share of each task's training data held out for ``--tune``'s validation score
VALIDATION_FRACTION = 0.1


def raw_benchmark(settings: ExperimentSettings, seed: int):
    """The preset's benchmark for ``seed``, as its builder returns it (train and test streams)."""
    benchmark = BENCHMARKS[settings.benchmark].build(settings, seed)
    found = len(benchmark.train_stream)
    if found != settings.n_experiences:
        raise ValueError(f"benchmark has {found} experiences, expected n_experiences={settings.n_experiences}")
    return benchmark


def build_benchmark(settings: ExperimentSettings, seed: int):
    """The preset's benchmark for ``seed``, subsampled per experience if asked."""
    benchmark = raw_benchmark(settings, seed)
    if settings.max_train_samples is None and settings.max_test_samples is None:
        return benchmark
    return _subsample(benchmark, settings.max_train_samples, settings.max_test_samples, seed)


def _cut(dataset, limit: int | None, generator: torch.Generator):
    """At most ``limit`` samples: a seeded random subset, in the dataset's order."""
    if limit is None or len(dataset) <= limit:
        return dataset
    keep = torch.randperm(len(dataset), generator=generator)[:limit].sort().values
    return dataset.subset(keep.tolist())


def _subsample(benchmark, max_train: int | None, max_test: int | None, seed: int):
    """At most ``max_*`` samples per experience: a seeded random subset (datasets may be
    ordered by class), keeping each dataset's task labels and transforms."""
    from avalanche.benchmarks import dataset_benchmark

    generator = torch.Generator().manual_seed(seed)
    train = [_cut(e.dataset, max_train, generator) for e in benchmark.train_stream]
    test = [_cut(e.dataset, max_test, generator) for e in benchmark.test_stream]
    return dataset_benchmark(train, test)


def split_indices(size: int, fraction: float, generator: torch.Generator) -> tuple[list[int], list[int]]:
    """``(fit, validation)`` indices of a dataset of ``size`` samples: a seeded random
    ``fraction`` (at least one sample, at most ``size - 1``) for validation, disjoint, each
    in increasing order."""
    if size < 2:
        raise ValueError(f"a task has {size} training sample(s); the validation split needs at least 2")
    held = min(size - 1, max(1, round(fraction * size)))
    order = torch.randperm(size, generator=generator)
    return order[held:].sort().values.tolist(), order[:held].sort().values.tolist()


def validation_benchmark(settings: ExperimentSettings, seed: int, fraction: float = VALIDATION_FRACTION):
    """The tuning benchmark of ``seed``: per task, the (``max_train_samples``-capped) training
    data split into fit (train stream) and validation (evaluation stream) parts.

    Only the training stream of the preset's benchmark is read; the capped training sets are
    those :func:`build_benchmark` gives the test-set runs, so the validation samples are
    training samples of the final runs too, never test samples. ``max_test_samples`` does not
    apply (there is no test data here).
    """
    from avalanche.benchmarks import dataset_benchmark

    benchmark = raw_benchmark(settings, seed)
    cap = torch.Generator().manual_seed(seed)  # draws as build_benchmark's: the same training subsets
    capped = [_cut(e.dataset, settings.max_train_samples, cap) for e in benchmark.train_stream]
    generator = torch.Generator().manual_seed(seed)
    fit, validation = [], []
    for dataset in capped:
        fit_idx, val_idx = split_indices(len(dataset), fraction, generator)
        fit.append(dataset.subset(fit_idx))
        validation.append(dataset.subset(val_idx))
    return dataset_benchmark(fit, validation)


def stream_sizes(benchmark: Any) -> dict[str, list[int]]:
    """Samples per experience of the benchmark's train and evaluation (``test``) streams."""
    return {
        "train": [len(e.dataset) for e in benchmark.train_stream],
        "eval": [len(e.dataset) for e in benchmark.test_stream],
    }

"""Fixtures shared by the test modules.

The benchmarks are session-scoped: built once, and no test mutates them (training,
evaluation and model adaptation only read the experiences). Plain helpers (the quiet
evaluator, model builders, state snapshots) are in ``hat_test_support.py``; the conformance
checks every backbone passes are in ``backbone_conformance.py``.
"""

from __future__ import annotations

import pytest

# the shared modules hold assertions: rewrite them as pytest does the test modules
pytest.register_assert_rewrite("hat_test_support", "backbone_conformance")

from hat_test_support import digits_benchmark  # noqa: E402


@pytest.fixture(scope="session")
def digits5():
    """``split_digits(5)``: five tasks of two classes, class ids from 0 in each task."""
    return digits_benchmark(5)


@pytest.fixture(scope="session")
def digits2():
    """``split_digits(2)``: two tasks of five classes each."""
    return digits_benchmark(2)


@pytest.fixture(scope="session")
def digits5_global_ids():
    """``split_digits(5, class_ids_from_zero_in_each_exp=False)``: task t holds classes 2t, 2t+1."""
    return digits_benchmark(5, class_ids_from_zero_in_each_exp=False)


@pytest.fixture(scope="session")
def digits2_global_ids():
    """``split_digits(2, class_ids_from_zero_in_each_exp=False)``: classes 0–4, then 5–9."""
    return digits_benchmark(2, class_ids_from_zero_in_each_exp=False)


@pytest.fixture(scope="session")
def first_experience(digits5):
    """Task 0 of :func:`digits5` (two classes)."""
    return digits5.train_stream[0]

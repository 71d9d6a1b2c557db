"""FG-AdaHAT's importance summing strategies: ``I^{<t+1}`` from ``I^{<t}`` and ``I^1..I^t``.

At the end of each task the finalised importance ``I^t`` of every unit joins those of the
earlier tasks; a strategy turns the history ``I^1, …, I^n`` (``n`` = number of trained
tasks, in **training order**: ``I^n`` is the task just finished) and the previous
``I^{<t}`` into the summed importance that drives the next task's adjustment rate.

Accumulating strategies (CLArena's behaviour, kept: the running total is *not* reset):

* ``add_latest``:  ``I^{<t+1} = I^{<t} + I^n``  (plain sum of all tasks' importances);
* ``add_all``:     ``I^{<t+1} = I^{<t} + Σ_k I^k``, so after n tasks
  ``I^{<n+1} = Σ_k (n − k + 1) I^k``: the older a task, the more it weighs;
* ``add_average``: ``I^{<t+1} = I^{<t} + (1/n) Σ_k I^k``.

Weighted strategies, recomputed from the history: ``I^{<t+1} = Σ_k w(a_k) I^k`` with the
age ``a_k = n − k + 1`` (1 for the task just finished), the weight decreasing with the
training position ``k`` (older tasks weigh more, as CLArena's weights):

* ``linear_decrease``:      ``w = s (a − 1) + 1``  (``importance_summing_strategy_linear_step`` s > 0);
* ``quadratic_decrease``:   ``w = a²``;
* ``cubic_decrease``:       ``w = a³``;
* ``exponential_decrease``: ``w = r^a``  (``importance_summing_strategy_exponential_rate`` r > 1);
* ``log_decrease``:         ``w = log_b(a) + 1``  (``importance_summing_strategy_log_base`` b > 1);
* ``factorial_decrease``:   ``w = a!``  (overflows float32 to ``inf`` from the 35th task).

Deviations from CLArena (``docs/deviations.md``): its weighted strategies add only the
latest task's term (the ``+=`` sits after the loop over tasks), and its ``log_decrease``
computes ``log_b(a − 1) + 1``, i.e. ``log 0`` for the latest task, which raises; here every
task is weighted and the log uses the age ``a ≥ 1``, so the latest task weighs 1 as in
the linear, quadratic, cubic and factorial strategies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Combine = Callable[[torch.Tensor, Sequence[torch.Tensor], "float | None"], torch.Tensor]


@dataclass(frozen=True)
class SummingStrategy:
    """``combine(I^{<t}, [I^1..I^n], parameter) → I^{<t+1}``.

    ``parameter`` names the constructor argument the strategy needs (``None`` if none);
    it must be ``> parameter_lower_bound``.
    """

    combine: Combine
    parameter: str | None = None
    parameter_lower_bound: float | None = None


def _add_latest(previous, history, _):
    return previous + history[-1]


def _add_all(previous, history, _):
    return previous + torch.stack(list(history)).sum(0)


def _add_average(previous, history, _):
    return previous + torch.stack(list(history)).sum(0) / len(history)


def _weighted(weight: Callable[[int, "float | None"], float]) -> Combine:
    """``Σ_k w(a_k) I^k`` with ``a_k = n − k + 1`` (the previous total is discarded)."""

    def combine(previous, history, parameter):
        n = len(history)
        total = torch.zeros_like(previous)
        for k, importance in enumerate(history, start=1):
            total = total + weight(n - k + 1, parameter) * importance
        return total

    return combine


SUMMING_STRATEGIES: dict[str, SummingStrategy] = {
    "add_latest": SummingStrategy(_add_latest),
    "add_all": SummingStrategy(_add_all),
    "add_average": SummingStrategy(_add_average),
    "linear_decrease": SummingStrategy(
        _weighted(lambda age, step: step * (age - 1) + 1),
        "importance_summing_strategy_linear_step",
        0.0,
    ),
    "quadratic_decrease": SummingStrategy(_weighted(lambda age, _: float(age**2))),
    "cubic_decrease": SummingStrategy(_weighted(lambda age, _: float(age**3))),
    "exponential_decrease": SummingStrategy(
        _weighted(lambda age, rate: rate**age),
        "importance_summing_strategy_exponential_rate",
        1.0,
    ),
    "log_decrease": SummingStrategy(
        _weighted(lambda age, base: math.log(age, base) + 1.0),
        "importance_summing_strategy_log_base",
        1.0,
    ),
    "factorial_decrease": SummingStrategy(_weighted(lambda age, _: float(math.factorial(age)))),
}

#: every strategy-specific constructor argument, with the strategy that uses it
STRATEGY_PARAMETERS: dict[str, str] = {
    s.parameter: name for name, s in SUMMING_STRATEGIES.items() if s.parameter is not None
}

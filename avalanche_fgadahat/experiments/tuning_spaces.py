"""What ``--tune`` searches: each method's own hyperparameters and their ranges, declared once.

:data:`SEARCH_SPACES` maps a strategy's base name (the key of ``settings.STRATEGY_SETTINGS``;
every ``fgadahat:<importance>`` shares ``fgadahat``) to the settings searched and their
ranges; methods absent from it (``naive``, ``joint``) have nothing to tune and run with
their settings. Every range holds the method's default, which is always the first trial
(``tuning.py``), so tuning never ends below the default on the validation split.

This module is plain data: Ray Tune's sampling objects are made from it only when a search
starts (:meth:`Dimension.to_tune`), so the harness imports it without Ray.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Dimension:
    """One searched setting: ``kind`` ``"loguniform"`` or ``"uniform"`` over ``[low, high]``,
    or ``"choice"`` among ``values``."""

    key: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    values: tuple[Any, ...] = ()

    def to_tune(self, tune) -> Any:
        """Ray Tune's sampling object (``tune`` is the ``ray.tune`` module)."""
        if self.kind == "loguniform":
            return tune.loguniform(self.low, self.high)
        if self.kind == "uniform":
            return tune.uniform(self.low, self.high)
        return tune.choice(list(self.values))

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in the range (or is one of the choices)."""
        if self.kind == "choice":
            return value in self.values
        return isinstance(value, (int, float)) and self.low <= value <= self.high

    def describe(self) -> str:
        """``key ∈ [low, high] (log)`` or ``key ∈ {a, b, ...}``."""
        if self.kind == "choice":
            return f"{self.key} ∈ {{{', '.join(str(v) for v in self.values)}}}"
        scale = " (log)" if self.kind == "loguniform" else ""
        return f"{self.key} ∈ [{self.low:g}, {self.high:g}]{scale}"


def loguniform(key: str, low: float, high: float) -> Dimension:
    """A setting searched log-uniformly over ``[low, high]`` (``0 < low < high``)."""
    assert 0 < low < high and math.isfinite(high)
    return Dimension(key, "loguniform", low, high)


def uniform(key: str, low: float, high: float) -> Dimension:
    """A setting searched uniformly over ``[low, high]``."""
    assert low < high
    return Dimension(key, "uniform", low, high)


def choice(key: str, *values: Any) -> Dimension:
    """A setting searched among ``values``."""
    return Dimension(key, "choice", values=tuple(values))


@dataclass(frozen=True)
class SearchSpace:
    """A method's searched settings, and where the ranges come from."""

    dimensions: tuple[Dimension, ...]
    source: str

    @property
    def keys(self) -> tuple[str, ...]:
        """The searched settings' names."""
        return tuple(d.key for d in self.dimensions)

    def describe(self) -> str:
        """The ranges, separated by semicolons."""
        return "; ".join(d.describe() for d in self.dimensions)


_HAT_SPACE = (loguniform("s_max", 25.0, 800.0), loguniform("mask_sparsity_reg_factor", 0.1, 2.5))
_HAT_SOURCE = "HAT paper's 'good operating ranges': s_max 25-800, c 0.1-2.5"

SEARCH_SPACES: Mapping[str, SearchSpace] = MappingProxyType({
    "fgadahat": SearchSpace(
        (loguniform("adjustment_intensity", 3e-8, 1e-6), loguniform("base_linear", 1.0, 20.0)),
        "FG-AdaHAT paper's grid (alpha 1e-7-3e-7 x b_L 1-20, PMNIST-20 ICU) with alpha widened 3x each way",
    ),
    "adahat": SearchSpace((loguniform("adjustment_intensity", 1e-7, 1e-5),),
                          "10x each way around the AdaHAT paper's alpha 1e-6"),
    "hat": SearchSpace(_HAT_SPACE, _HAT_SOURCE),
    "hat_random": SearchSpace(_HAT_SPACE, _HAT_SOURCE),
    "hat_const_1": SearchSpace(_HAT_SPACE, _HAT_SOURCE),
    "hat_const_alpha": SearchSpace((*_HAT_SPACE, loguniform("alpha", 1e-7, 1e-5)),
                                   _HAT_SOURCE + "; alpha 10x each way around 1e-6"),
    "ewc": SearchSpace((loguniform("ewc_lambda", 1.0, 1e5),), "no reference value: 1 to 1e5, log scale"),
    "si": SearchSpace((loguniform("si_lambda", 0.01, 100.0),),
                      "100x each way around continual-learning-baselines' lambda 1"),
    "lwf": SearchSpace((loguniform("alpha", 0.1, 10.0), uniform("temperature", 1.0, 4.0)),
                       "alpha 10x each way around 1; temperature 1-4 around Li & Hoiem's 2"),
    "mas": SearchSpace((loguniform("lambda_reg", 0.01, 100.0),),
                       "100x each way around continual-learning-baselines' lambda 1"),
    "packnet": SearchSpace((choice("prune_proportion", "equal_share", 0.5, 0.6, 0.7, 0.8, 0.9),),
                           "the equal share per task, or one proportion pruned after every task"),
})


def search_space(base: str) -> SearchSpace | None:
    """The search space of the strategy with base name ``base``; ``None``: nothing to tune."""
    return SEARCH_SPACES.get(base)

"""A metric that emits a dict of named values after every training experience."""

from __future__ import annotations

from avalanche.evaluation import PluginMetric
from avalanche.evaluation.metric_results import MetricResult, MetricValue


class ExperienceValuesMetric(PluginMetric[dict]):
    """Base of the per-experience metrics: subclasses give :meth:`compute` (``{key: value}``
    or ``None`` for nothing to emit) and :meth:`metric_name`; the values are emitted in the
    train phase at ``x = clock.train_iterations`` and kept as :meth:`result`."""

    def __init__(self) -> None:
        super().__init__()
        self._values: dict[str, float] = {}

    def reset(self) -> None:
        self._values = {}

    def result(self) -> dict[str, float]:
        return dict(self._values)

    def compute(self, strategy) -> dict[str, float] | None:
        raise NotImplementedError

    def metric_name(self, strategy, key: str) -> str:
        return f"{self}/{key}"

    def after_training_exp(self, strategy) -> MetricResult:
        values = self.compute(strategy)
        if values is None:
            return None
        self._values = values
        x = strategy.clock.train_iterations
        return [MetricValue(self, self.metric_name(strategy, key), value, x) for key, value in values.items()]

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
        """Forget the last values."""
        self._values = {}

    def result(self) -> dict[str, float]:
        """The values emitted after the last training experience."""
        return dict(self._values)

    def compute(self, strategy) -> dict[str, float] | None:
        """``{key: value}`` for the experience just trained, or ``None``."""
        raise NotImplementedError

    def metric_name(self, strategy, key: str) -> str:
        """The full metric name of ``key`` (default ``"<metric>/<key>"``)."""
        return f"{self}/{key}"

    def after_training_exp(self, strategy) -> MetricResult:
        """Emit :meth:`compute`'s values."""
        values = self.compute(strategy)
        if values is None:
            return None
        self._values = values
        x = strategy.clock.train_iterations
        return [MetricValue(self, self.metric_name(strategy, key), value, x) for key, value in values.items()]

"""The end-of-experience learning diagnostics as Avalanche metrics.

After each training experience the HAT-family plugin holds an
:class:`~avalanche_fgadahat.plugins.diagnostics.ExperienceReport` (``plugin.last_report``);
:class:`LearningDiagnosticsMetric` emits its numbers, in the train phase, at
``x = clock.train_iterations``, under Avalanche-style names with the task and experience:

* ``HATDiag_MaskChange_Exp/...`` — fraction of units whose mask bit changed in the task;
* ``HATDiag_EmbeddingShift_Exp/...`` — mean ``|e_end − e_start|``;
* ``HATDiag_FreeCapacity_Exp/...`` — fraction of masked-layer parameters free for the
  next task under HAT;
* ``HATDiag_TrainableUsed_Exp/.../<layer>`` — per layer, the fraction of the weights the
  task uses that were free before it;
* ``HATDiag_Warnings_Exp/...`` — how many diagnostic warnings the task raised.

Place the evaluation plugin after the HAT-family plugin (the strategies do).
"""

from __future__ import annotations

from avalanche.evaluation import PluginMetric
from avalanche.evaluation.metric_results import MetricResult, MetricValue
from avalanche.evaluation.metric_utils import get_metric_name

from ..plugins.checks import find_hat_plugin


class LearningDiagnosticsMetric(PluginMetric[dict]):
    """Emits the last :class:`ExperienceReport` after every training experience."""

    def __init__(self) -> None:
        super().__init__()
        self._values: dict[str, float] = {}

    def reset(self) -> None:
        self._values = {}

    def result(self) -> dict[str, float]:
        return dict(self._values)

    def after_training_exp(self, strategy) -> MetricResult:
        report = find_hat_plugin(strategy).last_report
        if report is None:
            return None
        values = {
            "MaskChange": report.mask_change,
            "EmbeddingShift": report.embedding_shift,
            "FreeCapacity": report.free_capacity,
            "Warnings": float(len(report.warnings)),
        }
        values.update({f"TrainableUsed/{layer}": v for layer, v in report.trainable_used.items()})
        self._values = values
        x = strategy.clock.train_iterations
        results = []
        for key, value in values.items():
            label, _, layer = key.partition("/")
            self._label = f"HATDiag_{label}_Exp"
            name = get_metric_name(self, strategy, add_experience=True, add_task=True)
            results.append(MetricValue(self, name + (f"/{layer}" if layer else ""), value, x))
        return results

    def __str__(self) -> str:
        return getattr(self, "_label", "HATDiag_Exp")


def hat_diagnostic_metrics() -> list[PluginMetric]:
    """The learning-diagnostics metrics for an ``EvaluationPlugin`` (see module doc)."""
    return [LearningDiagnosticsMetric()]

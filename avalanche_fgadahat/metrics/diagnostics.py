"""The end-of-experience learning diagnostics as Avalanche metrics.

After each training experience the HAT-family plugin holds an
:class:`~avalanche_fgadahat.diagnostics.ExperienceReport` (``plugin.last_report``);
:class:`LearningDiagnosticsMetric` emits its numbers, in the train phase, at
``x = clock.train_iterations``, under Avalanche-style names with the task and experience:

* ``HATDiag_MaskChange_Exp/...`` — fraction of units whose mask bit changed in the task;
* ``HATDiag_EmbeddingShift_Exp/...`` — mean ``|e_end − e_start|``;
* ``HATDiag_FreeCapacity_Exp/...`` — fraction of masked-layer parameters free for the
  next task under HAT;
* ``HATDiag_TrainableUsed_Exp/.../<layer>`` — per layer, the fraction of the weights the
  task uses that were free before it;
* ``HATDiag_Warnings_Exp/...`` — how many diagnostic warnings the task raised (0 with
  ``diagnostics=None``);
* ``HATDiag_EmptyGroups_Exp/...`` — in how many unit groups the task's mask is empty.

Place the evaluation plugin after the HAT-family plugin (the strategies do).
"""

from __future__ import annotations

from avalanche.evaluation import PluginMetric
from avalanche.evaluation.metric_utils import get_metric_name

from ..plugins.checks import find_hat_plugin
from ._experience_metric import ExperienceValuesMetric


class LearningDiagnosticsMetric(ExperienceValuesMetric):
    """Emits the last :class:`ExperienceReport` after every training experience."""

    def compute(self, strategy) -> dict[str, float] | None:
        """The numbers of the plugin's ``last_report`` (``None`` before any experience)."""
        report = find_hat_plugin(strategy).last_report
        if report is None:
            return None
        values = {
            "MaskChange": report.mask_change,
            "EmbeddingShift": report.embedding_shift,
            "FreeCapacity": report.free_capacity,
            "Warnings": float(len(report.warnings)),
            "EmptyGroups": float(len(report.empty_groups)),
        }
        values.update({f"TrainableUsed/{layer}": v for layer, v in report.trainable_used.items()})
        return values

    def metric_name(self, strategy, key: str) -> str:
        """``HATDiag_<Name>_Exp/<phase>/<stream>/TaskNNN/ExpNNN[/<layer>]``."""
        label, _, layer = key.partition("/")
        base = get_metric_name(f"HATDiag_{label}_Exp", strategy, add_experience=True, add_task=True)
        return base + (f"/{layer}" if layer else "")

    def __str__(self) -> str:
        return "HATDiag_Exp"


def hat_diagnostic_metrics() -> list[PluginMetric]:
    """The learning-diagnostics metrics for an ``EvaluationPlugin`` (see module doc)."""
    return [LearningDiagnosticsMetric()]

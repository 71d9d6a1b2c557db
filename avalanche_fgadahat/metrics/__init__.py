"""Avalanche metrics and a logger for the HAT family (see ``docs/metrics.md``).

* :func:`hat_capacity_metrics` — AdaHAT's network capacity per iteration, per training
  experience and at eval time;
* :func:`hat_mask_metrics` — per-layer mask usage of every task and of all tasks, and the
  mask figure (to TensorBoard);
* :func:`hat_diagnostic_metrics` — the end-of-experience learning diagnostics (mask change,
  embedding shift, free capacity, trainable share of the task's weights);
* :func:`task_identification_accuracy` — with ``task_inference``, how often the inferred task
  is right (beside Avalanche's class-incremental accuracy);
* :class:`MetricsCSVLogger` — every scalar metric (custom ones too) to a CSV file.
"""

from .capacity import (
    ExperienceNetworkCapacity,
    MinibatchNetworkCapacity,
    StreamNetworkCapacity,
    find_hat_plugin,
    hat_capacity_metrics,
)
from .csv_logger import MetricsCSVLogger
from .diagnostics import LearningDiagnosticsMetric, hat_diagnostic_metrics
from .masks import MaskFigure, MaskUsage, hat_mask_metrics, mask_usage
from .task_identification import TaskIdentificationAccuracy, task_identification_accuracy

__all__ = [
    "ExperienceNetworkCapacity",
    "LearningDiagnosticsMetric",
    "MaskFigure",
    "MaskUsage",
    "MetricsCSVLogger",
    "MinibatchNetworkCapacity",
    "StreamNetworkCapacity",
    "TaskIdentificationAccuracy",
    "find_hat_plugin",
    "hat_capacity_metrics",
    "hat_diagnostic_metrics",
    "hat_mask_metrics",
    "mask_usage",
    "task_identification_accuracy",
]

"""Avalanche metrics and a logger for the HAT family (see ``docs/metrics.md``).

* :func:`hat_capacity_metrics` — AdaHAT's network capacity per iteration, per training
  experience and at eval time;
* :func:`hat_mask_metrics` — per-layer mask usage of every task and of all tasks, and the
  mask figure (to TensorBoard);
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
from .masks import MaskFigure, MaskUsage, hat_mask_metrics, mask_usage

__all__ = [
    "ExperienceNetworkCapacity",
    "MaskFigure",
    "MaskUsage",
    "MetricsCSVLogger",
    "MinibatchNetworkCapacity",
    "StreamNetworkCapacity",
    "find_hat_plugin",
    "hat_capacity_metrics",
    "hat_mask_metrics",
    "mask_usage",
]

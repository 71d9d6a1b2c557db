"""What a run measures, all emitted through Avalanche's ``EvaluationPlugin``.

Avalanche's own metrics give the accuracy matrix (``AccuracyMatrixPluginMetric``), the
per-experience and stream accuracies, and its stream forgetting and BWT. Its timing and RAM
metrics at experience level are eval-phase only, so small train-phase metrics are
added here, each emitted once per training experience (at ``after_training_exp``):

* :class:`TrainingTime` — wall time of the experience's training (``TrainingTime_Exp``, s);
* :class:`PeakMemory` — peak resident memory of the process while training the experience,
  sampled by Avalanche's ``MaxRAM`` (``PeakRSS_Exp``, MB), and on CUDA the peak allocated
  device memory (``PeakCUDA_Exp``, MB, ``torch.cuda.max_memory_allocated``).

The HAT family's network capacity (AdaHAT Sec. 4.3: the mean adjustment rate over the
masked parameters; for HAT the fraction still free) is the package's own
``avalanche_fgadahat.metrics.ExperienceNetworkCapacity`` (``NetworkCapacity_Exp``): the
mean over the training iterations of each experience.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from avalanche.evaluation import PluginMetric
from avalanche.evaluation.metric_results import MetricValue
from avalanche.evaluation.metric_utils import get_metric_name
from avalanche.evaluation.metrics import (
    accuracy_matrix_metrics,
    accuracy_metrics,
    bwt_metrics,
    forgetting_metrics,
)
from avalanche.evaluation.metrics.ram_usage import MaxRAM
from avalanche.training.plugins import EvaluationPlugin

from ..metrics import hat_capacity_metrics

TRAINING_TIME = "TrainingTime_Exp"
PEAK_RSS = "PeakRSS_Exp"
PEAK_CUDA = "PeakCUDA_Exp"
NETWORK_CAPACITY = "NetworkCapacity_Exp"
ACCURACY_MATRIX = "EvalStream/Acc_Matrix"
STREAM_FORGETTING = "StreamForgetting/eval_phase/test_stream"
STREAM_BWT = "StreamBWT/eval_phase/test_stream"
TASK_ID_ACCURACY = "TaskId_Acc_Stream/eval_phase/test_stream"


class _PerTrainingExperience(PluginMetric[float]):
    """Base: one value per training experience, named ``<name>/train_phase/.../ExpNNN``."""

    name = ""

    def __init__(self) -> None:
        super().__init__()
        self._value: float | None = None

    def reset(self) -> None:
        self._value = None

    def result(self) -> float | None:
        return self._value

    def __str__(self) -> str:
        return self.name

    def _emit(self, strategy, value: float) -> list[MetricValue]:
        self._value = float(value)
        metric_name = get_metric_name(self, strategy, add_experience=True, add_task=True)
        return [MetricValue(self, metric_name, self._value, strategy.clock.train_iterations)]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TrainingTime(_PerTrainingExperience):
    """Seconds spent in ``train`` for one experience (CUDA work included)."""

    name = TRAINING_TIME

    def before_training_exp(self, strategy) -> None:
        _synchronize(torch.device(strategy.device))
        self._start = time.perf_counter()

    def after_training_exp(self, strategy):
        _synchronize(torch.device(strategy.device))
        return self._emit(strategy, time.perf_counter() - self._start)


class PeakMemory(_PerTrainingExperience):
    """Peak process RSS (MB) while training one experience, sampled every ``every`` s."""

    name = PEAK_RSS

    def __init__(self, every: float = 0.05) -> None:
        super().__init__()
        self._ram = MaxRAM(every=every)

    def before_training_exp(self, strategy) -> None:
        self._ram.reset()
        self._ram.start_thread()

    def after_training_exp(self, strategy):
        self._ram.stop_thread()
        return self._emit(strategy, self._ram.result())


class PeakCUDAMemory(_PerTrainingExperience):
    """Peak allocated CUDA memory (MB) while training one experience."""

    name = PEAK_CUDA

    def before_training_exp(self, strategy) -> None:
        torch.cuda.reset_peak_memory_stats(torch.device(strategy.device))

    def after_training_exp(self, strategy):
        peak = torch.cuda.max_memory_allocated(torch.device(strategy.device))
        return self._emit(strategy, peak / 2**20)


def make_evaluator(*, device: str, hat_family: bool, loggers: list[Any],
                   task_inference: bool = False) -> EvaluationPlugin:
    """The evaluation plugin of a run (see module doc); with ``task_inference``, the
    task-identification accuracy too."""
    metrics: list[Any] = [
        accuracy_metrics(experience=True, stream=True),
        accuracy_matrix_metrics(),
        forgetting_metrics(stream=True),
        bwt_metrics(stream=True),
        TrainingTime(),
        PeakMemory(),
    ]
    if torch.device(device).type == "cuda":
        metrics.append(PeakCUDAMemory())
    if hat_family:
        metrics.extend(hat_capacity_metrics(experience=True))
    if task_inference:
        from ..metrics import task_identification_accuracy

        metrics.extend(task_identification_accuracy())
    return EvaluationPlugin(*metrics, loggers=loggers)


def per_experience(all_metrics: dict[str, tuple[list, list]], name: str) -> list[float]:
    """Values of a per-training-experience metric, in experience order.

    ``all_metrics`` is ``EvaluationPlugin.get_all_metrics()``; keys look like
    ``<name>/train_phase/train_stream/Task003/Exp003``.
    """
    found = []
    for key, (_, values) in all_metrics.items():
        if key.split("/", 1)[0] == name and values:
            experience = int(key.rsplit("/Exp", 1)[1]) if "/Exp" in key else 0
            found.extend((experience, index, v) for index, v in enumerate(values))
    return [float(v) for _, _, v in sorted(found)]

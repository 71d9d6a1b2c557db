"""AdaHAT's network capacity as Avalanche metrics.

The *network capacity* (Wang et al. 2024, AdaHAT Sec. 4.3; CLArena's
``HATNetworkCapacityMetric``) is the mean adjustment rate over every parameter of the
masked layers (weights and the biases that exist): 1 when every gradient passes
unchanged, 0 when every parameter is frozen. Under ``adjustment_mode="hat"`` it is the
fraction of masked-layer parameters still free. The value comes from
:meth:`HATPlugin.network_capacity` of the HAT-family plugin found in ``strategy.plugins``.

Three granularities (names follow Avalanche's ``get_metric_name``):

* ``NetworkCapacity_MB/train_phase/train_stream/TaskNNN`` — every training iteration, the
  rates of that step (``x`` = ``clock.train_iterations``);
* ``NetworkCapacity_Exp/train_phase/train_stream/TaskNNN/ExpNNN`` — after each training
  experience, the **mean over the experience's iterations** (equal to every step's value
  for the constant rules ``hat``, ``hat_const_alpha``, ``hat_const_1``, ``adahat_no_reg``);
* ``NetworkCapacity_Stream/eval_phase/<stream>_stream`` — after each ``strategy.eval``,
  the capacity the plugin holds at eval time: the value of the **last training step**
  (1.0 before any training). It is what lands in ``strategy.eval(...)``'s result dict.
"""

from __future__ import annotations

from avalanche.evaluation import GenericPluginMetric, PluginMetric
from avalanche.evaluation.metric_results import MetricResult, MetricValue
from avalanche.evaluation.metric_utils import get_metric_name
from avalanche.evaluation.metrics import Mean

from ..plugins.checks import find_hat_plugin
from .._validation import check_flags


class _TrainNetworkCapacity(GenericPluginMetric[float, Mean]):
    """Mean of :meth:`HATPlugin.network_capacity` over the training iterations since the
    last reset."""

    label = "NetworkCapacity"

    def __init__(self, reset_at: str, emit_at: str) -> None:
        super().__init__(Mean(), reset_at=reset_at, emit_at=emit_at, mode="train")

    def update(self, strategy) -> None:
        self._metric.update(find_hat_plugin(strategy).network_capacity(), 1)

    def __str__(self) -> str:
        return self.label


class MinibatchNetworkCapacity(_TrainNetworkCapacity):
    """The capacity of every training iteration (``NetworkCapacity_MB``)."""

    label = "NetworkCapacity_MB"

    def __init__(self) -> None:
        super().__init__(reset_at="iteration", emit_at="iteration")


class ExperienceNetworkCapacity(_TrainNetworkCapacity):
    """Mean capacity over a training experience's iterations (``NetworkCapacity_Exp``)."""

    label = "NetworkCapacity_Exp"

    def __init__(self) -> None:
        super().__init__(reset_at="experience", emit_at="experience")


class StreamNetworkCapacity(PluginMetric[float]):
    """The capacity at eval time, emitted once per ``strategy.eval`` call
    (``NetworkCapacity_Stream``, eval phase): the last training step's value."""

    def __init__(self) -> None:
        super().__init__()
        self._value: float | None = None

    def reset(self) -> None:
        """Forget the last value."""
        self._value = None

    def result(self) -> float | None:
        """The capacity emitted by the last ``strategy.eval`` (in [0, 1])."""
        return self._value

    def before_eval(self, strategy) -> None:
        """Start of ``strategy.eval``: forget the previous value."""
        self.reset()

    def after_eval(self, strategy) -> MetricResult:
        """Emit :meth:`HATPlugin.network_capacity` of the strategy's HAT-family plugin."""
        self._value = find_hat_plugin(strategy).network_capacity()
        name = get_metric_name(self, strategy, add_experience=False, add_task=False)
        return [MetricValue(self, name, self._value, strategy.clock.train_iterations)]

    def __str__(self) -> str:
        return "NetworkCapacity_Stream"


def hat_capacity_metrics(
    *, minibatch: bool = False, experience: bool = False, stream: bool = False
) -> list[PluginMetric]:
    """Network-capacity metrics for an ``EvaluationPlugin`` (like ``accuracy_metrics``).

    :param minibatch: every training iteration (``NetworkCapacity_MB``).
    :param experience: mean over each training experience (``NetworkCapacity_Exp``).
    :param stream: at every ``strategy.eval`` (``NetworkCapacity_Stream``, eval phase).
    """
    chosen = check_flags(minibatch=minibatch, experience=experience, stream=stream)
    factories = {
        "minibatch": MinibatchNetworkCapacity,
        "experience": ExperienceNetworkCapacity,
        "stream": StreamNetworkCapacity,
    }
    return [factories[name]() for name in chosen]

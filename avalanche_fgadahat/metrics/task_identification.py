"""Task-identification accuracy: how often task inference picks the right task.

With ``task_inference`` (class- and domain-incremental evaluation, ``docs/class_incremental.md``)
the model answers each test sample with the prediction of the task it judges most confident.
Beside the class-incremental accuracy (Avalanche's ``accuracy_metrics``), this metric reports the
share of samples whose chosen task is the task that trained on their experience: the test
experience ``k`` belongs to the HAT task that training experience ``k`` became. Test experiences
not trained yet are skipped (they have no right answer).

* ``TaskId_Acc_Exp/eval_phase/<stream>/ExpNNN`` — per test experience;
* ``TaskId_Acc_Stream/eval_phase/<stream>`` — over the stream's samples of trained experiences.

Kim et al. (NeurIPS 2022) decompose class-incremental accuracy into this task-identity
prediction and the within-task prediction.
"""

from __future__ import annotations

from avalanche.evaluation import PluginMetric
from avalanche.evaluation.metric_results import MetricResult, MetricValue
from avalanche.evaluation.metric_utils import get_metric_name

from ..plugins.checks import find_hat_plugin, unwrap_hat_model


class TaskIdentificationAccuracy(PluginMetric[float]):
    """Share of test samples whose inferred task is their experience's task (see module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self._experience = [0, 0]  # correct, counted
        self._stream = [0, 0]

    def reset(self) -> None:
        """Forget the counts."""
        self._experience, self._stream = [0, 0], [0, 0]

    def result(self) -> float | None:
        """The stream's task-identification accuracy so far (``None``: nothing counted)."""
        correct, counted = self._stream
        return correct / counted if counted else None

    def before_eval(self, strategy) -> None:
        """Start the stream's count."""
        self._stream = [0, 0]

    def before_eval_exp(self, strategy) -> None:
        """Start the experience's count."""
        self._experience = [0, 0]

    def after_eval_iteration(self, strategy) -> None:
        """Count the batch's samples whose chosen task is right."""
        plugin = find_hat_plugin(strategy)
        if plugin.config.task_inference is None:
            raise ValueError("task-identification accuracy needs task_inference on the HAT-family strategy or "
                             "plugin (with task labels the task is given, not inferred)")
        truth = plugin.assignment.experience_tasks.get(int(strategy.experience.current_experience))
        inference = unwrap_hat_model(strategy.model).last_task_inference
        if truth is None or inference is None:
            return
        correct = int((inference.chosen == truth).sum())
        for counts in (self._experience, self._stream):
            counts[0] += correct
            counts[1] += int(inference.chosen.numel())

    def after_eval_exp(self, strategy) -> MetricResult:
        """Emit the experience's value."""
        correct, counted = self._experience
        if not counted:
            return None
        name = get_metric_name("TaskId_Acc_Exp", strategy, add_experience=True, add_task=False)
        return [MetricValue(self, name, correct / counted, strategy.clock.train_iterations)]

    def after_eval(self, strategy) -> MetricResult:
        """Emit the stream's value."""
        value = self.result()
        if value is None:
            return None
        name = get_metric_name("TaskId_Acc_Stream", strategy, add_experience=False, add_task=False)
        return [MetricValue(self, name, value, strategy.clock.train_iterations)]

    def __str__(self) -> str:
        return "TaskId_Acc"


def task_identification_accuracy() -> list[PluginMetric]:
    """The task-identification accuracy metric for an ``EvaluationPlugin`` (see module doc)."""
    return [TaskIdentificationAccuracy()]

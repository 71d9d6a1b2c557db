"""Mask-usage metrics and the mask figure, emitted after each training experience.

After the HAT-family plugin has stored the binary mask of the experience's task (it
runs before the evaluator), for every unit group ``key`` of the masked backbone:

* ``MaskUsage/TaskNNN/<key>`` — the fraction of the group's units that task NNN's stored
  mask uses, ``mean_i m^t[i]``, for every trained task (labels, in training order);
* ``MaskUsage/Cumulative/<key>`` — the fraction used by at least one trained task,
  ``mean_i M[i]`` with ``M = max_t m^t`` (1 − this is what HAT still leaves free).

Values are Python floats with ``x`` = ``clock.train_iterations``; they reach every logger
and the dict returned by ``strategy.train``/``strategy.eval``.

``MaskFigure/train_phase/train_stream`` is :func:`~avalanche_fgadahat.figures.plot_masks`
rendered to an Avalanche ``TensorImage`` (TensorBoard writes it as an image; the text
loggers skip it). Each figure is kept by ``EvaluationPlugin(collect_all=True)``: lower
``dpi`` for long runs of wide networks.
"""

from __future__ import annotations

from typing import Any

from avalanche.evaluation import PluginMetric
from avalanche.evaluation.metric_results import LoggingType, MetricResult, MetricValue, TensorImage
from avalanche.evaluation.metric_utils import get_metric_name

from .._validation import check_number
from ..figures import plot_masks, render_figure
from ..models.base import HATBackbone
from ..plugins.checks import unwrap_hat_model
from ._experience_metric import ExperienceValuesMetric
from .._validation import check_flags


def mask_usage(model: Any) -> dict[str, float]:
    """``{"TaskNNN/<key>": mean m^t, ..., "Cumulative/<key>": mean M}`` of every unit group."""
    hat_model = unwrap_hat_model(model)
    tasks = hat_model.trained_tasks()
    usage: dict[str, float] = {}
    for key, state in hat_model.unit_state.items():
        n = state.num_units
        counts = state.task_masks[tasks].sum(dim=1).tolist() if tasks else []
        usage.update({f"Task{task:03}/{key}": count / n for task, count in zip(tasks, counts)})
        usage[f"Cumulative/{key}"] = float(state.cumulative.sum()) / n
    return usage


def _committed_model(strategy) -> HATBackbone:
    """The backbone, after checking that the experience's task mask is stored."""
    model = unwrap_hat_model(strategy.model)
    for task in getattr(strategy.experience, "task_labels", None) or []:
        if not model.is_trained(int(task)):
            raise RuntimeError(
                f"task {task} has no stored mask after its training experience: the mask "
                "metrics need a HAT-family plugin (HATPlugin/AdaHATPlugin) in strategy.plugins"
            )
    return model


class MaskUsage(ExperienceValuesMetric):
    """Per-task and cumulative unit usage of every unit group (see module doc)."""

    def compute(self, strategy) -> dict[str, float]:
        """:func:`mask_usage` of the strategy's model, after the task's mask is stored."""
        return mask_usage(_committed_model(strategy))

    def __str__(self) -> str:
        return "MaskUsage"


class MaskFigure(PluginMetric[TensorImage]):
    """:func:`plot_masks` as an image after each training experience (see module doc).

    :param dpi: resolution of the rendered figure.
    """

    def __init__(self, dpi: int = 72) -> None:
        super().__init__()
        self.dpi = int(check_number("dpi", dpi, minimum=1, integer=True))
        self._image: TensorImage | None = None

    def reset(self) -> None:
        """Forget the last image."""
        self._image = None

    def result(self) -> TensorImage | None:
        """The last image (``None`` before the first experience ends)."""
        return self._image

    def after_training_exp(self, strategy) -> MetricResult:
        """Render the mask figure once the experience's mask is stored."""
        figure = plot_masks(_committed_model(strategy), dpi=self.dpi)
        self._image = TensorImage(render_figure(figure))
        name = get_metric_name(self, strategy, add_experience=False, add_task=False)
        return [
            MetricValue(
                self, name, self._image, strategy.clock.train_iterations, logging_type=LoggingType.IMAGE
            )
        ]

    def __str__(self) -> str:
        return "MaskFigure"


def hat_mask_metrics(*, usage: bool = False, figure: bool = False, dpi: int = 72) -> list[PluginMetric]:
    """Mask metrics for an ``EvaluationPlugin``.

    :param usage: :class:`MaskUsage` (``MaskUsage/TaskNNN/<key>``, ``MaskUsage/Cumulative/<key>``).
    :param figure: :class:`MaskFigure` (``MaskFigure/train_phase/train_stream``), at ``dpi``.
    """
    chosen = check_flags(usage=usage, figure=figure)
    metrics: list[PluginMetric] = []
    if "usage" in chosen:
        metrics.append(MaskUsage())
    if "figure" in chosen:
        metrics.append(MaskFigure(dpi=dpi))
    return metrics

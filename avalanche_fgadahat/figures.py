"""Pictures of the HAT-family masks (matplotlib, Agg canvas; no pyplot state).

:func:`plot_masks` draws, for every unit group (masked layer) of a
:class:`~avalanche_fgadahat.models.HATBackbone`, two panels:

* left: the stored binary mask ``m^t = 1[e^t > 0]`` of each trained task (one row per task
  label, in training order) and, in the last row, the cumulative mask ``M = max_t m^t``
  (HAT's union: the units no later task may change); black = 1 (unit in the mask),
  white = 0, as the figure's title says;
* right: the summative mask ``S = Σ_t m^t`` (AdaHAT's count of tasks using each unit),
  coloured from 0 to the number of trained tasks.

The figure goes to a PNG file with :func:`save_mask_figure`, and to TensorBoard through
the ``MaskFigure`` metric (``avalanche_fgadahat.metrics``), which renders it with
:func:`render_figure` into Avalanche's ``TensorImage``.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ._validation import check_number
from .plugins.checks import unwrap_hat_model


def _row_height(num_rows: int) -> float:
    """Inches per unit group: rows get thinner past ~10 tasks so long runs stay small."""
    return 0.55 + min(0.18 * num_rows, 1.8)


def plot_masks(model: Any, *, width: float = 11.0, dpi: int = 100) -> Figure:
    """Figure of the stored, cumulative and summative masks of every unit group.

    :param model: a :class:`~avalanche_fgadahat.models.HATBackbone` (or a wrapper with
        ``.module``).
    :param width: figure width in inches (> 0).
    :param dpi: resolution of the rendered figure (> 0).
    """
    hat_model = unwrap_hat_model(model)
    check_number("width", width, minimum=0.0, strict_minimum=True)
    check_number("dpi", dpi, minimum=1, integer=True)
    tasks = hat_model.trained_tasks()
    groups = list(hat_model.unit_sizes)
    heights = [_row_height(len(tasks) + 1) for _ in groups]
    figure = Figure(figsize=(width, sum(heights) + 0.6), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(groups), 2, squeeze=False, width_ratios=(3, 2), height_ratios=heights)
    summative_max = max(len(tasks), 1)
    for row, key in enumerate(groups):
        state = hat_model.unit_state[key]
        cumulative = state.cumulative.detach().cpu()
        stored = [state.task_masks[t].detach().cpu() for t in tasks]
        masks = torch.stack([*stored, cumulative]).numpy()
        left, right = axes[row]
        left.imshow(masks, aspect="auto", interpolation="nearest", cmap="Greys", vmin=0.0, vmax=1.0)
        left.set_yticks(range(len(tasks) + 1), [f"task {t}" for t in tasks] + ["M (cumulative)"])
        left.axhline(len(tasks) - 0.5, color="tab:red", linewidth=0.8)
        used = int(cumulative.sum())
        left.set_title(f"{key}: {used}/{cumulative.numel()} units used", fontsize=9, loc="left")
        summative = state.summative.detach().cpu().numpy()[np.newaxis, :]
        image = right.imshow(
            summative, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0, vmax=summative_max
        )
        right.set_yticks([0], ["S (summative)"])
        right.set_title(f"{key}: tasks using each unit", fontsize=9, loc="left")
        figure.colorbar(image, ax=right, fraction=0.05)
        for axis in (left, right):
            axis.tick_params(labelsize=7)
        if row == len(groups) - 1:
            left.set_xlabel("unit", fontsize=8)
            right.set_xlabel("unit", fontsize=8)
    figure.suptitle(
        f"HAT masks after {len(tasks)} trained task(s)\nleft: black = unit in the mask (1), white = not (0); "
        "one row per task, below the red line their union M; right: how many tasks use each unit",
        fontsize=9,
    )
    return figure


def render_figure(figure: Figure) -> torch.Tensor:
    """The figure as a ``(3, H, W)`` ``uint8`` RGB tensor (drawn on an Agg canvas)."""
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1).contiguous()


def save_mask_figure(model: Any, path: str | PathLike[str], **plot_kwargs: Any) -> Path:
    """Write :func:`plot_masks` of ``model`` to ``path`` (format from the suffix, e.g. ``.png``).

    Missing parent folders are created. Returns the path written.
    """
    path = Path(path)
    figure = plot_masks(model, **plot_kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path

"""Aggregate run records into tables (Markdown, CSV) and plots (PNG, matplotlib Agg).

Input: the records ``sweep.run_sweep`` returns (one per strategy × seed). Every number in
the tables is the mean ± sample standard deviation over seeds (the std is left out for one
seed). Accuracies are in percent.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .metrics_math import mean_std

#: column → (header, record → value, scale, decimals)
COLUMNS: dict[str, tuple[str, Any, float, int]] = {
    "acc": ("ACC (%)", lambda m: m["acc"], 100.0, 2),
    "task_id_acc": ("Task-ID acc (%)", lambda m: m.get("task_id_acc"), 100.0, 2),
    "bwt": ("BWT (%)", lambda m: m["bwt"], 100.0, 2),
    "forgetting": ("Forgetting (%)", lambda m: m["forgetting"], 100.0, 2),
    "capacity": (
        "Capacity (last task)",
        lambda m: m["capacity_per_task"][-1] if m["capacity_per_task"] else None,
        1.0,
        4,
    ),
    "train_time_s": ("Train time (s)", lambda m: m["train_time_total_s"], 1.0, 1),
    "peak_rss_mb": (
        "Peak RSS (MB)",
        lambda m: max(m["peak_rss_mb_per_experience"], default=None),
        1.0,
        0,
    ),
    "peak_cuda_mb": (
        "Peak CUDA (MB)",
        lambda m: max(m["peak_cuda_mb_per_experience"]) if m["peak_cuda_mb_per_experience"] else None,
        1.0,
        0,
    ),
}


#: one line of definitions, printed under the terminal table and written under results.md
TABLE_LEGEND = (
    "ACC: mean accuracy over all tasks after the last one (without task labels: class- or "
    "domain-incremental accuracy). Task-ID acc: HAT family with task inference only, share of the "
    "test samples of all tasks whose task was inferred right, after the last one. BWT: mean change of each earlier task "
    "from just after learning it to the end (negative = forgotten). Forgetting: mean drop from "
    "each earlier task's best accuracy to its final one (negative = it improved later). Capacity: "
    "HAT family only, mean gradient-adjustment rate over the masked layers while training the "
    "last task, mean over its steps (1 = every parameter free, 0 = all frozen). Train time: seconds "
    "in strategy.train, summed over the tasks (evaluation not included). Peak RSS: the process's peak "
    "resident memory, imports included. Mean ± std over seeds."
)


def group_by_strategy(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """``{strategy label: its records}``, in the records' order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(record["strategy"], []).append(record)
    return groups


def summary_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per strategy: ``{"strategy", "seeds", "<col>_mean", "<col>_std", ...}``."""
    rows = []
    for strategy, group in group_by_strategy(records).items():
        row: dict[str, Any] = {"strategy": strategy, "seeds": " ".join(str(r["seed"]) for r in group)}
        for key, (_, get, scale, _) in COLUMNS.items():
            mean, std = mean_std([get(r["metrics"]) for r in group])
            row[f"{key}_mean"] = None if mean is None else mean * scale
            row[f"{key}_std"] = None if std is None else std * scale
        rows.append(row)
    return rows


def _cell(mean: float | None, std: float | None, decimals: int) -> str:
    if mean is None:
        return "n/a"
    text = f"{mean:.{decimals}f}"
    return text if std is None else f"{text} ± {std:.{decimals}f}"


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as a Markdown table; columns without any value are left out."""
    keys = [k for k in COLUMNS if any(r[f"{k}_mean"] is not None for r in rows)]
    header = ["Strategy", "Seeds", *[COLUMNS[k][0] for k in keys]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["strategy"], row["seeds"]]
        cells += [_cell(row[f"{k}_mean"], row[f"{k}_std"], COLUMNS[k][3]) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(records: Sequence[dict[str, Any]], out: Path, title: str = "",
                 notes: str = "") -> tuple[Path, Path, str]:
    """Write ``results.md`` and ``results.csv`` in ``out``; return their paths and the table.
    ``notes`` (Markdown, e.g. the settings ``--tune`` chose) go under the legend."""
    out = Path(out)
    rows = summary_rows(records)
    table = markdown_table(rows)
    md_path, csv_path = out / "results.md", out / "results.csv"
    notes = f"\n{TABLE_LEGEND}\n" + (f"\n{notes.rstrip()}\n" if notes else "")
    matrices = matrices_text(records)
    matrices = f"\n## Accuracy matrices\n\n```\n{matrices}```\n" if matrices else ""
    md_path.write_text((f"# {title}\n\n" if title else "") + table + notes + matrices)
    fields = ["strategy", "seeds"] + [f"{k}_{s}" for k in COLUMNS for s in ("mean", "std")]
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row[k] is None else row[k]) for k in fields})
    return md_path, csv_path, table


def matrices_text(records: Sequence[dict[str, Any]], max_tasks: int = 10) -> str:
    """Seed-mean accuracy matrices (%) as text, rows = after training task i; cells of tasks
    not trained yet are ``.``. Empty when the benchmark has more than ``max_tasks`` tasks
    (see the PNG heat maps instead)."""
    blocks = []
    for strategy, group in group_by_strategy(records).items():
        matrices = [r["metrics"]["accuracy_matrix"] for r in group]
        rows = [_mean_curve([m[i] for m in matrices])[0] for i in range(len(matrices[0]))]
        tasks = len(rows[0])
        if tasks > max_tasks:
            return ""
        square = len(rows) == tasks
        lines = [f"{strategy} (accuracy %, mean of {len(group)} seed(s)):",
                 "        " + "".join(f"{f'T{j + 1}':>7}" for j in range(tasks))]
        for i, row in enumerate(rows):
            label = f"after {i + 1}" if square else "joint"
            cells = "".join(f"{'.':>7}" if square and j > i else f"{100 * v:7.1f}" for j, v in enumerate(row))
            lines.append(f"{label:<8}{cells}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")


# ---------------------------------------------------------------------------- plots
def _mean_curve(curves: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    means, stds = [], []
    for values in zip(*curves):
        mean, std = mean_std(values)
        means.append(mean)
        stds.append(std or 0.0)
    return means, stds


def write_plots(records: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """Accuracy-matrix heat maps (one per strategy), ACC after each task, capacity.

    Every series has its own colour, marker and line style, and the series are dodged
    sideways by a few hundredths of a task, so equal curves (HAT and FG-AdaHAT on an easy
    benchmark) stay visible side by side. Axes are not zoomed: accuracy runs 0–100 %,
    capacity 0–1. Multi-seed bands are ±1 standard deviation and say so in the legend.
    The heat maps of one sweep share one colour scale, from the lowest accuracy any of them
    shows (rounded down to 10 %) to 100 %, so their colours compare.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = Path(out) / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    written = []
    groups = group_by_strategy(records)
    mean_matrices = {}
    for strategy, group in groups.items():
        matrices = [r["metrics"]["accuracy_matrix"] for r in group]
        mean_matrices[strategy] = [_mean_curve([m[i] for m in matrices])[0] for i in range(len(matrices[0]))]
    floor = _colour_floor(mean_matrices.values())
    for strategy, rows in mean_matrices.items():
        written.append(_heatmap(plt, rows, strategy, len(groups[strategy]), plots, floor))

    seeds = max(len(group) for group in groups.values())
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    styles = _series_styles(len(groups))
    for (strategy, group), style in zip(groups.items(), styles):
        curves = [r["metrics"]["acc_after_each_task"] for r in group]
        if curves[0] is None:  # joint training: one final value
            acc = 100 * mean_std([r["metrics"]["acc"] for r in group])[0]
            ax.axhline(acc, linestyle=(0, (6, 3)), color="grey", label=f"{strategy} (trained once on all tasks)")
            continue
        _plot_series(ax, curves, strategy, style, scale=100.0)
    _legend(ax, seeds > 1, loc="lower left")
    ax.set(xlabel="tasks learned", ylabel="ACC: mean accuracy over the tasks learned (%)",
           title="Average accuracy after each task", ylim=(0, 101))
    fig.text(0.01, 0.01, "markers are shifted sideways by up to 0.15 task so that equal curves stay visible",
             fontsize=7.5, color="dimgrey")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    written.append(_save(fig, plots / "acc_after_each_task.png", plt, layout=False))

    with_capacity = {s: g for s, g in groups.items() if g[0]["metrics"]["capacity_per_task"]}
    if with_capacity:
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        for (strategy, group), style in zip(with_capacity.items(), _series_styles(len(with_capacity))):
            _plot_series(ax, [r["metrics"]["capacity_per_task"] for r in group], strategy, style)
        ax.set(xlabel="task being trained", ylabel="network capacity", ylim=(-0.02, 1.02),
               title="Network capacity while training each task (mean over its steps)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        _legend(ax, max(len(group) for group in with_capacity.values()) > 1)
        fig.text(0.01, 0.01, "network capacity = mean gradient-adjustment rate over the masked layers' "
                 "parameters: 1 = every parameter trains freely, 0 = all frozen\n(AdaHAT paper, Sec. 4.3). "
                 "Markers are shifted sideways by up to 0.15 task so that equal curves stay visible.",
                 fontsize=7.5, color="dimgrey")
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        written.append(_save(fig, plots / "capacity.png", plt, layout=False))
    return written


def _plot_series(ax, curves: Sequence[Sequence[float]], strategy: str, style: dict[str, Any],
                 scale: float = 1.0) -> None:
    """The seed-mean curve of ``curves`` (one per seed) in ``style``, dodged sideways, with a
    ±1 std band when there are several seeds; values times ``scale``."""
    means, stds = _mean_curve(curves)
    tasks = [t + style["dodge"] for t in range(1, len(means) + 1)]
    ax.plot(tasks, [scale * m for m in means], label=f"{strategy} ({len(curves)} seed(s))", **style["line"])
    if len(curves) > 1:
        ax.fill_between(tasks, [scale * (m - s) for m, s in zip(means, stds)],
                        [scale * (m + s) for m, s in zip(means, stds)], alpha=0.12, color=style["line"]["color"])


#: more legend entries than this go beside the axes (the figure widens), not over the curves
MAX_LEGEND_ENTRIES_INSIDE = 8


def _legend(ax, bands: bool, **kwargs: Any) -> None:
    """The axes' legend; with ``bands``, an entry saying what the shading is. Beyond
    :data:`MAX_LEGEND_ENTRIES_INSIDE` entries it goes right of the axes and the figure widens."""
    handles, labels = ax.get_legend_handles_labels()
    if bands:
        from matplotlib.patches import Patch

        handles.append(Patch(facecolor="grey", alpha=0.25))
        labels.append("shaded: ±1 std over seeds")
    if len(labels) > MAX_LEGEND_ENTRIES_INSIDE:
        width, height = ax.figure.get_size_inches()
        ax.figure.set_size_inches(width + 3.2, height)
        kwargs = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}
    ax.legend(handles, labels, fontsize=8, **kwargs)


def _colour_floor(matrices) -> float:
    """The heat maps' common lower colour limit: the lowest trained-task accuracy shown,
    rounded down to 10 % (0 at worst)."""
    lowest = 100.0
    for rows in matrices:
        square = len(rows) == len(rows[0])
        for i, row in enumerate(rows):
            for j, value in enumerate(row):
                if not (square and j > i):
                    lowest = min(lowest, 100 * value)
    return max(0.0, 10 * (lowest // 10))


def _heatmap(plt, rows: list[list[float]], strategy: str, n_seeds: int, folder: Path, floor: float = 0.0) -> Path:
    """Rows = after training task i, columns = evaluated task j. In a square (sequential)
    matrix the cells j > i are tasks not trained yet: left blank (grey)."""
    tasks = len(rows[0])
    square = len(rows) == tasks
    shown = [[float("nan") if square and j > i else 100 * v for j, v in enumerate(row)]
             for i, row in enumerate(rows)]
    fig, ax = plt.subplots(figsize=(2.8 + 0.42 * tasks, 1.8 + 0.42 * len(rows)))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#eeeeee")
    image = ax.imshow(shown, vmin=floor, vmax=100, cmap=cmap)
    if tasks <= 12:
        middle = floor + 0.55 * (100 - floor)
        for i, row in enumerate(shown):
            for j, value in enumerate(row):
                if value == value:
                    ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if value < middle else "black")
    ax.set_xticks(range(tasks), [str(j + 1) for j in range(tasks)])
    ax.set_yticks(range(len(rows)), ["all"] if not square else [str(i + 1) for i in range(len(rows))])
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("after training task" if square else "after joint training")
    ax.set_title(f"{strategy}: accuracy (%), mean of {n_seeds} seed(s)\n"
                 "grey: task not trained yet", fontsize=9)
    bar = fig.colorbar(image, ax=ax, fraction=0.046)
    bar.set_label(f"accuracy (%); scale {floor:.0f}–100: the lowest accuracy\nin this sweep's matrices, "
                  "rounded down to 10 %", fontsize=7)
    stem = strategy.replace(":", "-")
    return _save(fig, folder / f"acc_matrix_{stem}.png", plt)


_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
_LINESTYLES = ["-", "--", "-.", ":"]


def _series_styles(n: int) -> list[dict[str, Any]]:
    """Per series: colour (tab10), marker, line style (all three change together, so no two
    of up to 40 series look alike), hollow markers every other series, and a sideways dodge
    of up to ±0.15 task so that equal curves do not hide each other."""
    import matplotlib

    colors = matplotlib.colormaps["tab10"].colors
    count = max(n, 1)
    width = 0.3 if count > 1 else 0.0
    styles = []
    for i in range(count):
        color = colors[i % 10]
        styles.append({
            "dodge": (i / (count - 1) - 0.5) * width if count > 1 else 0.0,
            "line": {
                "color": color,
                "marker": _MARKERS[i % len(_MARKERS)],
                "linestyle": _LINESTYLES[(i + i // 10) % len(_LINESTYLES)],
                "markersize": 6,
                "markerfacecolor": "none" if i % 2 else color,
                "linewidth": 1.6,
            },
        })
    return styles


def _save(fig, path: Path, plt, layout: bool = True) -> Path:
    if layout:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

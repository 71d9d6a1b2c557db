"""Aggregate run records into tables (Markdown, CSV) and plots (PNG, matplotlib Agg).

Input: the records ``runner.run_sweep`` returns (one per strategy × seed). Every number in
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
    "bwt": ("BWT (%)", lambda m: m["bwt"], 100.0, 2),
    "forgetting": ("Forgetting (%)", lambda m: m["forgetting"], 100.0, 2),
    "capacity": (
        "Capacity (last task)",
        lambda m: m["capacity_per_task"][-1] if m["capacity_per_task"] else None,
        1.0,
        3,
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
    "ACC: mean accuracy over all tasks after the last one. BWT: mean change of each earlier task "
    "from just after learning it to the end (negative = forgotten). Forgetting: mean drop from "
    "each earlier task's best accuracy to its final one (negative = it improved later). Capacity: "
    "HAT family only, mean gradient-adjustment rate over the masked layers while training the "
    "last task, mean over its steps (1 = every parameter free, 0 = all frozen). Mean ± std over seeds."
)


def group_by_strategy(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
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


def write_tables(records: Sequence[dict[str, Any]], out: Path, title: str = "") -> tuple[Path, Path, str]:
    """Write ``results.md`` and ``results.csv`` in ``out``; return their paths and the table."""
    out = Path(out)
    rows = summary_rows(records)
    table = markdown_table(rows)
    md_path, csv_path = out / "results.md", out / "results.csv"
    notes = f"\n{TABLE_LEGEND}\n"
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
    """Accuracy-matrix heat maps (one per strategy), ACC after each task, capacity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = Path(out) / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    written = []
    groups = group_by_strategy(records)
    for strategy, group in groups.items():
        matrices = [r["metrics"]["accuracy_matrix"] for r in group]
        rows = [_mean_curve([m[i] for m in matrices])[0] for i in range(len(matrices[0]))]
        written.append(_heatmap(plt, rows, strategy, len(group), plots))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.set_prop_cycle(_style_cycle(plt, len(groups)))
    for strategy, group in groups.items():
        curves = [r["metrics"]["acc_after_each_task"] for r in group]
        if curves[0] is None:  # joint training: one final value
            acc = 100 * mean_std([r["metrics"]["acc"] for r in group])[0]
            ax.axhline(acc, linestyle="--", color="grey", label=f"{strategy} (final)")
            continue
        means, stds = _mean_curve(curves)
        tasks = range(1, len(means) + 1)
        ax.plot(tasks, [100 * m for m in means], marker="o", label=strategy)
        ax.fill_between(tasks, [100 * (m - s) for m, s in zip(means, stds)],
                        [100 * (m + s) for m, s in zip(means, stds)], alpha=0.2)
    ax.set(xlabel="tasks learned", ylabel="ACC over tasks learned (%)", title="ACC after each task")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    written.append(_save(fig, plots / "acc_after_each_task.png", plt))

    with_capacity = {s: g for s, g in groups.items() if g[0]["metrics"]["capacity_per_task"]}
    if with_capacity:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.set_prop_cycle(_style_cycle(plt, len(with_capacity)))
        ax.xaxis.get_major_locator().set_params(integer=True)
        for strategy, group in with_capacity.items():
            means, stds = _mean_curve([r["metrics"]["capacity_per_task"] for r in group])
            ax.plot(range(1, len(means) + 1), means, marker="o", label=strategy)
        ax.set(xlabel="task", ylabel="network capacity", ylim=(-0.02, 1.02),
               title="Network capacity while training each task")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        written.append(_save(fig, plots / "capacity.png", plt))
    return written


def _heatmap(plt, rows: list[list[float]], strategy: str, n_seeds: int, folder: Path) -> Path:
    """Rows = after training task i, columns = evaluated task j. In a square (sequential)
    matrix the cells j > i are tasks not trained yet: left blank."""
    tasks = len(rows[0])
    square = len(rows) == tasks
    shown = [[float("nan") if square and j > i else 100 * v for j, v in enumerate(row)]
             for i, row in enumerate(rows)]
    fig, ax = plt.subplots(figsize=(2.4 + 0.42 * tasks, 1.6 + 0.42 * len(rows)))
    image = ax.imshow(shown, vmin=0, vmax=100, cmap="viridis")
    if tasks <= 12:
        for i, row in enumerate(shown):
            for j, value in enumerate(row):
                if value == value:
                    ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if value < 60 else "black")
    ax.set_xticks(range(tasks), [str(j + 1) for j in range(tasks)])
    ax.set_yticks(range(len(rows)), ["all"] if not square else [str(i + 1) for i in range(len(rows))])
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("after training task" if square else "after joint training")
    ax.set_title(f"{strategy}: accuracy (%)\nmean of {n_seeds} seed(s)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    stem = strategy.replace(":", "-")
    return _save(fig, folder / f"acc_matrix_{stem}.png", plt)


def _style_cycle(plt, n: int):
    """Distinct colour and line style for up to 40 curves (tab10 repeats after 10)."""
    from cycler import cycler

    colors = plt.get_cmap("tab10").colors
    styles = ["-", "--", "-.", ":"]
    count = max(n, 1)
    return cycler(color=[colors[i % 10] for i in range(count)]) + cycler(
        linestyle=[styles[(i // 10) % 4] for i in range(count)]
    )


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

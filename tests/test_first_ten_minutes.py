"""What a newcomer meets first: the main job's benchmark, readable plots, the table legend,
``--list``, no stray warning on import (issue: the first ten minutes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avalanche_fgadahat.data import permuted_digits
from avalanche_fgadahat.experiments.__main__ import main
from avalanche_fgadahat.experiments.report import TABLE_LEGEND, _colour_floor, _series_styles, write_plots

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- Permuted Digits
def test_permuted_digits_tasks_are_pixel_permutations_of_the_same_images():
    bench = permuted_digits(4, seed=3)
    assert [e.task_labels for e in bench.train_stream] == [[0], [1], [2], [3]]
    first = bench.train_stream[0].dataset
    x0 = torch.stack([first[i][0] for i in range(len(first))])
    y0 = torch.tensor([first[i][1] for i in range(len(first))])
    assert x0.shape == (1257, 64) and sorted(set(y0.tolist())) == list(range(10))
    seen = []
    for experience in bench.train_stream[1:]:
        data = experience.dataset
        x = torch.stack([data[i][0] for i in range(len(data))])
        y = torch.tensor([data[i][1] for i in range(len(data))])
        assert torch.equal(y, y0)  # the same images, in the same order ...
        assert torch.equal(x.sort(1).values, x0.sort(1).values)  # ... with their pixels moved ...
        columns = {tuple(column.tolist()) for column in x0.T}
        assert all(tuple(column.tolist()) in columns for column in x.T)  # ... by one permutation per task
        assert not torch.equal(x, x0)
        seen.append(x)
    assert not torch.equal(seen[0], seen[1])
    again = permuted_digits(4, seed=3).train_stream[2].dataset
    assert torch.equal(torch.stack([again[i][0] for i in range(len(again))]), seen[1])  # seeded
    other = permuted_digits(4, seed=4).train_stream[2].dataset
    assert not torch.equal(torch.stack([other[i][0] for i in range(len(other))]), seen[1])


def test_permuted_digits_bad_count_names_the_argument():
    with pytest.raises(ValueError, match="n_experiences must be >= 1"):
        permuted_digits(0)


# ---------------------------------------------------------------- plots
def _record(strategy, seed, acc_curve, capacity=None):
    n = len(acc_curve)
    matrix = [[acc_curve[i]] * n for i in range(n)]
    return {"strategy": strategy, "seed": seed, "metrics": {
        "accuracy_matrix": matrix, "acc_after_each_task": acc_curve, "acc": acc_curve[-1],
        "capacity_per_task": capacity, "train_time_total_s": 1.0, "peak_rss_mb_per_experience": [1.0],
        "peak_cuda_mb_per_experience": None, "bwt": 0.0, "forgetting": 0.0}}


def test_equal_curves_stay_visible_and_axes_are_not_zoomed(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = []
    original = plt.subplots

    def spy(*args, **kwargs):
        fig, ax = original(*args, **kwargs)
        axes.append(ax)
        return fig, ax

    monkeypatch.setattr(plt, "subplots", spy)
    curve, capacity = [0.99, 0.985, 0.98], [1.0, 0.5, 0.25]
    records = [_record(name, seed, curve, capacity) for name in ("hat", "fgadahat:icu") for seed in (1, 2)]
    records.append(_record("naive", 1, [0.99, 0.9, 0.8]))
    written = write_plots(records, tmp_path)
    assert {p.name for p in written} >= {"acc_after_each_task.png", "capacity.png"}
    acc_axes, capacity_axes = axes[-2], axes[-1]
    assert acc_axes.get_ylim() == (0, 101) and capacity_axes.get_ylim() == (-0.02, 1.02)
    for ax in (acc_axes, capacity_axes):
        lines = [line for line in ax.get_lines() if line.get_label().startswith(("hat", "fgadahat"))]
        assert len(lines) == 2
        (a, b) = lines
        assert list(a.get_ydata()) == list(b.get_ydata())  # the same numbers ...
        assert all(xa != xb for xa, xb in zip(a.get_xdata(), b.get_xdata()))  # ... side by side
        assert (a.get_marker(), a.get_linestyle()) != (b.get_marker(), b.get_linestyle())
    labels = [t.get_text() for t in acc_axes.get_legend().get_texts()]
    assert "shaded: ±1 std over seeds" in labels and "hat (2 seed(s))" in labels


def test_forty_series_look_different():
    styles = _series_styles(40)
    looks = {(s["line"]["color"], s["line"]["marker"], s["line"]["linestyle"]) for s in styles}
    assert len(looks) == 40
    dodges = [s["dodge"] for s in styles]
    assert len(set(dodges)) == 40 and max(abs(d) for d in dodges) <= 0.15 + 1e-12


def test_heat_maps_share_a_scale_from_the_lowest_shown_accuracy():
    matrices = [[[0.97, 0.1], [0.96, 0.99]], [[0.55, 0.0], [0.62, 0.98]]]  # upper cells untrained
    assert _colour_floor(matrices) == 50.0
    assert _colour_floor([[[1.0]]]) == 100.0 and _colour_floor([[[0.03]]]) == 0.0


def test_mask_figure_says_what_black_and_white_mean():
    from avalanche_fgadahat.figures import plot_masks
    from avalanche_fgadahat.models import HATMLP

    model = HATMLP(3, (4,))
    with torch.no_grad():
        model.task_embeddings.copy_(torch.tensor([1.0, -1.0, 1.0, -1.0]))
    model.commit_task(0)
    title = plot_masks(model).get_suptitle()
    assert "black = unit in the mask (1)" in title and "white = not (0)" in title


# ---------------------------------------------------------------- terminal and --list
def test_cli_prints_the_legend_under_the_table(tmp_path, capsys):
    code = main(["--benchmark", "digits", "--strategies", "hat", "--epochs", "1", "--hidden-sizes", "8",
                 "--max-train-samples", "20", "--max-test-samples", "10", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    table_end = out.rindex("| hat |")
    assert TABLE_LEGEND in out[table_end:]
    assert "negative = forgotten" in TABLE_LEGEND and "negative = it improved" in TABLE_LEGEND
    assert TABLE_LEGEND in (tmp_path / "results.md").read_text()


def test_list_names_the_importances(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "pdigits" in out
    for short, name in (("icu", "input_weight_abs_sum_x_activation_abs"), ("ig", "input_weight_gradient_abs_sum"),
                        ("fa", "feature_ablation_abs")):
        line = next(line for line in out.splitlines() if name in line and "importances" not in line)
        assert line.split()[0] == short


# ---------------------------------------------------------------- import
def test_import_prints_no_qp_solver_warning_and_leaves_the_filters_alone():
    code = (
        "import warnings; warnings.simplefilter('default'); before = list(warnings.filters)\n"
        "import avalanche_fgadahat\n"
        "assert warnings.filters == before, 'filters changed'\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no QP solver" not in result.stderr


def test_sweeps_write_the_learning_diagnostics_to_the_run_log(tmp_path, capsys):
    import json
    import warnings

    from avalanche_fgadahat.diagnostics import HATDiagnosticWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["--benchmark", "digits", "--strategies", "hat", "--epochs", "1", "--hidden-sizes", "64",
                     "--batch-size", "64", "--out", str(tmp_path)])
    assert code == 0
    assert not [w for w in caught if w.category is HATDiagnosticWarning]  # not on the terminal ...
    record = json.loads((tmp_path / "runs" / "hat__seed1.json").read_text())
    assert record["diagnostic_warnings"]  # ... but in the record, the log and a progress line
    assert "HATDiagnosticWarning: " + record["diagnostic_warnings"][0] in (tmp_path / record["log"]).read_text()
    assert "learning-diagnostic warning(s)" in capsys.readouterr().out


def test_diagnostic_warnings_point_at_the_users_train_call(digits5):
    import warnings

    from hat_test_support import quiet

    from avalanche_fgadahat import HAT
    from avalanche_fgadahat.models import HATMLP
    from avalanche_fgadahat.diagnostics import HATDiagnosticWarning

    model = HATMLP(64, (256,))
    strategy = HAT(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), train_mb_size=64,
                   evaluator=quiet())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        strategy.train(digits5.train_stream[0])
    ours = [w for w in caught if w.category is HATDiagnosticWarning]
    assert ours and all(w.filename == __file__ for w in ours)


def test_typable_short_importance_names():
    from avalanche_fgadahat.experiments import resolve_strategy

    assert resolve_strategy("fgadahat:gxa").settings["importance_type"] == "gradient_x_activation_abs"
    assert resolve_strategy("fgadahat:G×A").settings["importance_type"] == "gradient_x_activation_abs"
    assert resolve_strategy("fgadahat:layer-ig").settings["importance_type"] == "integrated_gradients_abs"

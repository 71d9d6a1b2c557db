"""Experiments CLI: outputs and resume, summary measures by hand, strategy factory, PackNet
body-only wrapping, fast Permuted MNIST equal to Avalanche's."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avalanche_fgadahat.experiments import PRESETS, resolve_strategy, run_one
from avalanche_fgadahat.experiments import metrics_math as mm
from avalanche_fgadahat.experiments.__main__ import main
from avalanche_fgadahat.experiments.baseline_models import PackNetMultiHead, PlainMultiHead
from avalanche_fgadahat.experiments.measures import make_evaluator, per_experience
from avalanche_fgadahat.experiments.runner import build_benchmark
from avalanche_fgadahat.experiments.strategies import build_model, build_strategy, overrides_for, parse_overrides
from avalanche_fgadahat.experiments.strategy_registry import _packnet_schedule
from avalanche_fgadahat.models import HATMLP

ROOT = Path(__file__).resolve().parents[1]
MNIST_ROOT = Path("/work/shared/data")
HAS_MNIST = (MNIST_ROOT / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()

# One small CLI sweep, shared by the output and resume tests.
CLI_ARGS = ["--benchmark", "digits", "--strategies", "hat", "naive", "--seeds", "1", "2",
            "--epochs", "1", "--hidden-sizes", "32", "32"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Run the real entry point (``python -m``) once; return the output folder and stdout."""
    out = tmp_path_factory.mktemp("digits")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "avalanche_fgadahat.experiments", *CLI_ARGS, "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


# ---------------------------------------------------------------- CLI outputs and resume
def test_cli_writes_run_json_with_config_versions_and_metrics(sweep):
    out, stdout = sweep
    files = sorted(p.name for p in (out / "runs").glob("*.json"))
    assert files == ["hat__seed1.json", "hat__seed2.json", "naive__seed1.json", "naive__seed2.json"]
    record = json.loads((out / "runs" / "hat__seed1.json").read_text())
    assert record["status"] == "complete" and record["strategy"] == "hat" and record["seed"] == 1
    experiment = record["config"]["experiment"]
    assert experiment["epochs"] == 1 and experiment["hidden_sizes"] == [32, 32]
    assert experiment["n_experiences"] == 5 and experiment["batch_size"] == PRESETS["digits"].batch_size
    assert record["config"]["strategy"]["settings"]["s_max"] == 400.0
    assert {"avalanche", "torch", "avalanche_fgadahat", "python"} <= set(record["versions"])
    m = record["metrics"]
    matrix = m["accuracy_matrix"]
    assert len(matrix) == 5 and all(len(row) == 5 for row in matrix)
    assert all(0.0 <= v <= 1.0 for row in matrix for v in row)
    # the summaries are the hand formulas applied to the stored matrix
    assert m["acc"] == pytest.approx(sum(matrix[4]) / 5)
    assert m["bwt"] == pytest.approx(sum(matrix[4][j] - matrix[j][j] for j in range(4)) / 4)
    assert m["bwt"] == pytest.approx(0.0, abs=1e-6)  # HAT: earlier tasks frozen
    assert m["acc_after_each_task"][1] == pytest.approx((matrix[1][0] + matrix[1][1]) / 2)
    assert len(m["capacity_per_task"]) == 5 and m["capacity_per_task"][0] == pytest.approx(1.0)
    assert all(b <= a + 1e-9 for a, b in zip(m["capacity_per_task"], m["capacity_per_task"][1:]))
    assert len(m["train_time_per_experience_s"]) == 5 and all(t > 0 for t in m["train_time_per_experience_s"])
    assert len(m["peak_rss_mb_per_experience"]) == 5 and min(m["peak_rss_mb_per_experience"]) > 10
    # Avalanche's stream forgetting (A[j][j] − final) agrees with −BWT when nothing is regained
    naive = json.loads((out / "runs" / "naive__seed1.json").read_text())["metrics"]
    assert naive["capacity_per_task"] is None
    assert naive["avalanche"]["stream_bwt"] == pytest.approx(naive["bwt"], abs=1e-6)
    assert "task 5/5 done" in stdout and "| hat | 1 2 |" in stdout and "after 5" in stdout


def test_cli_writes_aggregated_tables_and_plots(sweep):
    out, _ = sweep
    runs = {name: [json.loads((out / "runs" / f"{name}__seed{s}.json").read_text())["metrics"]["acc"]
                   for s in (1, 2)] for name in ("hat", "naive")}
    with open(out / "results.csv") as handle:
        rows = {row["strategy"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"hat", "naive"}
    for name, accs in runs.items():
        mean = sum(accs) / 2
        std = math.sqrt(sum((a - mean) ** 2 for a in accs))  # ddof=1 with two values
        assert float(rows[name]["acc_mean"]) == pytest.approx(100 * mean)
        assert float(rows[name]["acc_std"]) == pytest.approx(100 * std)
        assert rows[name]["seeds"] == "1 2"
    assert rows["naive"]["capacity_mean"] == ""
    markdown = (out / "results.md").read_text()
    hat_mean, hat_std = 100 * sum(runs["hat"]) / 2, 100 * abs(runs["hat"][0] - runs["hat"][1]) / math.sqrt(2)
    assert f"| hat | 1 2 | {hat_mean:.2f} ± {hat_std:.2f} |" in markdown
    # seed-mean accuracy matrix, row "after 5", of hat; cells above the diagonal blank
    matrices = [json.loads((out / "runs" / f"hat__seed{s}.json").read_text())["metrics"]["accuracy_matrix"]
                for s in (1, 2)]
    last = "".join(f"{100 * (a + b) / 2:7.1f}" for a, b in zip(matrices[0][4], matrices[1][4]))
    first = f"{100 * (matrices[0][0][0] + matrices[1][0][0]) / 2:7.1f}" + "      ." * 4
    assert "## Accuracy matrices" in markdown
    assert f"{'after 5':<8}{last}\n" in markdown and f"{'after 1':<8}{first}\n" in markdown
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert plots == ["acc_after_each_task.png", "acc_matrix_hat.png", "acc_matrix_naive.png", "capacity.png"]
    for name in plots:
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_skips_complete_runs_and_refuses_other_settings(sweep, capsys):
    out, _ = sweep
    path = out / "runs" / "hat__seed1.json"
    before = path.read_text()
    (out / "runs" / "naive__seed2.json").unlink()  # an interrupted sweep: one run missing
    assert main([*CLI_ARGS, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("skip ") == 3 and "skip hat seed 1" in printed
    assert "naive seed 2: task 1/5 done" in printed and "hat seed 1: task" not in printed
    assert path.read_text() == before
    assert (out / "runs" / "naive__seed2.json").exists()
    # the same folder with other defining settings: an error naming the difference
    args = ["--benchmark", "digits", "--strategies", "hat", "--seeds", "1", "--epochs", "2",
            "--hidden-sizes", "32", "32", "--out", str(out)]
    assert main(args) == 2
    assert "epochs: stored 1, now 2" in capsys.readouterr().err
    assert path.read_text() == before



def test_fused_step_reaches_the_hat_family_and_does_not_define_a_run(sweep, capsys):
    from avalanche.training.plugins import EvaluationPlugin

    from avalanche_fgadahat.plugins.checks import find_hat_plugins

    settings = PRESETS["digits"].settings(epochs=1, hidden_sizes=(8,), fused_step=True)
    for name in ("hat", "adahat", "fgadahat:icu", "hat_const_alpha"):
        strategy = build_strategy(resolve_strategy(name), settings, EvaluationPlugin(loggers=[]))
        [plugin] = find_hat_plugins(strategy.plugins)
        assert plugin.config.fused_step is True, name
    default = build_strategy(resolve_strategy("hat"), PRESETS["digits"].settings(epochs=1, hidden_sizes=(8,)),
                             EvaluationPlugin(loggers=[]))
    assert find_hat_plugins(default.plugins)[0].config.fused_step is False
    # the same numbers by design (tests/test_fused_step.py): complete runs are reused, not refused
    out, _ = sweep
    assert main([*CLI_ARGS, "--out", str(out), "--fused-step"]) == 0
    assert capsys.readouterr().out.count("skip ") == 4
    with pytest.raises(SystemExit):  # nothing it could apply to is refused, not ignored
        main(["--benchmark", "digits", "--strategies", "naive", "ewc", "--fused-step"])
    assert "--fused-step applies to the HAT family" in capsys.readouterr().err

# ---------------------------------------------------------------- summary measures by hand
def test_acc_bwt_forgetting_from_known_matrix():
    a = [
        [0.90, 0.10, 0.20],
        [0.95, 0.80, 0.30],
        [0.70, 0.85, 0.99],
    ]
    # ACC = (0.70 + 0.85 + 0.99) / 3
    assert mm.average_accuracy(a) == pytest.approx(2.54 / 3)
    assert mm.accuracy_after_each_task(a) == pytest.approx([0.90, (0.95 + 0.80) / 2, 2.54 / 3])
    # BWT = ((0.70 − 0.90) + (0.85 − 0.80)) / 2
    assert mm.backward_transfer(a) == pytest.approx(-0.075)
    # forgetting uses each task's best earlier accuracy: task 0 peaked at 0.95 after task 1
    # ((0.95 − 0.70) + (0.80 − 0.85)) / 2
    assert mm.forgetting(a) == pytest.approx(0.10)
    assert mm.backward_transfer([[0.5]]) is None and mm.forgetting([[0.5]]) is None
    with pytest.raises(ValueError, match="square"):
        mm.average_accuracy([[0.1, 0.2]])
    mean, std = mm.mean_std([0.2, 0.4, 0.9])
    assert mean == pytest.approx(0.5) and std == pytest.approx(math.sqrt((0.09 + 0.01 + 0.16) / 2))
    assert mm.mean_std([0.3]) == (0.3, None) and mm.mean_std([None]) == (None, None)


def test_per_experience_reads_values_in_experience_order():
    metrics = {
        "TrainingTime_Exp/train_phase/train_stream/Task001/Exp001": ([20], [2.5]),
        "TrainingTime_Exp/train_phase/train_stream/Task000/Exp000": ([10], [1.5]),
        "TrainingTime_Epoch/train_phase/train_stream/Task000": ([10], [9.0]),
    }
    assert per_experience(metrics, "TrainingTime_Exp") == [1.5, 2.5]
    assert per_experience(metrics, "PeakRSS_Exp") == []


# ---------------------------------------------------------------- strategy factory
def test_resolve_strategy_names_settings_and_overrides():
    hat = resolve_strategy("hat_const_alpha", {"alpha": 0.5})
    assert hat.label == "hat_const_alpha" and hat.settings["adjustment_mode"] == "hat_const_alpha"
    assert hat.settings["alpha"] == 0.5 and hat.spec.family == "hat"
    with pytest.raises(ValueError, match="accepted values are: .*naive.*fgadahat:<importance type>"):
        resolve_strategy("finetune")
    with pytest.raises(ValueError, match="'ewc_lambda'"):
        resolve_strategy("ewc", {"lambda": 3})
    parsed = parse_overrides(["ewc.ewc_lambda=100", "fgadahat.base_linear=10", "lwf.temperature=2.5"],
                             ["ewc", "fgadahat:icu", "lwf"])
    assert parsed == {"ewc": {"ewc_lambda": 100}, "fgadahat": {"base_linear": 10}, "lwf": {"temperature": 2.5}}
    assert overrides_for("fgadahat:icu", parsed) == {"base_linear": 10}
    for bad in ("ewc.ewc_lambda", "ewc=3", "si.si_lambda=1"):
        with pytest.raises(ValueError, match="--set"):
            parse_overrides([bad], ["ewc"])
    with pytest.raises(SystemExit):  # argparse's error exit, before anything runs
        main(["--strategies", "hat", "hat"])


def test_set_accepts_the_hat_familys_subnormal_guards_and_builds_with_it():
    """``--set hat.subnormal_guards=never`` (a setting outside the reference's tables) reaches the
    plugin and the run's settings (it changes numbers below H16's floors, so it defines the run);
    other strategies still refuse it, and a bad value fails when the strategy is built."""
    from avalanche.training.plugins import EvaluationPlugin

    from avalanche_fgadahat.plugins.checks import find_hat_plugins

    parsed = parse_overrides(["fgadahat.subnormal_guards=never", "hat.subnormal_guards=always"],
                             ["hat", "fgadahat:icu", "naive"])
    settings = PRESETS["digits"].settings(epochs=1, hidden_sizes=(8,))
    for name, mode in (("hat", "always"), ("fgadahat:icu", "never")):
        resolved = resolve_strategy(name, overrides_for(name, parsed))
        assert resolved.settings["subnormal_guards"] == mode
        [plugin] = find_hat_plugins(build_strategy(resolved, settings, EvaluationPlugin(loggers=[])).plugins)
        assert plugin.config.subnormal_guards == mode, name
    assert "subnormal_guards" not in resolve_strategy("adahat").settings  # the library's default applies
    with pytest.raises(ValueError, match="'subnormal_guards' does not exist for strategy 'ewc'"):
        resolve_strategy("ewc", {"subnormal_guards": "never"})
    with pytest.raises(ValueError, match="subnormal_guards='gpu' is not supported"):
        build_strategy(resolve_strategy("hat", {"subnormal_guards": "gpu"}), settings, EvaluationPlugin(loggers=[]))


def test_packnet_schedule_gives_every_task_an_equal_share():
    settings = PRESETS["digits"].settings(n_experiences=10, epochs=4)
    post, proportions = _packnet_schedule({"post_prune_epochs": "half", "prune_proportion": "equal_share"}, settings)
    assert post == 2
    # the continual-learning-baselines list for 10 tasks
    assert [round(p, 2) for p in proportions] == [0.9, 0.89, 0.88, 0.86, 0.83, 0.8, 0.75, 0.67, 0.5, 0.0]
    kept, free = [], 1.0
    for p in proportions:
        kept.append(free * (1 - p))
        free *= p
    assert kept == pytest.approx([0.1] * 10)
    with pytest.raises(ValueError, match="epochs 2 or more"):
        _packnet_schedule({"post_prune_epochs": "half", "prune_proportion": 0.5},
                          PRESETS["digits"].settings(epochs=1))


def test_baseline_models_have_the_hat_backbone_layers_unmasked():
    torch.manual_seed(0)
    hat = HATMLP(64, (24, 12))
    torch.manual_seed(0)
    plain = PlainMultiHead(HATMLP(64, (24, 12)))
    hat_shapes = {n: p.shape for n, p in hat.named_parameters() if n.startswith("body.fc.")}
    plain_shapes = {n.removeprefix("body.net."): p.shape for n, p in plain.named_parameters() if n.startswith("body.")}
    assert plain_shapes == hat_shapes
    assert not any("task_embedding" in n for n, _ in plain.named_parameters())
    x = torch.randn(5, 64)
    expected = torch.relu(hat.fc[1](torch.relu(hat.fc[0](x))))
    torch.testing.assert_close(plain.body(x), expected, rtol=0, atol=0)
    packnet = PackNetMultiHead(HATMLP(64, (24, 12)))
    assert type(packnet.classifier).__name__ == "MultiHeadClassifier"
    assert all(type(m).__name__ != "_PnLinear" for m in packnet.classifier.modules())
    assert sum(type(m).__name__ == "_PnLinear" for m in packnet.wrappee.modules()) == 2


@pytest.fixture
def one_thread():
    """Tiny models train ~30x faster on one torch thread on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.filterwarnings("ignore:No loggers specified")
def test_packnet_keeps_evaluator_and_freezes_earlier_tasks_outputs(one_thread):
    settings = PRESETS["digits"].settings(n_experiences=5, epochs=2, hidden_sizes=(16,), threads=1)
    benchmark = build_benchmark(settings, seed=0)
    evaluator = make_evaluator(device="cpu", hat_family=False, loggers=[])
    torch.manual_seed(0)
    strategy = build_strategy(resolve_strategy("packnet"), settings, evaluator)
    x0 = torch.stack([benchmark.test_stream[0].dataset[i][0] for i in range(20)])
    strategy.train(benchmark.train_stream[0])
    strategy.model.eval()
    with torch.no_grad():
        before = strategy.model(x0, torch.zeros(20, dtype=torch.long))
    strategy.train(benchmark.train_stream[1])
    strategy.model.eval()
    with torch.no_grad():
        after = strategy.model(x0, torch.zeros(20, dtype=torch.long))
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    # the evaluator's plugins ran (Avalanche's PackNet wrapper would have dropped them)
    assert len(per_experience(evaluator.get_all_metrics(), "TrainingTime_Exp")) == 2


def test_subsampled_benchmark_keeps_task_labels_and_sizes():
    settings = PRESETS["digits"].settings(max_train_samples=30, max_test_samples=10)
    benchmark = build_benchmark(settings, seed=3)
    assert [len(e.dataset) for e in benchmark.train_stream] == [30] * 5
    assert [len(e.dataset) for e in benchmark.test_stream] == [10] * 5
    assert [e.task_labels for e in benchmark.train_stream] == [[t] for t in range(5)]


def test_bad_settings_name_the_argument():
    with pytest.raises(ValueError, match="n_experiences=3 must divide the 10 classes"):
        PRESETS["digits"].settings(n_experiences=3)
    with pytest.raises(ValueError, match="hidden_sizes=.*mlp backbone only"):
        PRESETS["split_cifar100"].settings(hidden_sizes=(10,))
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        PRESETS["pmnist"].settings(epochs=0)
    with pytest.raises(ValueError, match="MTSimpleMLP has one hidden layer"):
        PRESETS["pdigits"].settings(backbone="mtsimplemlp", hidden_sizes=(16, 8))


def test_mtsimplemlp_backbone_is_avalanches_model_converted_and_runs_the_hat_family_only(tmp_path):
    """``--backbone mtsimplemlp``: Avalanche's MTSimpleMLP through ``to_hat`` (its own layers);
    a baseline on it is refused, naming the backbone to use."""
    from avalanche.models import MTSimpleMLP

    from avalanche_fgadahat.models import ConvertedHATModel

    settings = PRESETS["pdigits"].settings(backbone="mtsimplemlp", hidden_sizes=(16,), n_experiences=2, epochs=1,
                                           max_train_samples=40, max_test_samples=20)
    hat = resolve_strategy("hat")
    model = build_model(hat, settings)
    assert isinstance(model, ConvertedHATModel) and model.source == MTSimpleMLP.__name__
    assert [layout.weight.shape for layout in model.param_layouts] == [torch.Size([16, 64])]
    record = run_one(settings, hat, 1, build_benchmark(settings, 1), tmp_path, log=lambda m: None)
    assert record["config"]["experiment"]["backbone"] == "mtsimplemlp"
    with pytest.raises(ValueError, match="runs the HAT family only; run the baselines on the mlp backbone"):
        build_model(resolve_strategy("naive"), settings)


# ---------------------------------------------------------------- FG-AdaHAT
def test_fgadahat_resolves_importance_names_and_runs(tmp_path):
    icu = resolve_strategy("fgadahat:ICU")
    assert icu.label == "fgadahat:icu"
    assert icu.settings["importance_type"] == "input_weight_abs_sum_x_activation_abs"
    assert resolve_strategy("fgadahat:input_weight_abs_sum_x_activation_abs").label == "fgadahat:icu"
    og = resolve_strategy("fgadahat:og")
    assert (og.settings["adjustment_intensity"], og.settings["base_linear"]) == (1e-7, 10.0)
    with pytest.raises(ValueError, match="not registered; accepted: .*icu"):
        resolve_strategy("fgadahat:nonsense")
    settings = PRESETS["digits"].settings(epochs=1, hidden_sizes=(16,), max_train_samples=40,
                                          max_test_samples=20, threads=1)
    record = run_one(settings, icu, 1, build_benchmark(settings, 1), tmp_path, log=lambda m: None)
    assert (tmp_path / "runs" / "fgadahat-icu__seed1.json").exists()
    assert len(record["metrics"]["capacity_per_task"]) == 5


# ---------------------------------------------------------------- fast Permuted MNIST
@pytest.mark.skipif(not HAS_MNIST, reason="MNIST files not in /work/shared/data")
def test_fast_permuted_mnist_equals_avalanche_permuted_mnist():
    from avalanche.benchmarks.classic import PermutedMNIST

    from avalanche_fgadahat.data import fast_permuted_mnist

    reference = PermutedMNIST(2, return_task_id=True, seed=7, dataset_root=MNIST_ROOT)
    fast = fast_permuted_mnist(2, seed=7, dataset_root=MNIST_ROOT)
    generator = torch.Generator().manual_seed(0)
    for stream in ("train_stream", "test_stream"):
        pairs = list(zip(getattr(reference, stream), getattr(fast, stream)))
        assert len(pairs) == 2
        for ref_exp, fast_exp in pairs:
            assert fast_exp.task_labels == ref_exp.task_labels
            assert fast_exp.classes_in_this_experience == ref_exp.classes_in_this_experience
            assert len(fast_exp.dataset) == len(ref_exp.dataset)
            assert list(fast_exp.dataset.targets) == list(ref_exp.dataset.targets)
            picks = torch.randint(len(ref_exp.dataset), (6,), generator=generator).tolist()
            for i in [0, len(ref_exp.dataset) - 1, *picks]:
                x_ref, y_ref, t_ref = ref_exp.dataset[i]
                x_fast, y_fast, t_fast = fast_exp.dataset[i]
                assert torch.equal(x_fast, x_ref), (stream, i)
                assert (y_fast, t_fast) == (y_ref, t_ref)
    # the permutations differ between experiences (same image, other pixels)
    a, b = fast.train_stream[0].dataset[0][0], fast.train_stream[1].dataset[0][0]
    assert not torch.equal(a, b) and torch.equal(a.flatten().sort().values, b.flatten().sort().values)


def test_a_long_legend_goes_beside_the_axes_and_a_short_one_stays_inside():
    """22 strategies' legend drawn over the curves hid them (the class-incremental sweeps)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avalanche_fgadahat.experiments.report import MAX_LEGEND_ENTRIES_INSIDE, _legend

    for lines, outside in ((MAX_LEGEND_ENTRIES_INSIDE, False), (MAX_LEGEND_ENTRIES_INSIDE + 1, True)):
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        for i in range(lines):
            ax.plot([0, 1], [i, i], label=f"s{i}")
        _legend(ax, False, loc="lower left")
        fig.canvas.draw()
        legend_left = ax.get_legend().get_window_extent().x0
        axes_right = ax.get_window_extent().x1
        assert bool(legend_left > axes_right) == outside
        assert bool(fig.get_size_inches()[0] > 7.5) == outside
        plt.close(fig)

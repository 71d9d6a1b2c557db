"""Sweeps on Ray (``--executor ray``) and tuning with Ray Tune (``--tune``), on a local Ray
with 2 CPUs started once for the module.

* A 2-strategy × 2-seed digits sweep on Ray writes the same files and the same metrics as
  the local executor (times and memory excluded); a rerun with one more seed runs only the
  new runs.
* A run that fails inside its Ray task is reported (progress line, error file, exit code 1,
  the list at the end) while the other runs complete; the rerun runs only the failed one.
* ``--tune`` scores every trial on the validation split carved from the training data (the
  benchmark's test stream is replaced by an object that raises while tuning), gives every
  method the same budget with its default first, picks the best validation ACC, and the
  test-set runs use that setting.
* Bad input of the new options stops before anything runs (``docs/bad_input.md`` rows 11*).

Tests that need Ray are skipped, saying so, when it is not installed; the bad-input tests
run without it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import sys

import pytest

from avalanche_fgadahat.experiments import PRESETS
from avalanche_fgadahat.experiments.__main__ import main
from avalanche_fgadahat.experiments.splits import split_indices, validation_benchmark

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason='Ray is not installed (pip install "avalanche-fgadahat[ray]")')

# one tiny sweep: 2 strategies x 2 seeds on digits, one epoch, small samples, one thread per run
SWEEP = ["--benchmark", "digits", "--strategies", "hat", "naive", "--epochs", "1", "--hidden-sizes", "16",
         "--max-train-samples", "60", "--max-test-samples", "30", "--threads", "1", "--quiet"]
#: metrics that measure the machine, not the learning
TIMING = {"train_time_per_experience_s", "train_time_total_s", "peak_rss_mb_per_experience", "peak_cuda_mb_per_experience"}


@pytest.fixture(scope="module")
def local_ray():
    """Ray on this machine with 2 CPUs, for every test of the module (the executor reuses it)."""
    if not HAS_RAY:
        pytest.skip('Ray is not installed (pip install "avalanche-fgadahat[ray]")')
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray
    ray.shutdown()


def _runs(out):
    return {path.name: json.loads(path.read_text()) for path in sorted((out / "runs").glob("*.json"))}


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, local_ray):
    """The same sweep with the local executor and on Ray."""
    local, on_ray = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("ray")
    assert main([*SWEEP, "--seeds", "1", "2", "--out", str(local)]) == 0
    assert main([*SWEEP, "--seeds", "1", "2", "--out", str(on_ray), "--executor", "ray"]) == 0
    return local, on_ray


# ---------------------------------------------------------------- executor ray = executor local
@needs_ray
def test_ray_sweep_gives_the_local_sweeps_files_and_metrics(sweeps):
    local, on_ray = sweeps
    for folder in ("runs", "logs", "plots"):
        assert sorted(p.name for p in (on_ray / folder).iterdir()) == sorted(p.name for p in (local / folder).iterdir())
    assert (on_ray / "results.md").exists() and (on_ray / "results.csv").exists()
    local_runs, ray_runs = _runs(local), _runs(on_ray)
    assert sorted(ray_runs) == ["hat__seed1.json", "hat__seed2.json", "naive__seed1.json", "naive__seed2.json"]
    for name, record in ray_runs.items():
        expected = local_runs[name]
        assert record["config"] == expected["config"] and record["status"] == "complete"
        assert {k: v for k, v in record["metrics"].items() if k not in TIMING} == \
            {k: v for k, v in expected["metrics"].items() if k not in TIMING}, name
        assert record["log"] == expected["log"] and record["diagnostic_warnings"] == expected["diagnostic_warnings"]
    # the log came back through Ray: Avalanche's text log of every task
    text = (on_ray / "logs" / "hat__seed1.log").read_text()
    assert text.count("Top1_Acc_Exp/eval_phase/test_stream") == (local / "logs" / "hat__seed1.log").read_text().count(
        "Top1_Acc_Exp/eval_phase/test_stream") > 0


@needs_ray
def test_ray_rerun_with_one_more_seed_runs_only_the_new_runs(sweeps, tmp_path, capsys):
    _, on_ray = sweeps
    out = tmp_path / "rerun"
    shutil.copytree(on_ray, out)
    before = {name: (out / "runs" / name).read_text() for name in _runs(out)}
    assert main([*SWEEP, "--seeds", "1", "2", "3", "--out", str(out), "--executor", "ray"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("skip ") == 0  # --quiet: only the table
    assert {name: (out / "runs" / name).read_text() for name in before} == before
    assert sorted(_runs(out)) == sorted([*before, "hat__seed3.json", "naive__seed3.json"])
    assert "| hat | 1 2 3 |" in printed
    # the same without --quiet: the progress lines say what ran
    (out / "runs" / "naive__seed3.json").unlink()
    args = [a for a in SWEEP if a != "--quiet"]
    assert main([*args, "--seeds", "1", "2", "3", "--out", str(out), "--executor", "ray"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("skip ") == 5 and "[6/6] naive seed 3: ACC" in printed
    assert "hat seed 1: ACC" not in printed


# ---------------------------------------------------------------- failures
@needs_ray
def test_a_failed_ray_run_is_reported_and_the_others_complete(local_ray, tmp_path, monkeypatch, capsys):
    from avalanche_fgadahat.experiments import ray_executor, runner

    real = runner.run_in_memory

    def failing(settings, strategy, seed, benchmark):  # pickled by value into the Ray task
        if strategy.label == "naive" and seed == 2:
            raise RuntimeError("injected failure")
        return real(settings, strategy, seed, benchmark)

    monkeypatch.setattr(ray_executor, "run_in_memory", failing)
    out = tmp_path / "sweep"
    args = [a for a in SWEEP if a != "--quiet"]
    assert main([*args, "--seeds", "1", "2", "--out", str(out), "--executor", "ray"]) == 1
    captured = capsys.readouterr()
    assert "naive seed 2: FAILED: RuntimeError: injected failure" in captured.out
    assert "1 run(s) failed" in captured.err and "naive seed 2: RuntimeError: injected failure" in captured.err
    assert sorted(_runs(out)) == ["hat__seed1.json", "hat__seed2.json", "naive__seed1.json"]
    assert "injected failure" in (out / "logs" / "naive__seed2.error.log").read_text()
    assert "| naive | 1 |" in (out / "results.md").read_text()  # the complete runs are tabulated
    # fixed: the rerun runs the failed run only
    monkeypatch.undo()
    assert main([*args, "--seeds", "1", "2", "--out", str(out), "--executor", "ray"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("skip ") == 3 and "[4/4] naive seed 2: ACC" in printed


def test_a_failed_local_run_is_reported_and_the_others_complete(tmp_path, monkeypatch, capsys):
    from avalanche_fgadahat.experiments import executors

    real = executors.run_one

    def failing(settings, strategy, seed, *args, **kwargs):
        if strategy.label == "hat" and seed == 1:
            raise RuntimeError("injected failure")
        return real(settings, strategy, seed, *args, **kwargs)

    monkeypatch.setattr(executors, "run_one", failing)
    out = tmp_path / "sweep"
    assert main([*SWEEP, "--seeds", "1", "2", "--out", str(out)]) == 1
    assert "hat seed 1: RuntimeError: injected failure" in capsys.readouterr().err
    assert sorted(_runs(out)) == ["hat__seed2.json", "naive__seed1.json", "naive__seed2.json"]


# ---------------------------------------------------------------- tuning
def test_validation_split_is_carved_from_the_training_data_only():
    import torch

    fit, held = split_indices(50, 0.1, torch.Generator().manual_seed(0))
    assert len(held) == 5 and len(fit) == 45 and not set(fit) & set(held) and sorted(fit + held) == list(range(50))
    settings = PRESETS["digits"].settings(max_train_samples=60, max_test_samples=7)
    benchmark = validation_benchmark(settings, seed=1)
    assert [len(e.dataset) for e in benchmark.train_stream] == [54] * 5
    assert [len(e.dataset) for e in benchmark.test_stream] == [6] * 5  # 10 % of the 60 training samples
    assert [e.task_labels for e in benchmark.test_stream] == [[t] for t in range(5)]


@needs_ray
def test_tune_picks_the_best_validation_setting_and_never_reads_the_test_stream(local_ray, tmp_path, monkeypatch, capsys):
    from avalanche_fgadahat.experiments import splits, tuning

    tuning_now = [False]
    real_raw, real_tune = splits.raw_benchmark, tuning.tune_strategies

    class TestStreamGuard:
        """The preset's benchmark, whose test stream must not be read while tuning."""

        def __init__(self, benchmark):
            self._benchmark = benchmark

        def __getattr__(self, name):
            if name == "test_stream" and tuning_now[0]:
                raise AssertionError("the tuning read the test stream")
            return getattr(self._benchmark, name)

    def tune_strategies(*args, **kwargs):
        tuning_now[0] = True
        try:
            return real_tune(*args, **kwargs)
        finally:
            tuning_now[0] = False

    monkeypatch.setattr(splits, "raw_benchmark", lambda settings, seed: TestStreamGuard(real_raw(settings, seed)))
    monkeypatch.setattr(tuning, "tune_strategies", tune_strategies)
    out = tmp_path / "tuned"
    args = ["--benchmark", "digits", "--strategies", "hat", "ewc", "naive", "--epochs", "1", "--hidden-sizes", "16",
            "--max-train-samples", "60", "--max-test-samples", "30", "--seeds", "1", "2", "--out", str(out),
            "--executor", "ray", "--tune", "--tune-trials", "2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "tune naive: nothing to tune" in printed
    runs = _runs(out)
    for label, keys in (("hat", ("s_max", "mask_sparsity_reg_factor")), ("ewc", ("ewc_lambda",))):
        record = json.loads((out / "tuning" / f"{label}.json").read_text())
        trials = record["trials"]
        assert len(trials) == 2  # the same budget for every method
        default = {k: record["config"]["strategy"]["settings"][k] for k in keys}
        assert trials[0]["settings"] == default and record["default"] == trials[0]  # the default first
        assert trials[1]["settings"] != default
        # every trial was scored on the validation split: 10 % of each task's 60 training samples
        assert all(t["eval_samples"] == [6] * 5 and t["error"] is None for t in trials)
        assert record["validation"] == {"fraction": 0.1, "fit_samples_per_task": [54] * 5,
                                        "validation_samples_per_task": [6] * 5}
        best = max(trials, key=lambda t: t["val_acc"])  # max keeps the earliest of equal scores
        assert record["best"] == best
        for seed in (1, 2):  # the test-set runs use the chosen setting
            settings = runs[f"{label}__seed{seed}.json"]["config"]["strategy"]["settings"]
            assert {k: settings[k] for k in keys} == best["settings"]
    assert runs["naive__seed1.json"]["config"]["strategy"]["settings"] == {}
    table = (out / "tuning.md").read_text()
    assert "| ewc | ewc_lambda ∈ [1, 100000] (log) | 2 |" in table and "| naive | nothing to tune | 0 |" in table
    assert "## Tuned settings" in (out / "results.md").read_text()
    # a rerun reuses the searches and the runs
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "tune hat: search complete" in printed and "trial 1/2" not in printed and printed.count("skip ") == 6


# ---------------------------------------------------------------- bad input (docs/bad_input.md 11*)
@pytest.mark.parametrize("extra, message", [
    (["--ray-address", "auto"], "--ray-address applies to Ray runs only: add --executor ray"),
    (["--cpus-per-run", "2"], "--cpus-per-run applies to Ray runs only"),
    (["--tune-trials", "3"], "--tune-trials applies to --tune only"),
    (["--tune", "--tune-trials", "0"], "--tune-trials must be an integer >= 1, got 0"),
    (["--executor", "ray", "--gpus-per-run", "-1"], "--gpus-per-run must be a finite number >= 0, got -1"),
    (["--executor", "ray", "--cpus-per-run", "0"], "--cpus-per-run must be a finite number > 0, got 0"),
    (["--executor", "ray", "--memory-per-run", "nan"], "--memory-per-run must be a finite number > 0"),
    (["--executor", "ray", "--device", "cuda"], "--device cuda with Ray needs --gpus-per-run > 0"),
    (["--executor", "ray", "--gpus-per-run", "1", "--device", "cpu"], "reserves GPUs that --device cpu does not use"),
    (["--tune", "--set", "hat.s_max=100"], "--set hat.s_max and --tune: --tune searches hat's s_max"),
    (["--executor", "bogus"], "invalid choice: 'bogus' \\(choose from 'local', 'ray'\\)"),
])
def test_bad_scale_out_options_stop_before_anything_runs(tmp_path, capsys, extra, message):
    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exit_:
        main(["--benchmark", "digits", "--strategies", "hat", "--out", str(out), *extra])
    assert exit_.value.code == 2
    assert __import__("re").search(message, capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--executor ray", "--tune"])
def test_without_ray_the_error_says_how_to_install_it(tmp_path, capsys, monkeypatch, flag):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exit_:
        main(["--benchmark", "digits", "--strategies", "hat", "--out", str(out), *flag.split()])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"{flag} needs Ray" in err and 'pip install "avalanche-fgadahat[ray]"' in err
    assert not out.exists()


def test_an_address_where_nothing_answers_is_refused_at_once():
    from avalanche_fgadahat.experiments.ray_executor import check_reachable

    with pytest.raises(ValueError, match="--ray-address 127.0.0.1:1: nothing answers there .*ray start --head"):
        check_reachable("127.0.0.1:1", timeout_s=2)
    with pytest.raises(ValueError, match="expected 'auto', host:port or ray://host:port"):
        check_reachable("localhost:port")
    check_reachable("auto")  # left to Ray


@needs_ray
def test_runs_no_node_can_hold_are_refused_before_they_are_submitted(local_ray):
    from avalanche_fgadahat.experiments.ray_executor import RayExecutor

    with pytest.raises(ValueError, match="the Ray cluster cannot hold one run .*GPU 0"):
        RayExecutor(gpus_per_run=1).slots(local_ray)
    assert RayExecutor(cpus_per_run=1).slots(local_ray) == 2


# ---------------------------------------------------------------- search spaces and the Ray boundary
def test_every_search_space_names_real_settings_and_holds_the_default():
    from avalanche_fgadahat.experiments.strategies import resolve_strategy
    from avalanche_fgadahat.experiments.tuning_spaces import SEARCH_SPACES

    names = {base: [base] for base in SEARCH_SPACES}
    names["fgadahat"] = ["fgadahat:icu", "fgadahat:og"]  # both of the paper's default pairs
    for base, space in SEARCH_SPACES.items():
        assert space.dimensions and space.source
        for name in names[base]:
            settings = resolve_strategy(name).settings
            for dimension in space.dimensions:
                assert dimension.key in settings, (name, dimension.key)
                assert dimension.contains(settings[dimension.key]), (name, dimension.describe(), settings[dimension.key])
    assert "naive" not in SEARCH_SPACES and "joint" not in SEARCH_SPACES


def test_ray_is_imported_only_inside_harness_functions():
    """The library never imports Ray; harness modules only inside functions (when asked for)."""
    import ast
    from pathlib import Path

    import avalanche_fgadahat

    root = Path(avalanche_fgadahat.__file__).parent
    found = {}
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        top_level = set(map(id, tree.body))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            if any(n == "ray" or n.startswith("ray.") for n in names):
                found.setdefault(str(path.relative_to(root)), []).append(id(node) in top_level)
    assert found, "the harness imports Ray somewhere (the check sees imports)"
    assert all(p.startswith("experiments/") for p in found), found
    assert not any(any(at_top) for at_top in found.values()), found

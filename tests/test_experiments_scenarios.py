"""The harness on streams without task labels (issue 13): presets ``digits_ci``, ``smnist_ci``,
``pdigits_di``, ``pmnist_di``; the HAT family's ``@score``; the replay baselines' ``:memory``."""

from __future__ import annotations

import json

import pytest

from avalanche_fgadahat.experiments import resolve_strategy
from avalanche_fgadahat.experiments.__main__ import main
from avalanche_fgadahat.experiments.baseline_models import PlainMultiHead, PlainSingleHead
from avalanche_fgadahat.experiments.presets import BENCHMARKS, PRESETS
from avalanche_fgadahat.experiments.strategies import build_model


def test_class_incremental_sweep_records_task_identification_and_runs_every_baseline_kind(tmp_path, capsys):
    code = main(["--benchmark", "digits_ci", "--strategies", "hat", "adahat@energy", "naive", "replay:50",
                 "der:50", "gdumb:50", "--seeds", "1", "--epochs", "2", "--hidden-sizes", "32",
                 "--out", str(tmp_path), "--quiet"])
    assert code == 0
    runs = {path.stem: json.loads(path.read_text()) for path in (tmp_path / "runs").glob("*.json")}
    assert sorted(runs) == sorted(["hat@entropy__seed1", "adahat@energy__seed1", "naive__seed1",
                                   "replay-50__seed1", "der-50__seed1", "gdumb-50__seed1"])
    hat = runs["hat@entropy__seed1"]
    assert hat["config"]["strategy"]["settings"]["task_inference"] == "entropy"
    steps = hat["metrics"]["task_id_acc_after_each_task"]
    assert len(steps) == 5 and steps[0] == 1.0 and 0.0 <= hat["metrics"]["task_id_acc"] <= 1.0
    assert "task_id_acc" not in runs["naive__seed1"]["metrics"]
    assert runs["replay-50__seed1"]["config"]["strategy"]["settings"]["mem_size"] == 50
    assert "Task-ID acc (%)" in (tmp_path / "results.md").read_text()


def test_the_default_score_is_named_in_the_label():
    resolved = resolve_strategy("fgadahat:icu", task_labels=False)
    assert resolved.label == "fgadahat:icu@entropy" and resolved.settings["task_inference"] == "entropy"
    assert resolve_strategy("hat@max_softmax", task_labels=False).settings["task_inference"] == "max_softmax"


@pytest.mark.parametrize("name, task_labels, message", [
    ("hat@entropy", True, r"this preset gives task labels, so no task is inferred"),
    ("naive@entropy", False, r"only the HAT family infers tasks"),
    ("hat@softmax", False, r"task inference score \(after '@'\)='softmax' is not supported; accepted values are: "
                           r"'max_softmax', 'entropy', 'energy'"),
    ("packnet", False, r"PackNet selects each task's weights by its task label; this preset has none"),
    ("replay:lots", False, r"the memory after ':' must be a whole number of samples"),
    ("replay:0", False, r"the memory must hold at least 1 sample"),
])
def test_bad_names_are_refused_naming_the_fix(name, task_labels, message):
    with pytest.raises(ValueError, match=message):
        resolve_strategy(name, task_labels=task_labels)


@pytest.mark.parametrize("key", ["task_inference", "mem_size"])
def test_settings_that_name_the_algorithm_are_not_set_with_set(key):
    with pytest.raises(ValueError, match="instead"):
        resolve_strategy("hat" if key == "task_inference" else "replay", {key: "x"}, task_labels=False)


def test_baselines_get_one_head_over_all_classes_without_task_labels():
    settings = PRESETS["digits_ci"].settings(hidden_sizes=(16,))
    assert not BENCHMARKS["digits_ci"].task_labels
    model = build_model(resolve_strategy("naive", task_labels=False), settings)
    assert isinstance(model, PlainSingleHead) and model.classifier.out_features == 10
    labelled = build_model(resolve_strategy("naive"), PRESETS["digits"].settings(hidden_sizes=(16,)))
    assert isinstance(labelled, PlainMultiHead)


def test_a_run_label_is_resolved_again_where_the_run_executes():
    """Ray workers and tuning trials resolve a run from its label: ``hat@entropy`` and
    ``replay:500`` keep their score and memory there (the preset's labels are not rechecked)."""
    from avalanche_fgadahat.experiments.executors import RunTask, settings_overrides

    settings = PRESETS["digits_ci"].settings(hidden_sizes=(16,))
    for name in ("hat", "fgadahat:icu@energy", "replay:500", "naive"):
        resolved = resolve_strategy(name, task_labels=False)
        again = RunTask.of(settings, resolved, 1).strategy()
        assert (again.label, dict(again.settings)) == (resolved.label, dict(resolved.settings))
        assert settings_overrides(resolved) == {}

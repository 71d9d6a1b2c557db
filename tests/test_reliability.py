"""Reliability: checkpoint/resume in a new process, state dicts, determinism.

Benchmark: the embedded ``split_digits(5)`` (2 classes per task); model ``HATMLP(64, (32, 32))``.
The state-dict round trip into a fresh model is checked for every backbone in
``backbone_conformance.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from avalanche.evaluation.metrics import accuracy_metrics
from hat_test_support import quiet

from avalanche_fgadahat import HAT, AdaHAT, set_seed
from avalanche_fgadahat.checkpoint import maybe_load_checkpoint, save_checkpoint
from avalanche_fgadahat.models import HATMLP

try:
    from avalanche_fgadahat import FGAdaHAT
except ImportError:  # written concurrently; the tests below skip it when absent
    FGAdaHAT = None

pytestmark = pytest.mark.filterwarnings("ignore:No loggers specified")

ALGORITHMS = ["HAT", "AdaHAT"] + (["FGAdaHAT"] if FGAdaHAT is not None else [])

# The script run in subprocesses. ``full``: the uninterrupted 4-experience run, then the
# first 3 experiences again with a checkpoint after each, then a hard crash (os._exit) in
# the middle of experience 4. ``resume``: a fresh process builds the strategy with another
# seed, resumes from the checkpoint with train_resumable and finishes experience 4.
SCRIPT = textwrap.dedent(
    '''
    import json, os, sys, warnings
    warnings.simplefilter("ignore")
    import torch
    import avalanche_fgadahat as pkg
    from avalanche.core import SupervisedPlugin
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche_fgadahat.checkpoint import save_checkpoint, train_resumable
    from avalanche_fgadahat.data import split_digits
    from avalanche_fgadahat.models import HATMLP

    OPTIMIZERS = {
        "HAT": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        "AdaHAT": lambda p: torch.optim.Adam(p, lr=1e-2),
        "FGAdaHAT": lambda p: torch.optim.SGD(p, lr=0.1),
    }

    def build(name, seed):
        pkg.set_seed(seed)
        model = HATMLP(64, (32, 32))
        evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
        return getattr(pkg, name)(model=model, optimizer=OPTIMIZERS[name](model.parameters()),
                                  train_mb_size=32, train_epochs=2, eval_mb_size=512, evaluator=evaluator)

    def matrix(strategy):
        """Row i: accuracy on every test experience after training experience i."""
        history = strategy.evaluator.get_all_metrics()
        columns = [history[f"Top1_Acc_Exp/eval_phase/test_stream/Task{j:03d}/Exp{j:03d}"][1] for j in range(5)]
        return [list(row) for row in zip(*columns)]

    class Crash(SupervisedPlugin):
        def after_training_iteration(self, strategy, **kwargs):
            if strategy.clock.train_epoch_iterations == 3:
                os._exit(3)

    mode, workdir, names = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    bench = split_digits(5)
    out = {}
    for name in names:
        ckpt = os.path.join(workdir, name + ".ckpt")
        if mode == "full":
            strategy = build(name, 0)
            for exp in bench.train_stream[:4]:
                strategy.train(exp)
                strategy.eval(bench.test_stream)
            out[name] = matrix(strategy)
            strategy = build(name, 0)
            for exp in bench.train_stream[:3]:
                strategy.train(exp)
                strategy.eval(bench.test_stream)
                save_checkpoint(strategy, ckpt)
        else:
            strategy = build(name, 12345)
            strategy = train_resumable(strategy, bench.train_stream[:4], ckpt, eval_stream=bench.test_stream)
            out[name] = {"matrix": matrix(strategy), "trained": strategy.model.trained_tasks(),
                         "exp_counter": strategy.clock.train_exp_counter}
    with open(os.path.join(workdir, mode + ".json"), "w") as f:
        json.dump(out, f)
    if mode == "full":
        strategy.plugins.append(Crash())
        strategy.train(bench.train_stream[3])  # dies half-way
        raise SystemExit("not reached")
    '''
)


def _run(mode: str, workdir, names: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, str(workdir / "run.py"), mode, str(workdir), ",".join(names)],
        capture_output=True, text=True, timeout=300, env=env,
    )


@pytest.fixture(scope="module")
def crash_and_resume(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("resume")
    (workdir / "run.py").write_text(SCRIPT)
    first = _run("full", workdir, ALGORITHMS)
    assert first.returncode == 3, first.stderr[-3000:]  # the hard crash, not a clean exit
    second = _run("resume", workdir, ALGORITHMS)
    assert second.returncode == 0, second.stderr[-3000:]
    full = json.loads((workdir / "full.json").read_text())
    resumed = json.loads((workdir / "resume.json").read_text())
    return full, resumed


@pytest.mark.parametrize("name", ["HAT", "AdaHAT", "FGAdaHAT"])
def test_resume_in_new_process_equals_uninterrupted_run(crash_and_resume, name):
    if name not in ALGORITHMS:
        pytest.skip("FGAdaHAT is not importable from avalanche_fgadahat")
    full, resumed = crash_and_resume
    assert resumed[name]["trained"] == [0, 1, 2, 3]
    assert resumed[name]["exp_counter"] == 4
    matrix = resumed[name]["matrix"]
    assert len(matrix) == 4 and all(len(row) == 5 for row in matrix)
    assert matrix == full[name]  # exact float equality, every entry
    # the run learnt something and every experience changed the model (2-class tasks,
    # chance 0.5), so equality is not that of two constant or empty matrices
    assert max(matrix[i][i] for i in range(4)) > 0.8, matrix
    assert len({tuple(row) for row in matrix}) == 4, matrix


# ---------------------------------------------------------------- in-process helpers
def _strategy(name: str, seed: int, bench, hidden=(32, 32)):
    set_seed(seed)
    model = HATMLP(64, hidden)
    evaluator = quiet(accuracy_metrics(experience=True))
    cls = {"HAT": HAT, "AdaHAT": AdaHAT, "FGAdaHAT": FGAdaHAT}[name]
    return cls(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
               train_mb_size=32, train_epochs=2, eval_mb_size=512, evaluator=evaluator)


def _accuracy_matrix(strategy, n_tasks: int = 5) -> list[list[float]]:
    history = strategy.evaluator.get_all_metrics()
    columns = [history[f"Top1_Acc_Exp/eval_phase/test_stream/Task{j:03d}/Exp{j:03d}"][1] for j in range(n_tasks)]
    return [list(row) for row in zip(*columns)]


def _train(strategy, bench, n: int = 3):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for exp in bench.train_stream[:n]:
            strategy.train(exp)
            strategy.eval(bench.test_stream)
    return strategy


# ---------------------------------------------------------------- state dicts
# (the round trip into a fresh model, for every backbone: backbone_conformance.py)
def test_state_dict_loads_into_model_adapted_to_fewer_tasks(digits5):
    """Heads that exist with another width are resized; missing ones are created."""
    strategy = _train(_strategy("HAT", 0, digits5), digits5, n=2)
    fresh = HATMLP(64, (32, 32))
    fresh.classifier.classifiers["0"].classifier = torch.nn.Linear(32, 7)
    fresh.load_state_dict(strategy.model.state_dict())
    assert fresh.classifier.classifiers["0"].classifier.out_features == 2
    assert set(fresh.classifier.classifiers) == set(strategy.model.classifier.classifiers)


def test_single_head_state_dict_round_trip():
    model = HATMLP(8, (6,), multihead=False)
    with torch.no_grad():
        model.classifier.classifier = torch.nn.Linear(6, 4)
        model.classifier.active_units = torch.tensor([1, 1, 0, 1], dtype=torch.int8)
    model.commit_task(0)
    fresh = HATMLP(8, (6,), multihead=False)
    fresh.load_state_dict(model.state_dict())
    model.eval()
    fresh.eval()
    x = torch.randn(5, 8)
    assert torch.equal(fresh(x, 0), model(x, 0))
    assert fresh.max_class_label == 4 and fresh.known_train_tasks_labels == {0}


# ---------------------------------------------------------------- determinism
def test_same_seed_gives_bit_identical_accuracy_matrices_and_weights(digits5):
    runs = []
    for seed in (7, 7, 8):
        strategy = _train(_strategy("AdaHAT", seed, digits5), digits5)
        runs.append((_accuracy_matrix(strategy), {k: v.clone() for k, v in strategy.model.state_dict().items()}))
    (m1, s1), (m2, s2), (_, s3) = runs
    assert len(m1) == 3
    assert m1 == m2
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not torch.equal(s1["body.fc.0.weight"], s3["body.fc.0.weight"])  # the seed matters


# ---------------------------------------------------------------- checkpoint details
def test_checkpoint_in_process_round_trip_and_atomic_write(digits5, tmp_path):
    strategy = _train(_strategy("HAT", 0, digits5), digits5, n=2)
    path = tmp_path / "run.ckpt"
    save_checkpoint(strategy, path)
    assert os.listdir(tmp_path) == ["run.ckpt"]  # the temporary file was renamed
    fresh = _strategy("HAT", 99, digits5)
    old_model = fresh.model
    loaded, start = maybe_load_checkpoint(fresh, path)
    assert loaded is fresh and start == 2
    assert fresh.model is not old_model  # Avalanche replaces the objects: re-fetch them
    assert fresh.optimizer.param_groups[0]["params"][0] is next(fresh.model.parameters())
    assert fresh.model.trained_tasks() == [0, 1]
    assert _accuracy_matrix(fresh) == _accuracy_matrix(strategy)
    missing, start = maybe_load_checkpoint(_strategy("HAT", 0, digits5), tmp_path / "none.ckpt")
    assert start == 0


def test_resuming_with_other_settings_keeps_the_checkpoints_and_names_each_difference(digits5, tmp_path):
    """The checkpoint's plugin replaces the fresh strategy's, settings included: a setting given
    differently to the resuming strategy (here ``subnormal_guards`` and ``fused_step``, which a
    user may expect to change with the machine) is named in a warning, not silently dropped."""
    from avalanche_fgadahat.checkpoint import CheckpointSettingsWarning

    strategy = _train(_strategy("HAT", 0, digits5), digits5, n=1)
    path = tmp_path / "run.ckpt"
    save_checkpoint(strategy, path)
    set_seed(0)
    model = HATMLP(64, (32, 32))
    fresh = HAT(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), train_mb_size=32,
                train_epochs=2, evaluator=quiet(), subnormal_guards="never", fused_step=True)
    with pytest.warns(CheckpointSettingsWarning) as record:
        maybe_load_checkpoint(fresh, path)
    [message] = [str(w.message) for w in record if w.category is CheckpointSettingsWarning]
    assert "fused_step=False (this strategy: True)" in message
    assert "subnormal_guards='cpu' (this strategy: 'never')" in message and "s_max" not in message
    assert fresh.hat_plugin.config.subnormal_guards == "cpu" and fresh.hat_plugin.config.fused_step is False
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointSettingsWarning)  # the same settings: no warning
        maybe_load_checkpoint(_strategy("HAT", 1, digits5), path)


def test_avalanche_save_checkpoint_works_after_prepare_checkpointing(digits5, tmp_path, monkeypatch):
    """``prepare_checkpointing()`` repairs torch.optim (globally) so Avalanche's own function
    pickles optimizers; the package import does not (``tests/test_import_side_effects.py``).
    The global repair is undone after this test."""
    from avalanche.checkpointing import maybe_load_checkpoint as av_load
    from avalanche.checkpointing import save_checkpoint as av_save

    import dill

    from avalanche_fgadahat import checkpoint

    monkeypatch.setattr(checkpoint, "_prepared", checkpoint._prepared)  # restored afterwards
    prepared = checkpoint.prepare_checkpointing()
    try:
        assert not dill.settings["byref"]  # dill's global settings are left alone
        strategy = _train(_strategy("AdaHAT", 0, digits5), digits5, n=1)
        av_save(strategy, str(tmp_path / "av.ckpt"))
        fresh, start = av_load(_strategy("AdaHAT", 1, digits5), str(tmp_path / "av.ckpt"))
        assert start == 1 and fresh.model.trained_tasks() == [0]
    finally:
        for name in prepared:
            delattr(torch.optim, name.rpartition(".")[2])


def test_plugin_state_from_an_earlier_version_loads_and_trains(digits5):
    """A checkpoint written by an earlier version (each setting its own attribute, the rate
    entries as private fields, ``layer_sparsity`` a plain attribute, no per-step caches; the
    model holding its per-step state as six attributes) unpickles through ``__setstate__``
    and trains the next task."""
    strategy = _train(_strategy("FGAdaHAT", 0, digits5), digits5, n=1)
    plugin = strategy.hat_plugin
    old_state = {k: v for k, v in plugin.__dict__.items()
                 if k not in ("config", "rule", "engine", "signals", "accumulator")}
    old_state.update(plugin.config.settings(), adjustment_mode="fgadahat", epsilon=plugin.epsilon,
                     alpha=plugin.alpha, summing_parameter=None, task_position=plugin.rule.task_position,
                     layer_sparsity=plugin.layer_sparsity, _entries=plugin.engine.entries,
                     _constant_rates=None, _constant_capacity=None, _step_capacity=None)
    revived = type(plugin).__new__(type(plugin))
    revived.__setstate__(old_state)
    assert revived.config == plugin.config and revived.rule.task_position == plugin.rule.task_position
    assert revived.layer_sparsity.keys() == plugin.layer_sparsity.keys()
    assert revived.network_capacity() == plugin.network_capacity()
    old_model = dict(strategy.model.__dict__, gate_scale=None, current_train_task=None, record_activations=False,
                     last_masks={}, last_mask_flat=None, last_activations={})
    del old_model["training_step"]
    strategy.model.__setstate__(old_model)
    assert strategy.model.training_step is None and "gate_scale" not in strategy.model.__dict__
    strategy.plugins[strategy.plugins.index(plugin)] = revived
    assert strategy.hat_plugin is revived
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        strategy.train(digits5.train_stream[1])
    assert strategy.model.trained_tasks() == [0, 1]
    assert (revived.engine.groups or revived.engine.separable) and revived.config == plugin.config  # prepared anew


def test_per_task_batchnorm_pickled_by_an_earlier_version_loads_and_grows():
    """A ``PerTaskBatchNorm2d`` from an earlier checkpoint has no ``_template`` (it built each
    task's BatchNorm afresh): it unpickles and still creates a fresh BatchNorm for a new task."""
    from avalanche_fgadahat.models.resnet import PerTaskBatchNorm2d

    module = PerTaskBatchNorm2d(4)
    module.ensure_tasks_([0])
    with torch.no_grad():
        module.norms["0"].weight.fill_(3.0)
    state = dict(module.__dict__)
    del state["_template"]
    old = PerTaskBatchNorm2d.__new__(PerTaskBatchNorm2d)
    old.__setstate__(state)
    old.ensure_tasks_([1])
    assert sorted(old.norms) == ["0", "1"] and old.norms["1"] is not old.norms["0"]
    assert torch.equal(old.norms["1"].weight, torch.ones(4)) and torch.equal(old.norms["0"].weight, torch.full((4,), 3.0))


def test_a_plain_network_with_a_hat_plugin_resumes_from_its_checkpoint(digits5, tmp_path):
    """``Naive(plain network, plugins=[HATPlugin()])``: the fresh strategy's network is converted
    only at its first ``train()``; the checkpoint check compares its conversion."""
    from avalanche.models import SimpleMLP
    from avalanche.training import Naive

    from avalanche_fgadahat import HATPlugin

    def build():
        set_seed(0)
        network = SimpleMLP(num_classes=2, input_size=64, hidden_size=16)
        return Naive(model=network, optimizer=torch.optim.Adam(network.parameters(), lr=1e-2), train_mb_size=32,
                     evaluator=quiet(), device="cpu", plugins=[HATPlugin()])

    strategy = build()
    strategy.train(digits5.train_stream[0])
    save_checkpoint(strategy, tmp_path / "run.ckpt")
    resumed, start = maybe_load_checkpoint(build(), tmp_path / "run.ckpt")
    assert start == 1 and resumed.model.trained_tasks() == [0]
    resumed.train(digits5.train_stream[1])
    assert resumed.model.trained_tasks() == [0, 1]

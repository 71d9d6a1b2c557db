"""Behave like an Avalanche strategy everywhere (issue: robustness).

Each test reproduces a failure a user met (docs/bad_input.md, docs/reliability.md) and
checks the documented behaviour: Avalanche features that evaluate before training, the
legacy positional form, wrappers, checkpoints from callbacks, two HAT-family plugins, late
CLI validation, strategies and plugins that mix tasks, and the untrained-head note. The
forward contract every backbone keeps (tensor and zero-dimensional task labels, mixed-task
batches padded to the widest head, deep copies during training) is checked per backbone
in ``backbone_conformance.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from avalanche.benchmarks import tensors_benchmark
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training import Cumulative, JointTraining, Naive
from avalanche.training.plugins import EarlyStoppingPlugin, LRSchedulerPlugin, ReplayPlugin
from avalanche.training.templates.base import PositionalArgumentsDeprecatedWarning
from hat_test_support import RecordStarts, quiet, same_state, snapshot_state

from avalanche_fgadahat import HAT, AdaHAT, AdaHATPlugin, FGAdaHAT, FGAdaHATPlugin, HATPlugin, set_seed
from avalanche_fgadahat.checkpoint import maybe_load_checkpoint, save_checkpoint
from avalanche_fgadahat.models import HATMLP
from avalanche_fgadahat.plugins.hat import ExperiencePhase

pytestmark = [
    pytest.mark.filterwarnings("ignore:No loggers specified"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::avalanche.training.templates.base.PositionalArgumentsDeprecatedWarning"),
]


def _three_class_benchmark():
    """The issue's smallest case: a 3-class ``tensors_benchmark`` of two tasks."""
    generator = torch.Generator().manual_seed(0)

    def data(n):
        return torch.randn(n, 6, generator=generator), torch.arange(n) % 3

    return tensors_benchmark(train_tensors=[data(30), data(30)], test_tensors=[data(12), data(12)], task_labels=[0, 1])


BUILDERS = {
    "HAT": lambda model, optimizer, plugins=(), **kw: HAT(model=model, optimizer=optimizer, plugins=list(plugins), **kw),
    "AdaHAT": lambda model, optimizer, plugins=(), **kw: AdaHAT(model=model, optimizer=optimizer, plugins=list(plugins), **kw),
    "FGAdaHAT": lambda model, optimizer, plugins=(), **kw: FGAdaHAT(model=model, optimizer=optimizer, plugins=list(plugins), **kw),
    "Naive+HATPlugin": lambda model, optimizer, plugins=(), **kw: Naive(
        model=model, optimizer=optimizer, plugins=[HATPlugin(), *plugins], **kw
    ),
}


# ---------------------------------------------------------------- 1. evaluation before training
def test_smallest_case_eval_every_0_trains_both_tasks():
    bench = _three_class_benchmark()
    model = HATMLP(6, (10,))
    strategy = HAT(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), eval_every=0,
                   evaluator=quiet())
    stale = model.classifier.classifiers["0"].classifier.weight  # replaced by the initial eval's growth
    strategy.train(bench.train_stream[0], eval_streams=[bench.test_stream])
    assert model.classifier.classifiers["0"].classifier.weight is not stale
    strategy.train(bench.train_stream[1], eval_streams=[bench.test_stream])
    assert model.trained_tasks() == [0, 1]
    # the new head weight is optimised; the stale one stays in the optimizer, untouched, as in Naive
    held = {id(p) for group in strategy.optimizer.param_groups for p in group["params"]}
    assert id(model.classifier.classifiers["0"].classifier.weight) in held and id(stale) in held


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("trigger", ["eval_every=0", "eval_every=1", "eval_first", "shared_head", "early_stopping"])
def test_evaluation_before_training_does_not_break_the_next_train(digits2, name, trigger, request):
    if trigger == "shared_head":  # global class ids: the one head grows from 5 to 10 classes
        digits2 = request.getfixturevalue("digits2_global_ids")
    set_seed(0)
    model = HATMLP(64, (32,), multihead=trigger != "shared_head")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    kwargs = dict(train_mb_size=32, train_epochs=2, evaluator=quiet(accuracy_metrics(experience=True)))
    plugins = []
    if trigger.startswith("eval_every"):
        kwargs["eval_every"] = int(trigger[-1])
    if trigger == "early_stopping":  # a validation stream evaluated before and during training
        plugins = [EarlyStoppingPlugin(patience=5, val_stream_name="test"),
                   LRSchedulerPlugin(torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer),
                                     metric="val_loss", step_granularity="epoch")]
        kwargs["eval_every"] = 1
    strategy = BUILDERS[name](model, optimizer, plugins, **kwargs)
    if trigger in ("eval_first", "shared_head"):
        strategy.eval(digits2.test_stream)  # forward-transfer metrics need this
    for experience in digits2.train_stream:
        strategy.train(experience, eval_streams=[digits2.test_stream])
        if trigger == "shared_head":
            strategy.eval(digits2.test_stream)  # grows the one shared head to all classes
    assert model.trained_tasks() == [0, 1]
    results = strategy.eval(digits2.test_stream)
    accuracies = [v for k, v in results.items() if k.startswith("Top1_Acc_Exp/eval_phase/test_stream")]
    assert len(accuracies) == 2
    if trigger == "shared_head":  # one head over ten classes: only the last task is sure to hold
        assert accuracies[-1] > 0.5
    else:
        assert min(accuracies) > 0.5  # five classes each: chance is 0.2


def test_optimizer_of_another_model_is_still_refused_before_anything_changes(digits2):
    model = HATMLP(64, (16,))
    strategy = HAT(model=model, optimizer=torch.optim.SGD(HATMLP(64, (16,)).parameters(), lr=0.1),
                   evaluator=quiet())
    before = snapshot_state(model)
    with pytest.raises(ValueError, match="only parameters that are not the model's"):
        strategy.train(digits2.train_stream[0])
    assert same_state(before, model)


# ---------------------------------------------------------------- 2. Avalanche's positional form
@pytest.mark.parametrize("cls", [HAT, AdaHAT, FGAdaHAT])
def test_positional_model_optimizer_criterion_mean_what_they_mean_for_naive(cls, digits2):
    model = HATMLP(64, (16,))
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    with pytest.warns(PositionalArgumentsDeprecatedWarning):
        strategy = cls(model, torch.optim.SGD(model.parameters(), lr=0.1), criterion, 7, 2,
                       evaluator=quiet())
    assert strategy._criterion is criterion
    assert (strategy.train_mb_size, strategy.train_epochs, strategy.eval_mb_size) == (7, 2, 7)
    assert strategy.hat_plugin.adjustment_mode == cls(model=model, optimizer=strategy.optimizer).hat_plugin.adjustment_mode


# ---------------------------------------------------------------- 3. tensor task labels
# (per backbone: backbone_conformance.py, forward contract)


# ---------------------------------------------------------------- 4. DataParallel
def test_dataparallel_is_refused_at_construction_with_the_reason():
    wrapped = torch.nn.DataParallel(HATMLP(6, (10,)))
    with pytest.raises(TypeError, match="DataParallel wrapping a HATMLP.*without task labels.*device="):
        HAT(model=wrapped, optimizer=torch.optim.SGD(wrapped.parameters(), lr=0.1))


def test_dataparallel_in_a_plain_template_is_refused_before_anything_trains(digits2):
    inner = HATMLP(64, (16,))
    wrapped = torch.nn.DataParallel(inner)
    strategy = Naive(model=wrapped, optimizer=torch.optim.SGD(wrapped.parameters(), lr=0.1),
                     plugins=[HATPlugin()], evaluator=quiet())
    before = snapshot_state(inner)
    with pytest.raises(TypeError, match="DataParallel wrapping a HATMLP"):
        strategy.train(digits2.train_stream[0])
    assert same_state(before, inner)


# ---------------------------------------------------------------- 5. checkpoint from after_training_exp
class _SaveAfterExperience(SupervisedPlugin):
    def __init__(self, path, use_avalanche: bool = False) -> None:
        super().__init__()
        self.path, self.use_avalanche = path, use_avalanche

    def after_training_exp(self, strategy, **kwargs):
        if self.use_avalanche:
            import dill
            from avalanche.checkpointing import save_checkpoint as avalanche_save

            byref = dill.settings["byref"]
            dill.settings["byref"] = True
            try:
                avalanche_save(strategy, str(self.path))
            finally:
                dill.settings["byref"] = byref
        else:
            save_checkpoint(strategy, self.path)


def test_save_from_after_training_exp_is_refused_and_the_task_kept(digits2, tmp_path):
    path = tmp_path / "exp.ckpt"
    model = HATMLP(64, (16,))
    strategy = HAT(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                   plugins=[_SaveAfterExperience(path)], evaluator=quiet())
    with pytest.raises(ValueError, match="after_training_exp callback.*clock.*after strategy.train"):
        strategy.train(digits2.train_stream[0])
    assert not path.exists()
    # the task was stored before the user's callback raised; the model stays usable
    assert model.trained_tasks() == [0]
    strategy.plugins = [p for p in strategy.plugins if not isinstance(p, _SaveAfterExperience)]
    with pytest.warns(RuntimeWarning, match=r"after task 0's mask was stored.*did not\s+count that experience"):
        strategy.train(digits2.train_stream[1])  # the clock's miss is said, not silently reset
    save_checkpoint(strategy, path)  # between experiences: allowed
    assert path.exists() and strategy.hat_plugin.phase is ExperiencePhase.IDLE


def test_save_from_an_after_training_callback_is_consistent(digits2, tmp_path):
    path = tmp_path / "after_training.ckpt"

    class SaveAfterTraining(SupervisedPlugin):
        def after_training(self, strategy, **kwargs):
            save_checkpoint(strategy, path)

    set_seed(0)
    model = HATMLP(64, (16,))
    strategy = HAT(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                   plugins=[SaveAfterTraining()], evaluator=quiet())
    strategy.train(digits2.train_stream[0])
    fresh = HAT(model=HATMLP(64, (16,)), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), evaluator=quiet())
    fresh, start = maybe_load_checkpoint(fresh, path)
    assert start == 1 and fresh.model.trained_tasks() == [0]


def test_inconsistent_checkpoint_written_by_avalanche_is_detected(digits2, tmp_path):
    path = tmp_path / "avalanche.ckpt"
    model = HATMLP(64, (16,))
    strategy = HAT(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                   plugins=[_SaveAfterExperience(path, use_avalanche=True)], evaluator=quiet())
    strategy.train(digits2.train_stream[0])
    assert path.exists()
    fresh_model = HATMLP(64, (16,))
    fresh = HAT(model=fresh_model, optimizer=torch.optim.SGD(fresh_model.parameters(), lr=0.1), evaluator=quiet())
    before = snapshot_state(fresh_model)
    with pytest.raises(ValueError, match="inconsistent.*after_training_exp.*delete it"):
        maybe_load_checkpoint(fresh, path)
    assert fresh.model is fresh_model and same_state(before, fresh_model)


# ---------------------------------------------------------------- 6. two HAT-family plugins
@pytest.mark.parametrize("cls, extra", [(HAT, AdaHATPlugin), (AdaHAT, HATPlugin), (FGAdaHAT, FGAdaHATPlugin)])
def test_second_hat_family_plugin_is_refused_at_construction(cls, extra):
    model = HATMLP(6, (10,))
    with pytest.raises(ValueError, match=f"plugins= holds {extra.__name__}.*use exactly one"):
        cls(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), plugins=[extra()])


def test_two_plugins_on_a_plain_template_are_refused_before_anything_trains(digits2):
    model = HATMLP(64, (16,))
    iterations = []

    class Count(SupervisedPlugin):
        def before_training_iteration(self, strategy, **kwargs):
            iterations.append(1)

    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                     plugins=[HATPlugin(), AdaHATPlugin(), Count()], evaluator=quiet())
    before = snapshot_state(model)
    with pytest.raises(ValueError, match=r"holds 2 HAT-family plugins \(HATPlugin, AdaHATPlugin\)"):
        strategy.train(digits2.train_stream[0])
    assert not iterations and same_state(before, model) and model.trained_tasks() == []


# ---------------------------------------------------------------- 7. CLI validates every strategy first
def test_cli_refuses_a_bad_strategy_setting_before_the_first_run(tmp_path, capsys):
    from avalanche_fgadahat.experiments.__main__ import main

    out = tmp_path / "sweep"
    code = main(["--benchmark", "digits", "--strategies", "hat", "packnet", "--epochs", "1",
                 "--hidden-sizes", "8", "--out", str(out), "--quiet"])
    assert code == 2
    assert "strategy packnet: packnet needs 1 <= post_prune_epochs < epochs" in capsys.readouterr().err
    assert not out.exists()  # hat was neither trained nor saved


# ---------------------------------------------------------------- 8. strategies and plugins that mix tasks
def _mixers():
    from avalanche.training import DER, ER_ACE, MER, GDumb, GSS_greedy
    from avalanche.training.plugins import AGEMPlugin, FromScratchTrainingPlugin, GDumbPlugin, GEMPlugin, MIRPlugin

    return {
        "Cumulative": (lambda **kw: Cumulative(plugins=[HATPlugin()], **kw), "Cumulative"),
        "JointTraining": (lambda **kw: JointTraining(plugins=[HATPlugin()], **kw), "JointTraining"),
        "DER": (lambda **kw: DER(mem_size=50, plugins=[HATPlugin()], **kw), "DER"),
        "ER_ACE": (lambda **kw: ER_ACE(mem_size=50, plugins=[HATPlugin()], **kw), "ER_ACE"),
        "GDumb": (lambda **kw: GDumb(mem_size=50, plugins=[HATPlugin()], **kw), "GDumbPlugin"),
        "Naive+ReplayPlugin": (lambda **kw: Naive(plugins=[HATPlugin(), ReplayPlugin(mem_size=50)], **kw), "ReplayPlugin"),
        "Naive+GDumbPlugin": (lambda **kw: Naive(plugins=[GDumbPlugin(mem_size=50), HATPlugin()], **kw), "GDumbPlugin"),
        "Naive+AGEMPlugin": (lambda **kw: Naive(plugins=[HATPlugin(), AGEMPlugin(10, 10)], **kw), "AGEMPlugin"),
        "Naive+GEMPlugin": (lambda **kw: Naive(plugins=[HATPlugin(), GEMPlugin(10, 0.5)], **kw), "GEMPlugin"),
        "Naive+MIRPlugin": (lambda **kw: Naive(plugins=[HATPlugin(), MIRPlugin(batch_size_mem=10, mem_size=50, subsample=10)], **kw),
                            "MIRPlugin"),
        "Naive+FromScratchTrainingPlugin": (
            lambda **kw: Naive(plugins=[HATPlugin(), FromScratchTrainingPlugin()], **kw), "FromScratchTrainingPlugin"),
        "MER": (lambda **kw: MER(plugins=[HATPlugin()], **kw), "MER"),
        "GSS_greedy": (lambda **kw: GSS_greedy(input_size=[64], mem_size=50, plugins=[HATPlugin()], **kw), "GSS_greedy"),
    }


@pytest.mark.parametrize("name", ["Cumulative", "JointTraining", "DER", "ER_ACE", "GDumb", "Naive+ReplayPlugin",
                                  "Naive+GDumbPlugin", "Naive+AGEMPlugin", "Naive+GEMPlugin", "Naive+MIRPlugin",
                                  "Naive+FromScratchTrainingPlugin", "MER", "GSS_greedy"])
def test_task_mixing_strategies_and_plugins_are_refused_before_anything_trains(digits5, name):
    build, named = _mixers()[name]
    model = HATMLP(64, (16,))
    strategy = build(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
                     criterion=torch.nn.CrossEntropyLoss(), train_mb_size=32, evaluator=quiet())
    before = snapshot_state(model)
    with pytest.raises(ValueError, match=rf"cannot train with {named} \(.*without replay"):
        strategy.train(digits5.train_stream if name == "JointTraining" else digits5.train_stream[0])
    assert strategy.model is model and same_state(before, model)
    assert model.current_train_task is None and model.trained_tasks() == []


@pytest.mark.parametrize("plugin", ["ReplayPlugin", "AGEMPlugin"])
def test_hat_strategies_refuse_a_task_mixing_plugin_at_construction(plugin):
    from avalanche.training.plugins import AGEMPlugin

    extra = ReplayPlugin(mem_size=50) if plugin == "ReplayPlugin" else AGEMPlugin(10, 10)
    model = HATMLP(6, (10,))
    with pytest.raises(ValueError, match=f"cannot train with {plugin}"):
        HAT(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), plugins=[extra])


class _MyCumulative(Naive):
    """A user's own strategy that concatenates earlier data (unknown to the package's list)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = None

    def train_dataset_adaptation(self, **kwargs):
        super().train_dataset_adaptation(**kwargs)
        current = self.adapted_dataset
        self.adapted_dataset = current if self.seen is None else self.seen.concat(current)
        self.seen = current if self.seen is None else self.seen.concat(current)


def test_unknown_strategy_mixing_tasks_is_refused_before_model_adaptation(digits5):
    set_seed(0)
    model = HATMLP(64, (16,))
    strategy = _MyCumulative(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
                             plugins=[HATPlugin()], train_mb_size=64, evaluator=quiet())
    strategy.train(digits5.train_stream[0])  # one task: nothing mixed yet
    before = snapshot_state(model)
    heads = list(model.classifier.classifiers)
    with pytest.raises(ValueError, match=r"task 1's experience holds task labels \[0, 1\].*mixes other tasks"):
        strategy.train(digits5.train_stream[1])
    assert same_state(before, model) and list(model.classifier.classifiers) == heads
    assert model.current_train_task is None and model.trained_tasks() == [0]


class _ReplayLike(SupervisedPlugin):
    """A user's own replay plugin (unknown to the package's list): one old-task sample per batch."""

    def before_forward(self, strategy, **kwargs):
        if strategy.clock.train_exp_counter > 0:
            labels = strategy.mbatch[-1].clone()
            labels[0] = 0
            strategy.mbatch[-1] = labels


class _InPlaceRelabel(SupervisedPlugin):
    """Writes another task's label into the mini-batch's own label tensor (no new tensor), through
    ``.data`` (a write torch's version counter does not see)."""

    def before_forward(self, strategy, **kwargs):
        if strategy.clock.train_exp_counter > 0:
            strategy.mbatch[-1].data[0] = 0


def test_labels_changed_in_place_after_the_plugin_checked_them_are_still_refused(digits5):
    """A plugin after the HAT plugin writes another task's label into the label tensor the plugin
    already checked: the model's forward compares the labels itself every step, so the batch is
    refused and the experience rolled back (a forward that trusted the plugin's check, even keyed
    on the tensor's version counter, misses writes through ``.data`` or a numpy alias)."""
    set_seed(0)
    model = HATMLP(64, (16,))
    strategy = HAT(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
                   plugins=[_InPlaceRelabel()], train_mb_size=32, evaluator=quiet())
    strategy.train(digits5.train_stream[0])
    recorder = RecordStarts()
    strategy.plugins.insert(0, recorder)
    with pytest.raises(ValueError, match=r"found \[0, 1\] at iteration 0.*mixes other tasks.*rolled back"):
        strategy.train(digits5.train_stream[1])
    assert same_state(recorder.starts[0], model) and model.trained_tasks() == [0]


@pytest.mark.parametrize("template", ["HAT", "Naive+HATPlugin"])
def test_unknown_replay_is_refused_at_its_first_batch_and_the_model_left_as_it_was(digits5, template):
    set_seed(0)
    model = HATMLP(64, (16,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    kwargs = dict(train_mb_size=32, evaluator=quiet())
    if template == "HAT":
        strategy = HAT(model=model, optimizer=optimizer, plugins=[_ReplayLike()], **kwargs)
    else:  # the replay plugin runs before the HAT-family plugin's check
        strategy = Naive(model=model, optimizer=optimizer, plugins=[_ReplayLike(), HATPlugin()], **kwargs)
    strategy.train(digits5.train_stream[0])
    recorder = RecordStarts()
    strategy.plugins.insert(0, recorder)
    starts = recorder.starts
    with pytest.raises(ValueError, match=r"found \[0, 1\] at iteration 0.*mixes other tasks.*rolled back"):
        strategy.train(digits5.train_stream[1])
    assert same_state(starts[0], model)
    assert model.current_train_task is None and model.training_step is None and model.trained_tasks() == [0]
    plugin = next(p for p in strategy.plugins if isinstance(p, HATPlugin))
    assert plugin.phase is ExperiencePhase.ROLLED_BACK and plugin.phase.consistent


def test_plain_template_rolls_back_an_error_raised_outside_the_plugin_at_the_next_train(digits5):
    set_seed(0)
    model = HATMLP(64, (16,))

    class Boom(SupervisedPlugin):
        armed = False

        def after_forward(self, strategy, **kwargs):
            if self.armed and strategy.clock.train_epoch_iterations == 2:
                raise RuntimeError("user code failed")

    boom = Boom()
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                     plugins=[HATPlugin(), boom], train_mb_size=32, evaluator=quiet())
    strategy.train(digits5.train_stream[0])
    recorder = RecordStarts()
    strategy.plugins.insert(0, recorder)
    starts = recorder.starts
    boom.armed = True
    with pytest.raises(RuntimeError, match="user code failed"):
        strategy.train(digits5.train_stream[1])
    assert model.current_train_task == 1  # a plain template has no hook on errors
    boom.armed = False
    with pytest.warns(RuntimeWarning, match="rolled back"):
        strategy.train(digits5.train_stream[1])
    assert model.trained_tasks() == [0, 1]
    # the second attempt started from the state the first one started from
    assert len(starts) == 2 and all(torch.equal(starts[0][k], starts[1][k]) for k in starts[0])


# ---------------------------------------------------------------- 9. an untrained head is not chance level
def test_untrained_head_with_class_ids_not_from_zero_is_not_chance_level(digits5_global_ids):
    """docs: a never-trained task is evaluated through Avalanche's untrained head, grown to
    the task's largest class id; its predictions fall outside the task's classes."""
    bench = digits5_global_ids
    set_seed(0)
    model = HATMLP(64, (16,))
    strategy = HAT(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), train_mb_size=64,
                   evaluator=quiet(accuracy_metrics(experience=True)))
    strategy.train(bench.train_stream[0])
    predictions = []

    class Spy(SupervisedPlugin):
        def after_eval_forward(self, strategy, **kwargs):
            predictions.append(strategy.mb_output.argmax(1))

    strategy.plugins.append(Spy())
    results = strategy.eval(bench.test_stream[4:5])  # task 4 (classes 8, 9) was never trained
    predicted = torch.cat(predictions)
    outside = float((predicted < 8).float().mean())
    accuracy = results["Top1_Acc_Exp/eval_phase/test_stream/Task004/Exp004"]
    assert outside > 0.5 and accuracy < 0.5 - 1e-9 or math.isclose(accuracy, 0.0)


# ---------------------------------------------------------------- found by trying to break the above
def test_an_error_in_another_plugins_before_training_exp_is_rolled_back_at_once(digits5, tmp_path):
    class SaveTooEarly(SupervisedPlugin):
        def before_training_exp(self, strategy, **kwargs):
            save_checkpoint(strategy, tmp_path / "early.ckpt")

    model = HATMLP(64, (16,))
    strategy = HAT(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), train_mb_size=64,
                   evaluator=quiet())
    strategy.train(digits5.train_stream[0])
    recorder = RecordStarts()
    strategy.plugins[0:0] = [recorder]
    strategy.plugins.append(SaveTooEarly())
    with pytest.raises(ValueError, match="while an experience is being trained"):
        strategy.train(digits5.train_stream[1])
    assert same_state(recorder.starts[0], model) and model.current_train_task is None
    assert strategy.hat_plugin.phase is ExperiencePhase.ROLLED_BACK and strategy.hat_plugin.phase.consistent


def test_torch_compile_wrapper_is_refused_with_the_reason():
    model = HATMLP(6, (10,))
    with pytest.raises(TypeError, match="OptimizedModule wrapping a HATMLP.*without task labels"):
        HAT(model=torch.compile(model), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_dataparallel_is_refused_before_an_evaluation_too(digits5):
    inner = HATMLP(64, (16,))
    strategy = Naive(model=torch.nn.DataParallel(inner), optimizer=torch.optim.SGD(inner.parameters(), lr=0.1),
                     plugins=[HATPlugin()], evaluator=quiet())
    with pytest.raises(TypeError, match="DataParallel wrapping a HATMLP"):
        strategy.eval(digits5.test_stream[:1])


@pytest.mark.parametrize("override, message", [
    ("ewc.ewc_lambda=abc", "ewc.ewc_lambda must be a number, got 'abc'"),
    ("ewc.mode=bogus", "ewc.mode='bogus' is not supported; accepted values are: 'separate'"),
    ("ewc.mode=online", "ewc.mode='online' is not supported"),
    ("packnet.prune_proportion=[0.5]", "holds 1 values; give one per experience"),
    ("fgadahat.importance_type=input_weight_abs_sum", "would change which algorithm"),
    ("hat.adjustment_mode=hat_const_1", "would change which algorithm"),
    ("lwf.temperature=-1", "lwf.temperature must be > 0.0, got -1"),
    ("si.si_lambda=-5", "si.si_lambda must be >= 0.0, got -5"),
    ("mas.alpha=7", "mas.alpha must be <= 1.0, got 7"),
    ("packnet.prune_proportion=1.5", "packnet.prune_proportion=1.5: every value must be in \\[0, 1\\]"),
])
def test_cli_refuses_a_bad_baseline_setting_before_the_first_run(tmp_path, capsys, override, message):
    from avalanche_fgadahat.experiments.__main__ import main

    strategy = override.split(".")[0]
    strategies = {"hat": ["hat"], "fgadahat": ["hat", "fgadahat:icu"]}.get(strategy, ["hat", strategy])
    out = tmp_path / "sweep"
    args = ["--benchmark", "digits", "--strategies", *strategies, "--set", override, "--epochs", "2",
            "--n-experiences", "2", "--hidden-sizes", "8", "--out", str(out), "--quiet"]
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse's parser.error
        code = exit_.code
    assert code == 2
    assert __import__("re").search(message, capsys.readouterr().err)
    assert not out.exists()


def test_harmless_plugins_are_not_refused(digits5):
    """Regularisation and scheduling plugins combine with HAT (no false refusal)."""
    from avalanche.training.plugins import EWCPlugin, LwFPlugin, MASPlugin, SynapticIntelligencePlugin

    for extra in (EWCPlugin(ewc_lambda=1.0), LwFPlugin(), SynapticIntelligencePlugin(si_lambda=1.0), MASPlugin()):
        model = HATMLP(64, (16,))
        strategy = HAT(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), train_mb_size=64,
                       plugins=[extra], evaluator=quiet())
        for experience in digits5.train_stream[:2]:
            strategy.train(experience)
        assert model.trained_tasks() == [0, 1], type(extra).__name__


def test_a_plugin_that_puts_the_model_in_eval_mode_during_training_gets_a_clear_error(digits5):
    class EvalDuringTraining(SupervisedPlugin):
        def before_forward(self, strategy, **kwargs):
            strategy.model.eval()

    model = HATMLP(64, (16,))
    strategy = HAT(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), train_mb_size=64,
                   plugins=[EvalDuringTraining()], evaluator=quiet())
    with pytest.raises(RuntimeError, match="did not use task 0's soft mask.*model.eval\\(\\) during training"):
        strategy.train(digits5.train_stream[0])
    assert model.current_train_task is None and model.trained_tasks() == []

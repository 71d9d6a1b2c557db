"""One test per row of docs/bad_input.md: each bad input gets an error naming the problem
and its fix, and leaves the strategy's state as it was (and usable)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.supervised import Naive
from hat_test_support import Poison, RecordStarts, assert_same_state, quiet, snapshot_state
from torch import nn

from avalanche_fgadahat import HAT, AdaHAT, FGAdaHAT, HATPlugin, set_seed
from avalanche_fgadahat.checkpoint import maybe_load_checkpoint, save_checkpoint
from avalanche_fgadahat.data import split_digits
from avalanche_fgadahat.masking.layout import ParamLayout
from avalanche_fgadahat.models import HATMLP
from avalanche_fgadahat.models.base import HATBackbone

pytestmark = [
    pytest.mark.filterwarnings("ignore:No loggers specified"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


def _hat(model=None, optimizer=None, cls=HAT, **kwargs):
    model = model if model is not None else HATMLP(64, (32, 32))
    optimizer = optimizer if optimizer is not None else torch.optim.SGD(model.parameters(), lr=0.1)
    return cls(model=model, optimizer=optimizer, train_mb_size=32, train_epochs=1, evaluator=quiet(), **kwargs)


def _trained(bench, n: int = 1, **kwargs):
    set_seed(0)
    strategy = _hat(**kwargs)
    for exp in bench.train_stream[:n]:
        strategy.train(exp)
    strategy.eval(bench.test_stream)  # creates every head, as a normal run does
    return strategy


# ---------------------------------------------------------------- 1. unknown names
@pytest.mark.parametrize(
    "build, name, accepted",
    [
        (lambda: HATPlugin(adjustment_mode="hta"), "adjustment_mode", "'hat'"),
        (lambda: HATPlugin(mask_sparsity_reg_mode="L1"), "mask_sparsity_reg_mode", "'original'"),
        (lambda: HATPlugin(task_embedding_init_mode="zeros"), "task_embedding_init_mode", "'N01'"),
        (lambda: _hat(cls=AdaHAT, adjustment_mode="ada"), "adjustment_mode", "'adahat'"),
        (lambda: _hat(cls=FGAdaHAT, importance_type="grad"), "importance_type", "input_weight_abs_sum"),
        (lambda: _hat(cls=FGAdaHAT, importance_summing_strategy="sum"), "importance_summing_strategy", "'add_all'"),
        (lambda: _hat(cls=FGAdaHAT, importance_scheduler_type="cosine"), "importance_scheduler_type", "'linear_sparsity_reg'"),
        (lambda: _hat(cls=FGAdaHAT, neuron_to_weight_importance_aggregation_mode="median"),
         "neuron_to_weight_importance_aggregation_mode", "'min'"),
        (lambda: _hat(subnormal_guards="gpu"), "subnormal_guards", "'cpu', 'always', 'never'"),
        (lambda: HATPlugin(subnormal_guards=False), "subnormal_guards", "'always'"),
    ],
)
def test_unknown_name_names_argument_and_accepted_values(build, name, accepted):
    with pytest.raises(ValueError, match=name) as err:
        build()
    assert accepted in str(err.value) and "accepted" in str(err.value)


def test_unknown_keyword_is_refused():
    with pytest.raises(TypeError, match="smax"):
        _hat(smax=400.0)


# ---------------------------------------------------------------- 2. out-of-range numbers
@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: HATPlugin(s_max=0), "s_max must be > 0"),
        (lambda: HATPlugin(s_max=math.nan), "s_max must be finite"),
        (lambda: HATPlugin(clamp_threshold=-1), "clamp_threshold must be > 0"),
        (lambda: HATPlugin(mask_sparsity_reg_factor=-0.1), "mask_sparsity_reg_factor must be >= 0"),
        (lambda: HATPlugin(alpha=1.5), "alpha must be <= 1"),
        (lambda: HATPlugin(embedding_clamp=0), "embedding_clamp must be > 0"),
        (lambda: _hat(cls=AdaHAT, adjustment_intensity=0), "adjustment_intensity must be > 0"),
        (lambda: _hat(cls=AdaHAT, epsilon=-1), "epsilon must be > 0"),
        (lambda: _hat(cls=FGAdaHAT, base_linear=0), "base_linear must be > 0"),
        (lambda: _hat(cls=FGAdaHAT, importance_summing_strategy="log_decrease"), "importance_summing_strategy_log_base"),
        (lambda: HATMLP(64, (32, 0)), r"hidden_sizes\[i\] must be >= 1"),
        (lambda: HATMLP(64, (32,), dropout=1.5), "dropout must be <= 1"),
        (lambda: split_digits(3), "n_experiences must divide 10"),
        (lambda: set_seed(-1), "seed must be >= 0"),
        (lambda: set_seed(2**32), "seed must be <= "),
        (lambda: set_seed(1.5), "seed must be an integer"),
    ],
)
def test_out_of_range_number_names_argument_and_bound(build, name):
    with pytest.raises(ValueError, match=name):
        build()


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: HATPlugin(check_finite_loss="false"), "check_finite_loss must be True or False, got 'false'"),
        (lambda: HATPlugin(fused_step="yes"), "fused_step must be True or False, got 'yes'"),
        (lambda: _hat(cls=AdaHAT, fused_step=1), "fused_step must be True or False, got 1"),
        (lambda: _hat(cls=FGAdaHAT, filter_by_cumulative_mask=None), "filter_by_cumulative_mask must be True or False"),
        (lambda: _hat(cls=FGAdaHAT, step_multiply_training_mask=0), "step_multiply_training_mask must be True or False"),
    ],
)
def test_switch_that_is_not_a_bool_names_argument(build, message):
    with pytest.raises(ValueError, match=message):
        build()


# ---------------------------------------------------------------- 3. model without masked layers
def test_model_that_cannot_be_converted_is_refused_naming_the_layer():
    """A plain network is converted (``to_hat``); one with a layer HAT cannot mask is refused
    before anything is built, naming the layer and the reason."""
    class _Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(64, 8)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.rnn(x)[0])

    with pytest.raises(TypeError, match=r"layer 'rnn' \(LSTM\) cannot be converted to HAT: recurrent layers"):
        _hat(model=_Recurrent())
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 2))
    assert type(_hat(model=plain).model).__name__ == "ConvertedHATModel"


class _WithUnmaskedLayer(HATBackbone):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        self._finish_init([ParamLayout("fc", self.fc, "fc", None)], 3, {"fc": 3})


def test_backbone_with_an_unmasked_parameter_layer_is_refused():
    with pytest.raises(TypeError, match="layer 'norm' \\(LayerNorm\\) has parameters but no HAT mask"):
        _WithUnmaskedLayer()


# ---------------------------------------------------------------- 4. model / optimizer mismatch
def test_optimizer_of_another_model_is_refused_before_anything_changes(digits5):
    strategy = _trained(digits5)
    model = strategy.model
    before, n_params = snapshot_state(model), [len(g["params"]) for g in strategy.optimizer.param_groups]
    strategy.optimizer = torch.optim.SGD(HATMLP(64, (32, 32)).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="not the model's.*model.parameters"):
        strategy.train(digits5.train_stream[1])
    assert_same_state(before, model)
    assert [len(g["params"]) for g in strategy.optimizer.param_groups] == [len(list(HATMLP(64, (32, 32)).parameters()))]
    strategy.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # the fix
    strategy.train(digits5.train_stream[1])
    assert model.trained_tasks() == [0, 1]
    del n_params


# ---------------------------------------------------------------- 5. weight decay on masked parameters
def test_weight_decay_on_masked_parameters_is_refused(digits5):
    model = HATMLP(64, (32, 32))
    before = snapshot_state(model)
    strategy = _hat(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3))  # wd 0.01
    with pytest.raises(ValueError, match="weight_decay=0.01 on masked-layer parameters.*weight_decay=0"):
        strategy.train(digits5.train_stream[0])
    assert_same_state(before, model)  # raised before Avalanche's model adaptation
    assert list(model.classifier.classifiers) == ["0"]
    # the fix the message gives: decay only the heads, in a separate param group
    heads = list(model.classifier.parameters())
    rest = [p for p in model.parameters() if all(p is not h for h in heads)]
    strategy.optimizer = torch.optim.AdamW(
        [{"params": rest, "weight_decay": 0.0}, {"params": heads, "weight_decay": 0.01}], lr=1e-3
    )
    strategy.train(digits5.train_stream[0])
    assert model.trained_tasks() == [0]


# ---------------------------------------------------------------- 6. several task labels
def _two_task_experience(bench):
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels

    data = bench.train_stream[1].dataset.concat(bench.train_stream[2].dataset)
    return with_classes_timeline(with_task_labels(benchmark_from_datasets(train=[data]))).train_stream[0]


def test_experience_with_several_task_labels_is_refused_before_adaptation(digits5):
    experience = _two_task_experience(digits5)
    assert sorted(experience.task_labels) == [1, 2]
    strategy = _trained(digits5)
    before = snapshot_state(strategy.model)
    # Avalanche's MultiHeadClassifier would raise a NotImplementedError suggesting masking=False
    with pytest.raises(ValueError, match=r"task labels \[1, 2\]; HAT trains one task per experience"):
        strategy.train(experience)
    assert_same_state(before, strategy.model)
    strategy.train(digits5.train_stream[1])
    assert strategy.model.trained_tasks() == [0, 1]


def test_training_minibatch_with_several_task_labels_rolls_back(digits5):
    strategy = _trained(digits5)
    recorder = RecordStarts()
    strategy.plugins.insert(0, recorder)
    poison = Poison(iteration=2, what="task_labels")
    strategy.plugins.append(poison)
    with pytest.raises(ValueError, match=r"must all equal the task being trained \(1\); found \[1, 2\]"):
        strategy.train(digits5.train_stream[1])
    assert_same_state(recorder.start, strategy.model)
    assert strategy.model.current_train_task is None and strategy.model.trained_tasks() == [0]
    strategy.plugins.remove(poison)
    strategy.train(digits5.train_stream[1])
    assert strategy.model.trained_tasks() == [0, 1]


def test_experience_without_task_labels_is_refused(digits5):
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets

    experience = benchmark_from_datasets(train=[digits5.train_stream[0].dataset]).train_stream[0]
    strategy = _hat()
    before = snapshot_state(strategy.model)
    with pytest.raises(ValueError, match="no task labels.*return_task_id=True"):
        strategy.train(experience)
    assert_same_state(before, strategy.model)


def test_retraining_a_stored_task_is_refused(digits5):
    strategy = _trained(digits5)
    before = snapshot_state(strategy.model)
    with pytest.raises(ValueError, match="task 0 was already trained.*new task label"):
        strategy.train(digits5.train_stream[0])
    assert_same_state(before, strategy.model)


# ---------------------------------------------------------------- 7. NaN loss
@pytest.mark.parametrize("template", ["HAT", "Naive+HATPlugin"])
def test_nan_loss_rolls_the_experience_back(digits5, template):
    set_seed(0)
    model = HATMLP(64, (32, 32))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    if template == "HAT":
        strategy = HAT(model=model, optimizer=optimizer, train_mb_size=32, evaluator=quiet())
    else:
        strategy = Naive(model=model, optimizer=optimizer, train_mb_size=32, evaluator=quiet(), plugins=[HATPlugin()])
    strategy.train(digits5.train_stream[0])
    strategy.eval(digits5.test_stream)
    before_train = snapshot_state(model)
    recorder = RecordStarts()
    strategy.plugins.insert(0, recorder)
    poison = Poison(iteration=3, what="nan")  # three real steps happen first
    strategy.plugins.append(poison)
    with pytest.raises(FloatingPointError, match=r"training loss is \[nan\].*task 1.*rolled back.*train the experience again"):
        strategy.train(digits5.train_stream[1])
    assert_same_state(recorder.start, model)  # every parameter and buffer
    # versus before train(): only Avalanche's adaptation of the task-1 head mask differs
    assert_same_state(before_train, model, ignore={"classifier.active_units_T1"})
    assert not strategy.optimizer.state and model.current_train_task is None
    assert model.trained_tasks() == [0]
    strategy.plugins.remove(poison)
    strategy.train(digits5.train_stream[1])
    assert model.trained_tasks() == [0, 1]
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ---------------------------------------------------------------- 8. checkpoint of another model
@pytest.fixture(scope="module")
def saved_hat_checkpoint(digits5, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "hat-32x32.ckpt"
    save_checkpoint(_trained(digits5, n=1), path)
    return path


def _load_refused(strategy, path, match, bench):
    model, optimizer, plugins = strategy.model, strategy.optimizer, list(strategy.plugins)
    before, rng = snapshot_state(model), torch.get_rng_state()
    with pytest.raises(ValueError, match=match):
        maybe_load_checkpoint(strategy, path)
    assert strategy.model is model and strategy.optimizer is optimizer and strategy.plugins == plugins
    assert_same_state(before, model)
    assert torch.equal(rng, torch.get_rng_state())  # the checkpoint's RNG state was not applied
    strategy.train(bench.train_stream[1])  # the strategy still works
    assert model.trained_tasks() == [0, 1]


def test_checkpoint_of_another_model_shape_is_refused(digits5, saved_hat_checkpoint):
    strategy = _trained(digits5, model=HATMLP(64, (16, 16)))
    _load_refused(strategy, saved_hat_checkpoint, r"another shape.*fc\.0\.weight is \(32, 64\), here \(16, 64\).*same sizes|sizes it was saved with", digits5)


def test_checkpoint_of_another_algorithm_is_refused(digits5, saved_hat_checkpoint):
    strategy = _trained(digits5, cls=AdaHAT)
    _load_refused(strategy, saved_hat_checkpoint, "saved by a strategy using HATPlugin, this strategy uses AdaHATPlugin", digits5)


def test_file_that_is_not_a_checkpoint_is_refused(digits5, tmp_path):
    path = tmp_path / "garbage.ckpt"
    path.write_bytes(b"not a checkpoint")
    _load_refused(_trained(digits5), path, "is not a checkpoint written by save_checkpoint", digits5)


def test_saving_while_an_experience_trains_is_refused(digits5, tmp_path):
    class SaveMidway(SupervisedPlugin):
        def after_training_iteration(self, strategy, **kwargs):
            save_checkpoint(strategy, tmp_path / "mid.ckpt")

    strategy = _hat(plugins=[SaveMidway()])
    with pytest.raises(ValueError, match="while an experience is being trained.*after strategy.train"):
        strategy.train(digits5.train_stream[0])
    assert not (tmp_path / "mid.ckpt").exists()


def test_state_dict_of_another_shape_loads_nothing(digits5):
    saved = _trained(digits5).model.state_dict()
    model = HATMLP(64, (32, 16))
    before = snapshot_state(model)
    with pytest.raises(ValueError, match=r"fc\.1\.weight is \(32, 32\), here \(16, 32\).*Nothing was loaded"):
        model.load_state_dict(saved)
    assert_same_state(before, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.eval()
        model(torch.zeros(2, 64), 0)  # still usable


def test_the_finite_loss_check_reads_every_element_of_any_loss_shape():
    from avalanche_fgadahat.plugins.checks import is_finite_loss

    assert is_finite_loss(torch.tensor(1.5)) and is_finite_loss(torch.tensor([1.0, 2.0]))
    for bad in (float("nan"), float("inf"), -float("inf")):
        assert not is_finite_loss(torch.tensor(bad))  # a criterion's 0-d loss: one host read
        assert not is_finite_loss(torch.tensor([bad]))  # Avalanche's strategy.loss: (1,)
        assert not is_finite_loss(torch.tensor([0.5, bad]))  # a per-sample loss (reduction="none")

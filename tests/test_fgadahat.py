"""FG-AdaHAT: rate, schedulers, aggregations, summing strategies, accumulation, buffers,
validation and end-to-end training, against hand computations."""

from __future__ import annotations

import inspect
import math
import warnings

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.models.utils import avalanche_model_adaptation
from hat_test_support import commit_signs, quiet

from avalanche_fgadahat import FGAdaHAT, FGAdaHATPlugin
from avalanche_fgadahat.importance import IMPORTANCE_TYPES, IN_PASS_TYPES, StepContext, min_max_normalize
from avalanche_fgadahat.importance.normalize import min_max_normalize_all
from avalanche_fgadahat.models import HATMLP

REFERENCE_ARGUMENTS = [
    "adjustment_intensity",
    "importance_type",
    "importance_summing_strategy",
    "importance_scheduler_type",
    "neuron_to_weight_importance_aggregation_mode",
    "s_max",
    "clamp_threshold",
    "mask_sparsity_reg_factor",
    "mask_sparsity_reg_mode",
    "base_importance",
    "base_mask_sparsity_reg",
    "base_linear",
    "filter_by_cumulative_mask",
    "filter_unmasked_importance",
    "step_multiply_training_mask",
    "task_embedding_init_mode",
    "importance_summing_strategy_linear_step",
    "importance_summing_strategy_exponential_rate",
    "importance_summing_strategy_log_base",
]


# ---------------------------------------------------------------- signature and defaults
def test_constructor_names_and_head_config_defaults():
    params = inspect.signature(FGAdaHAT.__init__).parameters
    names = [n for n in params if n not in ("self", "model", "optimizer")]
    # Avalanche's arguments first, in Naive's order (its legacy positional form maps onto them)
    template = ["criterion", "train_mb_size", "train_epochs", "eval_mb_size", "device", "plugins",
                "evaluator", "eval_every"]
    assert names[: len(template)] == template
    names = names[len(template):]
    assert names[: len(REFERENCE_ARGUMENTS)] == REFERENCE_ARGUMENTS
    plugin_params = inspect.signature(FGAdaHATPlugin).parameters  # (config, *, settings...)
    assert list(plugin_params)[1 : len(REFERENCE_ARGUMENTS) + 1] == REFERENCE_ARGUMENTS
    expected = dict(
        adjustment_intensity=1.5e-7,
        importance_type="input_weight_abs_sum_x_activation_abs",
        importance_summing_strategy="add_all",
        importance_scheduler_type="linear_sparsity_reg",
        neuron_to_weight_importance_aggregation_mode="min",
        s_max=400.0,
        clamp_threshold=50.0,
        mask_sparsity_reg_factor=0.1,
        mask_sparsity_reg_mode="original",
        base_importance=1e-8,
        base_mask_sparsity_reg=0.1,
        base_linear=5.0,
        filter_by_cumulative_mask=False,
        filter_unmasked_importance=False,
        step_multiply_training_mask=True,
        task_embedding_init_mode="N01",
    )
    for name, value in expected.items():
        assert params[name].default == value, name
        assert plugin_params[name].default == value, name
    plugin = FGAdaHATPlugin()
    assert plugin.adjustment_mode == "fgadahat" and plugin.epsilon == 0.1


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"importance_type": "icux"}, r"importance_type='icux'.*'input_weight_abs_sum'.*'cbp_adaptive_contribution'"),
        ({"importance_summing_strategy": "add_some"}, r"importance_summing_strategy.*'add_latest'.*'factorial_decrease'"),
        ({"importance_scheduler_type": "linear"}, r"importance_scheduler_type.*'linear_sparsity_reg'.*'summative_mask_sparsity_reg'"),
        ({"neuron_to_weight_importance_aggregation_mode": "median"}, r"aggregation_mode.*'min'.*'max'.*'mean'"),
        ({"adjustment_intensity": 0.0}, r"adjustment_intensity must be > 0"),
        ({"base_importance": -1e-3}, r"base_importance must be >= 0"),
        ({"base_mask_sparsity_reg": 0.0}, r"base_mask_sparsity_reg must be > 0"),
        ({"base_linear": 0}, r"base_linear must be > 0"),
        ({"filter_unmasked_importance": 1}, r"filter_unmasked_importance must be True or False"),
        ({"step_multiply_training_mask": "yes"}, r"step_multiply_training_mask must be True or False"),
        ({"filter_by_cumulative_mask": None}, r"filter_by_cumulative_mask must be True or False"),
        ({"importance_summing_strategy": "linear_decrease"}, r"needs importance_summing_strategy_linear_step"),
        ({"importance_summing_strategy": "exponential_decrease"}, r"needs importance_summing_strategy_exponential_rate"),
        ({"importance_summing_strategy": "log_decrease"}, r"needs importance_summing_strategy_log_base"),
        (
            {"importance_summing_strategy": "linear_decrease", "importance_summing_strategy_linear_step": 0.0},
            r"importance_summing_strategy_linear_step must be > 0",
        ),
        (
            {"importance_summing_strategy": "exponential_decrease", "importance_summing_strategy_exponential_rate": 1.0},
            r"importance_summing_strategy_exponential_rate must be > 1",
        ),
        (
            {"importance_summing_strategy": "log_decrease", "importance_summing_strategy_log_base": 0.5},
            r"importance_summing_strategy_log_base must be > 1",
        ),
        ({"importance_summing_strategy_log_base": 2.0}, r"only used by importance_summing_strategy='log_decrease'"),
        ({"mask_sparsity_reg_mode": "both"}, r"mask_sparsity_reg_mode"),
        ({"task_embedding_init_mode": "zeros"}, r"task_embedding_init_mode"),
        ({"s_max": -1.0}, r"s_max"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FGAdaHATPlugin(**kwargs)
    model = HATMLP(6, (4,))
    with pytest.raises(ValueError, match=match):
        FGAdaHAT(model=model, optimizer=torch.optim.Adam(model.parameters()), **kwargs)


def test_unknown_importance_type_lists_every_registered_type():
    with pytest.raises(ValueError) as info:
        FGAdaHATPlugin(importance_type="nope")
    for name in IMPORTANCE_TYPES:
        assert repr(name) in str(info.value)


# ---------------------------------------------------------------- min-max normalisation
def test_min_max_normalize_hand_values():
    x = torch.tensor([2.0, 4.0, 3.0, 6.0])
    torch.testing.assert_close(min_max_normalize(x), torch.tensor([0.0, 2.0, 1.0, 4.0]) / (4.0 + 1e-8))
    assert torch.equal(min_max_normalize(torch.full((5,), 3.7)), torch.zeros(5))


# ---------------------------------------------------------------- rate, schedulers, aggregations
AGG = {"min": min, "max": max, "mean": lambda a, b: (a + b) / 2}


def test_min_max_normalize_keeps_any_shape_and_each_dtype():
    matrix = torch.tensor([[1.0, 3.0], [2.0, 5.0]])
    assert torch.equal(min_max_normalize(matrix), torch.tensor([[0.0, 2.0], [1.0, 4.0]]) / (4.0 + 1e-8))
    assert min_max_normalize(torch.tensor(2.0)).shape == ()  # a 0-d tensor: 0
    mixed = min_max_normalize_all([torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0], dtype=torch.float64)])
    assert [m.dtype for m in mixed] == [torch.float32, torch.float64]
    assert torch.equal(mixed[1], min_max_normalize(torch.tensor([1.0, 4.0], dtype=torch.float64)))


def test_min_max_normalize_all_layers_at_once_equals_one_at_a_time():
    torch.manual_seed(0)
    xs = [torch.rand(7) * 5, torch.full((3,), 2.5), torch.randn(1), torch.rand(40) * 1e-9]
    together = min_max_normalize_all(xs)
    assert len(together) == len(xs)
    one_at_a_time = [(x - x.min()) / (x.max() - x.min() + 1e-8) for x in xs]  # the formula, per tensor
    assert all(torch.equal(a, b) for a, b in zip(together, one_at_a_time))
    assert all(torch.equal(min_max_normalize(x), b) for x, b in zip(xs, one_at_a_time))
    assert float(together[0].max()) > 0.99 and torch.equal(together[1], torch.zeros(3))
    assert min_max_normalize_all([]) == []
    # empty tensors among others, and alone (each vector's min and max come from its own row)
    with_empty = [torch.tensor([3.0, 1.0]), torch.empty(0), torch.tensor([7.0]), torch.rand(9) + 4]
    got = min_max_normalize_all(with_empty)
    assert got[1].shape == (0,) and torch.equal(got[2], torch.zeros(1))
    assert all(torch.equal(a, min_max_normalize(x)) for a, x in zip(got, with_empty))
    assert torch.equal(got[3], (with_empty[3] - with_empty[3].min()) / (with_empty[3].max() - with_empty[3].min() + 1e-8))
    assert min_max_normalize(torch.empty(0, 3)).shape == (0, 3)


def test_segment_index_rows_hold_each_vector_and_repeat_its_first_element():
    from avalanche_fgadahat.importance.normalize import segment_index

    gather, segment = segment_index((2, 0, 3), torch.device("cpu"))
    assert gather.tolist() == [[0, 1, 0], [0, 0, 0], [2, 3, 4]]
    assert segment.tolist() == [0, 0, 2, 2, 2]


@pytest.mark.parametrize("scheduler", ["linear_sparsity_reg", "sparsity_reg", "summative_mask_sparsity_reg"])
@pytest.mark.parametrize("aggregation", ["min", "max", "mean"])
@pytest.mark.parametrize("filter_by_cumulative_mask", [False, True])
def test_rates_against_hand_formula_at_third_task(scheduler, aggregation, filter_by_cumulative_mask):
    torch.manual_seed(0)
    model = HATMLP(6, (5, 4))
    masks_a = {"fc0": [1, 0, 1, 0, 0], "fc1": [1, 1, 0, 0]}
    masks_b = {"fc0": [1, 1, 0, 0, 0], "fc1": [0, 1, 0, 0]}
    commit_signs(model, 3, masks_a)
    commit_signs(model, 1, masks_b)
    importance = {"fc0": torch.rand(5) * 2, "fc1": torch.rand(4) * 2}
    for key, state in model.unit_state.items():
        state.summed_importance.copy_(importance[key])
    alpha, b_r, b_l = 0.3, 0.1, 5.0
    plugin = FGAdaHATPlugin(
        adjustment_intensity=alpha,
        importance_scheduler_type=scheduler,
        neuron_to_weight_importance_aggregation_mode=aggregation,
        filter_by_cumulative_mask=filter_by_cumulative_mask,
        base_mask_sparsity_reg=b_r,
        base_linear=b_l,
    )
    plugin.engine.prepare(model)
    assert plugin.rule.task_position == 3
    sparsity = {"fc0": 0.2, "fc1": 0.05}
    plugin.layer_sparsity = {k: torch.tensor(v) for k, v in sparsity.items()}
    for p in model.fc.parameters():
        p.grad = torch.ones_like(p)
    plugin.engine.adjust_(plugin.signals)

    summ = {k: [a + b for a, b in zip(masks_a[k], masks_b[k])] for k in masks_a}
    cum = {k: [max(a, b) for a, b in zip(masks_a[k], masks_b[k])] for k in masks_a}
    imp = {k: v.tolist() for k, v in importance.items()}

    def linear(out_s, in_s):
        if scheduler == "linear_sparsity_reg":
            return 3 + b_l
        if scheduler == "sparsity_reg":
            return 1.0
        return (out_s if in_s is None else min(out_s, in_s)) + b_l

    def rate(key, i, prev, j):
        p = imp[key][i] if prev is None else AGG[aggregation](imp[key][i], imp[prev][j])
        l_term = linear(summ[key][i], None if prev is None else summ[prev][j])
        f = 1.0
        if filter_by_cumulative_mask:
            f = cum[key][i] if prev is None else min(cum[key][i], cum[prev][j])
        return alpha / ((sparsity[key] + b_r) * l_term * p * f + alpha)

    all_rates = []
    for index, (key, prev) in enumerate((("fc0", None), ("fc1", "fc0"))):
        layer = model.fc[index]
        want_w = [
            [rate(key, i, prev, j) for j in range(layer.in_features)] for i in range(layer.out_features)
        ]
        want_b = [rate(key, i, None, None) for i in range(layer.out_features)]
        torch.testing.assert_close(layer.weight.grad, torch.tensor(want_w), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(layer.bias.grad, torch.tensor(want_b), rtol=1e-5, atol=1e-7)
        all_rates += sum(want_w, []) + want_b
    assert plugin.network_capacity() == pytest.approx(sum(all_rates) / len(all_rates), rel=1e-5)
    assert min(all_rates) < 0.9  # the hand rates are not trivially 1


def test_no_importance_means_no_adjustment():
    model = HATMLP(6, (5, 4))
    plugin = FGAdaHATPlugin(adjustment_intensity=1e-7)
    plugin.engine.prepare(model)
    plugin.layer_sparsity = {"fc0": torch.tensor(0.5), "fc1": torch.tensor(0.5)}
    for p in model.fc.parameters():
        p.grad = torch.full_like(p, 2.0)
    plugin.engine.adjust_(plugin.signals)
    assert all(torch.equal(p.grad, torch.full_like(p, 2.0)) for p in model.fc.parameters())


# ---------------------------------------------------------------- summing strategies
LOG2_3 = math.log(3, 2)
SUMMING = [
    ("add_latest", {}, [[1], [1, 1], [1, 1, 1]]),
    ("add_all", {}, [[1], [2, 1], [3, 2, 1]]),
    ("add_average", {}, [[1], [1.5, 0.5], [1.5 + 1 / 3, 0.5 + 1 / 3, 1 / 3]]),
    ("linear_decrease", {"importance_summing_strategy_linear_step": 0.5}, [[1], [1.5, 1], [2, 1.5, 1]]),
    ("quadratic_decrease", {}, [[1], [4, 1], [9, 4, 1]]),
    ("cubic_decrease", {}, [[1], [8, 1], [27, 8, 1]]),
    ("exponential_decrease", {"importance_summing_strategy_exponential_rate": 2.0}, [[2], [4, 2], [8, 4, 2]]),
    ("log_decrease", {"importance_summing_strategy_log_base": 2.0}, [[1], [2, 1], [LOG2_3 + 1, 2, 1]]),
    ("factorial_decrease", {}, [[1], [2, 1], [6, 2, 1]]),
]


@pytest.mark.parametrize("name, kwargs, coefficients", SUMMING, ids=[s[0] for s in SUMMING])
def test_summing_strategy_over_three_tasks_in_training_order(name, kwargs, coefficients):
    """Tasks trained in the order 2, 0, 1: weights follow the training order, not labels."""
    torch.manual_seed(0)
    model = HATMLP(6, (5, 4))
    plugin = FGAdaHATPlugin(importance_summing_strategy=name, base_importance=0.25, **kwargs)
    history = []
    for n, task in enumerate([2, 0, 1], start=1):
        steps = n + 2
        sums = {k: torch.rand(s.num_units) * steps for k, s in model.unit_state.items()}
        for key, state in model.unit_state.items():
            state.importance_step_sum.copy_(sums[key])
        model.importance_steps.fill_(steps)
        history.append({k: v / steps + 0.25 for k, v in sums.items()})
        commit_signs(model, task, {"fc0": [1, 1, 0, 0, 1], "fc1": [0, 1, 1, 0]})
        plugin.accumulator.finalize_(model, task)
        for key, state in model.unit_state.items():
            want = sum(c * h[key] for c, h in zip(coefficients[n - 1], history))
            torch.testing.assert_close(state.summed_importance, want, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(state.task_importances[task], history[-1][key])
            assert torch.equal(state.importance_step_sum, torch.zeros(state.num_units))
        assert int(model.importance_steps) == 0


def test_filter_unmasked_importance_multiplies_by_stored_mask():
    model = HATMLP(6, (5, 4))
    plugin = FGAdaHATPlugin(filter_unmasked_importance=True, base_importance=0.5, importance_summing_strategy="add_latest")
    for state in model.unit_state.values():
        state.importance_step_sum.fill_(3.0)
    model.importance_steps.fill_(2)
    commit_signs(model, 0, {"fc0": [1, 0, 1, 0, 1], "fc1": [0, 0, 1, 1]})
    plugin.accumulator.finalize_(model, 0)
    torch.testing.assert_close(model.unit_state["fc0"].summed_importance, torch.tensor([2.0, 0, 2.0, 0, 2.0]))
    torch.testing.assert_close(model.unit_state["fc1"].task_importances[0], torch.tensor([0, 0, 2.0, 2.0]))


# ---------------------------------------------------------------- accumulation and buffers
def _context(model, task=0, scale=2.0):
    torch.manual_seed(3)
    model.train()
    step = model.begin_training(task, record_activations=True)
    step.gate_scale = scale
    x, y = torch.rand(7, 6), torch.randint(0, 2, (7,))
    torch.nn.functional.cross_entropy(model(x, task), y).backward()
    return StepContext(
        model, task, x, y,
        {k: m for k, m in step.masks.items()},  # not detached: the plugin must detach
        {k: a for k, a in step.activations.items()},
        scale,
    )


@pytest.mark.parametrize("multiply", [True, False])
def test_accumulation_hand_computation_and_no_graph(multiply):
    model = HATMLP(6, (5, 4))
    plugin = FGAdaHATPlugin(importance_type="activation_abs", step_multiply_training_mask=multiply)
    ctx = _context(model)
    assert ctx.masks["fc0"].requires_grad
    for _ in range(3):
        plugin.accumulator.accumulate_(model, ctx)
    assert int(model.importance_steps) == 3
    for key, state in model.unit_state.items():
        u = [float(v) for v in ctx.activations[key].detach().abs().mean(0)]
        low, high = min(u), max(u)
        step = [(v - low) / (high - low + 1e-8) for v in u]
        if multiply:
            step = [s * float(m) for s, m in zip(step, ctx.masks[key].detach())]
        torch.testing.assert_close(state.importance_step_sum, 3 * torch.tensor(step), rtol=1e-5, atol=1e-7)
        assert state.importance_step_sum.grad_fn is None and not state.importance_step_sum.requires_grad


class _Spy(SupervisedPlugin):
    """Runs after FGAdaHAT's plugin: checks buffers every step."""

    def __init__(self):
        super().__init__()
        self.iterations = 0
        self.records = []
        self.shapes = None
        self.steps_at_epoch_end = []

    def before_training_exp(self, strategy, **kwargs):
        self.iterations = 0

    def after_update(self, strategy, **kwargs):
        model = strategy.model
        self.iterations += 1
        shapes = {k: (s.importance_step_sum.shape, s.summed_importance.shape, s.task_importances.shape) for k, s in model.unit_state.items()}
        assert self.shapes in (None, shapes) or self.iterations == 1
        self.shapes = shapes
        for state in model.unit_state.values():
            assert state.importance_step_sum.grad_fn is None and not state.importance_step_sum.requires_grad
        assert int(model.importance_steps) == self.iterations
        step = model.training_step
        self.records.append((step.record_activations, bool(step.activations)))

    def after_training_epoch(self, strategy, **kwargs):
        self.steps_at_epoch_end.append(int(strategy.model.importance_steps))


def _train(bench, importance_type, tasks=2, epochs=1, batch=64, hidden=(16, 8), **kwargs):
    torch.manual_seed(0)
    model = HATMLP(64, hidden)
    spy = _Spy()
    strategy = FGAdaHAT(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
        importance_type=importance_type,
        train_mb_size=batch,
        train_epochs=epochs,
        eval_mb_size=256,
        evaluator=quiet(accuracy_metrics(experience=True)),
        plugins=[spy],
        **kwargs,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for exp in bench.train_stream[:tasks]:
            strategy.train(exp)
        results = strategy.eval(bench.test_stream[:tasks])
    return model, strategy, spy, results


@pytest.mark.parametrize("importance_type", IN_PASS_TYPES)
def test_end_to_end_two_tasks(digits5, importance_type):
    # 3 epochs at batch 16 (about 55 Adam steps at lr 1e-2 per task) on 32-32 units: enough for
    # every task to learn (on 16-8 units task 0 stays at chance: 0.505 whatever the importance)
    model, strategy, spy, results = _train(digits5, importance_type, epochs=3, batch=16, hidden=(32, 32))
    needs = IMPORTANCE_TYPES[importance_type].needs_activations
    assert spy.records and all(rec == (needs, needs) for rec in spy.records)
    batches = [math.ceil(len(exp.dataset) / 16) for exp in digits5.train_stream[:2]]
    assert spy.steps_at_epoch_end == [b * e for b in batches for e in (1, 2, 3)] and min(batches) >= 2
    assert model.training_step is None and int(model.importance_steps) == 0
    assert model.trained_tasks() == [0, 1]
    for state in model.unit_state.values():
        i0, i1 = state.task_importances[0], state.task_importances[1]
        for row in (i0, i1):
            assert torch.isfinite(row).all() and (row >= 1e-8 * 0.999).all() and (row <= 1 + 1e-8).all()
            assert float(row.max()) > 1e-3
        # add_all after two tasks: 2·I^0 + I^1
        torch.testing.assert_close(state.summed_importance, 2 * i0 + i1)
        assert state.importance_step_sum.abs().sum() == 0
    accuracies = [v for k, v in results.items() if k.startswith("Top1_Acc_Exp")]
    assert len(accuracies) == 2 and min(accuracies) > 0.8  # two classes per task: chance is 0.5


def test_training_adjusts_second_task_and_state_dict_roundtrip(digits5):
    model, strategy, spy, results = _train(digits5, "input_weight_abs_sum_x_activation_abs")
    assert 0.0 < strategy.hat_plugin.network_capacity() < 1.0
    assert max(v for k, v in results.items() if k.startswith("Top1_Acc_Exp")) > 0.6
    state = model.state_dict()
    for key in ("importance_step_sum", "summed_importance", "task_importances"):
        assert f"unit_state.fc0.{key}" in state
    assert "importance_steps" in state
    fresh = HATMLP(64, (16, 8))
    for exp in digits5.train_stream[:2]:
        avalanche_model_adaptation(fresh, exp)
    fresh.load_state_dict(state)
    for key, s in model.unit_state.items():
        assert torch.equal(fresh.unit_state[key].summed_importance, s.summed_importance)
        assert torch.equal(fresh.unit_state[key].task_importances, s.task_importances)
    assert fresh.trained_tasks() == [0, 1]


def test_summative_mask_scheduler_trains(digits5):
    """The reference's summative_mask_sparsity_reg crashes; here it trains three tasks."""
    model, strategy, spy, _ = _train(
        digits5,
        "input_weight_gradient_abs_sum",
        tasks=3,
        importance_scheduler_type="summative_mask_sparsity_reg",
        importance_summing_strategy="log_decrease",
        importance_summing_strategy_log_base=2.0,
        neuron_to_weight_importance_aggregation_mode="mean",
        filter_unmasked_importance=True,
    )
    for state in model.unit_state.values():
        rows = [state.task_importances[k] for k in (0, 1, 2)]
        want = (LOG2_3 + 1) * rows[0] + 2 * rows[1] + rows[2]
        torch.testing.assert_close(state.summed_importance, want)
        assert torch.equal(rows[2] == 0, state.task_masks[2] == 0)


def test_avalanche_checkpoint_resume_is_bit_identical(digits5, tmp_path):
    """Importance state rides in the model: a checkpoint after task 0 resumes exactly
    (the package's ``save_checkpoint``/``maybe_load_checkpoint``: Avalanche's, made to work on
    this torch without touching dill's global settings)."""
    import dill

    from avalanche_fgadahat.checkpoint import maybe_load_checkpoint, save_checkpoint

    def make():
        torch.manual_seed(0)
        model = HATMLP(64, (16, 8))
        return FGAdaHAT(
            model=model,
            optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
            train_mb_size=64,
            train_epochs=1,
            evaluator=quiet(),
        )

    byref = dill.settings["byref"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = make()
        first.train(digits5.train_stream[0])
        save_checkpoint(first, str(tmp_path / "ckpt.pkl"))
        first.train(digits5.train_stream[1])
        resumed, counter = maybe_load_checkpoint(make(), str(tmp_path / "ckpt.pkl"))
        assert counter == 1 and resumed.model.trained_tasks() == [0]
        resumed.train(digits5.train_stream[1])
    assert dill.settings["byref"] == byref
    for key, state in first.model.unit_state.items():
        other = resumed.model.unit_state[key]
        assert torch.equal(state.summed_importance, other.summed_importance)
        assert torch.equal(state.task_importances, other.task_importances)
        assert float(state.summed_importance.max()) > 1e-3


def test_api_accepts_the_short_importance_names_the_cli_accepts():
    model = HATMLP(6, (4,))
    for short, name in (("icu", "input_weight_abs_sum_x_activation_abs"), ("IG", "input_weight_gradient_abs_sum"),
                        ("gxa", "gradient_x_activation_abs"), ("G×A", "gradient_x_activation_abs"),
                        ("layer-ig", "integrated_gradients_abs")):
        assert FGAdaHATPlugin(importance_type=short).importance_type == name
        strategy = FGAdaHAT(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), importance_type=short)
        assert strategy.hat_plugin.importance_type == name and strategy.hat_plugin.importance.name == name
    assert FGAdaHATPlugin(importance_type=" INPUT_WEIGHT_ABS_SUM ").importance_type == "input_weight_abs_sum"
    with pytest.raises(ValueError, match=r"'icx' is not supported.*short names \(any case\): .*icu"):
        FGAdaHATPlugin(importance_type="icx")
    shared = IMPORTANCE_TYPES["input_weight_abs_sum"].short_name
    with pytest.raises(ValueError, match=r"short name of several types \(.*input_weight_abs_sum.*\); use the full name"):
        FGAdaHATPlugin(importance_type=shared)

"""AdaHAT's adjustment rates against hand computations, and their limits.

AdaHAT (Wang et al. 2024, Eq. 7–8), with ``S`` the summative mask and ``R_l`` the layer's
mask sparsity on the current batch:

* ``adahat``:        ``r_l = α/(ε + R_l)``, weight ``W_l[i, j]``: ``r_l / (min(S_l[i], S_{l−1}[j]) + r_l)``
  (first layer: ``S_l[i]``), bias ``b_l[i]``: ``r_l / (S_l[i] + r_l)``;
* ``adahat_no_sum``: ``r_l / (t + r_l)`` for every parameter, t the task's 1-based position;
* ``adahat_no_reg``: as ``adahat`` with ``r = α/ε``.

The expected rates are computed element by element with explicit index arithmetic (a
conv→linear flatten maps input position p to channel ``p // in_repeat``), not with the
broadcast the plugin uses.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive
from hat_test_support import quiet, tiny_alexnet_12
from torch import nn

from avalanche_fgadahat import AdaHATPlugin, HATPlugin
from avalanche_fgadahat.masking import ParamLayout
from avalanche_fgadahat.masking.subnormals import GRADIENT_FLOOR
from avalanche_fgadahat.models import HATMLP
from avalanche_fgadahat.models.base import HATBackbone
from avalanche_fgadahat.adjustment.engine import RateEngine
from avalanche_fgadahat.adjustment.engine import groups_up_to_largest as _groups_up_to_largest
from avalanche_fgadahat.adjustment.hat_rules import HATRule

pytestmark = pytest.mark.filterwarnings("ignore:No loggers specified")

ALPHA, EPSILON = 0.3, 0.1


class NoBiasNet(HATBackbone):
    """Two masked Linear layers, the first without a bias."""

    def __init__(self) -> None:
        super().__init__()
        self.l0 = nn.Linear(3, 4, bias=False)
        self.l1 = nn.Linear(4, 2)
        self._finish_init(
            [ParamLayout("l0", self.l0, "a", None), ParamLayout("l1", self.l1, "b", "a")], 2, {"a": 4, "b": 2}
        )

    def forward_features(self, x, masks, task):
        h = torch.relu(self._gate("a", self.l0(x), masks))
        return torch.relu(self._gate("b", self.l1(h), masks))


def _mlp():
    return HATMLP(3, (4, 3))


_alexnet = tiny_alexnet_12  # conv0 (first layer) 1→2 ch, conv1 2→3 ch, flatten 3 ch × 2×2 → fc0: in_repeat = 4

MODELS = {"mlp": _mlp, "alexnet": _alexnet, "no_bias": NoBiasNet}


def _set_state(model: HATBackbone, trained: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Commit ``trained`` tasks, then set S to fixed counts 0..3 and pick R_l per group."""
    for task in range(trained):
        model.initialize_task_embeddings()
        model.commit_task(task)
    summative, sparsity = {}, {}
    with torch.no_grad():
        for index, (key, n) in enumerate(model.unit_sizes.items()):
            values = torch.tensor([(i * 7 + index) % 4 for i in range(n)], dtype=torch.float32)
            model.unit_state[key].summative.copy_(values)
            model.unit_state[key].cumulative.copy_((values > 0).float())
            summative[key] = values
            sparsity[key] = torch.tensor(0.1 + 0.2 * index)
    return summative, sparsity


def _applied_rates(plugin: HATPlugin, model: HATBackbone, sparsity=None) -> list[torch.Tensor]:
    """Run the plugin's gradient adjustment on all-ones gradients; return the gradients."""
    plugin.engine.prepare(model)
    if sparsity is not None:
        plugin.layer_sparsity = dict(sparsity)
    params = [p for layout in model.param_layouts for p in (layout.weight, layout.bias) if p is not None]
    for p in params:
        p.grad = torch.ones_like(p)
    plugin.engine.adjust_(plugin.signals)
    return [p.grad.clone() for p in params]


def _hand_rates(model, summative, rate_of) -> list[torch.Tensor]:
    """``rate_of(measure, key)`` for every weight and existing bias, by explicit indices."""
    rates = []
    for layout in model.param_layouts:
        weight = torch.empty_like(layout.weight)
        out = summative[layout.out_key]
        for index in itertools.product(*(range(d) for d in weight.shape)):
            i, p = index[0], index[1]
            if layout.in_key is None:
                measure = float(out[i])
            else:
                measure = min(float(out[i]), float(summative[layout.in_key][p // layout.in_repeat]))
            weight[index] = rate_of(measure, layout.out_key)
        rates.append(weight)
        if layout.bias is not None:
            rates.append(torch.tensor([rate_of(float(s), layout.out_key) for s in out]))
    return rates


def _hand_rule(mode, sparsity, position):
    def r_of(key):
        return ALPHA / EPSILON if mode == "adahat_no_reg" else ALPHA / (EPSILON + float(sparsity[key]))

    if mode == "adahat_no_sum":
        return lambda measure, key: r_of(key) / (position + r_of(key))
    return lambda measure, key: r_of(key) / (measure + r_of(key))


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("mode", ["adahat", "adahat_no_sum", "adahat_no_reg"])
def test_adahat_rates_against_hand_computation(kind, mode):
    torch.manual_seed(0)
    model = MODELS[kind]()
    summative, sparsity = _set_state(model, trained=2)
    plugin = AdaHATPlugin(adjustment_mode=mode, adjustment_intensity=ALPHA, epsilon=EPSILON)
    applied = _applied_rates(plugin, model, sparsity)
    assert plugin.rule.task_position == 3
    expected = _hand_rates(model, summative, _hand_rule(mode, sparsity, position=3))
    assert len(applied) == len(expected)
    for got, want in zip(applied, expected):
        assert torch.allclose(got, want, rtol=1e-6, atol=0), (got, want)
    # the network capacity is the mean of these rates over the parameters that exist
    count = sum(r.numel() for r in expected)
    assert plugin.network_capacity() == pytest.approx(float(sum(r.sum() for r in expected)) / count, rel=1e-6)
    if kind == "no_bias":
        assert count == 3 * 4 + 4 * 2 + 2


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_list_form_of_the_step_rates_equals_the_per_parameter_rates(kind):
    """The step applies ``adahat_adjust_`` (``torch._foreach_*``, in groups, dividing by
    ``1 + P/r``); capacity and every other reader use ``adahat_rate`` per parameter: the same
    numbers, bit for bit (on all-ones gradients ``1 / x`` is the reciprocal)."""
    torch.manual_seed(0)
    model = MODELS[kind]()
    summative, sparsity = _set_state(model, trained=2)
    plugin = AdaHATPlugin(adjustment_intensity=ALPHA, epsilon=EPSILON)
    applied = _applied_rates(plugin, model, sparsity)
    per_parameter = [plugin.rule.rate(m, k, plugin.signals).expand_as(m) for _, m, k in plugin.engine.entries]
    assert len(applied) == len(per_parameter) and all(torch.equal(a, b) for a, b in zip(applied, per_parameter))
    grads = [torch.randn_like(m) for _, m, _ in plugin.engine.entries]
    for (param, _, _), grad in zip(plugin.engine.entries, grads):
        param.grad = grad.clone()
    plugin.engine.adjust_(plugin.signals)
    for (param, _, _), grad, rate in zip(plugin.engine.entries, grads, per_parameter):
        torch.testing.assert_close(param.grad, grad * rate, rtol=1e-6, atol=0)  # g / x vs g · (1/x): rounding only
    assert any(float(r.min()) < 0.9 for r in per_parameter)  # not trivially 1
    # each entry is divided once: from its per-unit vectors (every entry here: min aggregation) or in a group
    engine = plugin.engine
    assert sorted([i for g in engine.groups for i in g] + list(engine.separable)) == list(range(len(engine.entries)))


def test_rate_groups_keep_temporaries_within_the_largest_parameter():
    assert _groups_up_to_largest([5, 2, 2, 1, 6, 3]) == [[0], [1, 2, 3], [4], [5]]
    assert _groups_up_to_largest([1, 1, 1]) == [[0], [1], [2]]
    assert _groups_up_to_largest([4, 1, 1, 2]) == [[0], [1, 2, 3]]
    assert _groups_up_to_largest([]) == []


def test_capacity_is_cached_per_step_and_refreshed_by_the_next_regulariser():
    model = _mlp()
    summative, sparsity = _set_state(model, trained=1)
    plugin = AdaHATPlugin(adjustment_intensity=ALPHA, epsilon=EPSILON)
    _applied_rates(plugin, model, sparsity)
    first = plugin.network_capacity()
    plugin.layer_sparsity = {k: v + 1.0 for k, v in sparsity.items()}
    assert plugin.network_capacity() == first  # same step: the cached value
    plugin.engine.new_step()  # what before_backward does after computing R_l
    assert plugin.network_capacity() < first  # larger R_l → smaller r_l → smaller rates


def test_the_flushed_gradients_are_listed_on_the_first_step_of_each_experience():
    # listed after prepare(): a parameter another plugin adds at the start of the experience
    # (after HATPlugin.before_training_exp) is flushed too; the embeddings never are
    model = _mlp()
    engine = RateEngine(HATRule())
    engine.prepare(model)
    model.register_parameter("late", nn.Parameter(torch.zeros(3)))
    listed = engine.non_embedding_parameters(model)
    assert [id(p) for p in listed] == [id(p) for p in model.parameters() if p is not model.task_embeddings]
    assert any(p is model.late for p in listed)
    assert engine.non_embedding_parameters(model) is listed  # kept for the experience
    model.register_parameter("next", nn.Parameter(torch.zeros(2)))
    engine.prepare(model)  # the next experience lists again
    assert any(p is model.next for p in engine.non_embedding_parameters(model))
    model.register_parameter("in_epoch", nn.Parameter(torch.zeros(2)))
    engine.relist_parameters()  # what HATPlugin.before_training_epoch does: each epoch lists again
    assert any(p is model.in_epoch for p in engine.non_embedding_parameters(model))


def _fgadahat_plugin(model: HATBackbone, **settings):
    from avalanche_fgadahat import FGAdaHATPlugin

    with torch.no_grad():
        for index, state in enumerate(model.unit_state.values()):  # importances with ties, zeros and spread
            values = torch.tensor([((i * 5 + index) % 7) * 0.37 for i in range(state.num_units)])
            values[-1] = float("inf")  # the factorial summing strategy overflows to inf after 35 tasks
            state.summed_importance.copy_(values)
    return FGAdaHATPlugin(adjustment_intensity=ALPHA, **settings)


SOFT_RATE_SETTINGS = {
    "adahat": {},
    "fgadahat": {},
    "fgadahat_max": {"neuron_to_weight_importance_aggregation_mode": "max"},
    "fgadahat_sparsity_reg": {"importance_scheduler_type": "sparsity_reg"},
    "fgadahat_mean": {"neuron_to_weight_importance_aggregation_mode": "mean"},
    "fgadahat_summative_scheduler": {"importance_scheduler_type": "summative_mask_sparsity_reg"},
    "fgadahat_filtered": {"filter_by_cumulative_mask": True},
}
#: settings whose ``P`` of a weight between two unit groups is no ``min``/``max`` of two vectors
#: (or is one only by accident of the data): those weights keep the general path
NOT_SEPARABLE = {"fgadahat_mean", "fgadahat_summative_scheduler", "fgadahat_filtered"}


@pytest.mark.parametrize("setting", sorted(SOFT_RATE_SETTINGS))
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_soft_rate_from_per_unit_vectors_has_the_bits_of_the_stored_measure(kind, setting):
    """AdaHAT's and FG-AdaHAT's step divides by ``1 + P·k`` built from per-unit vectors where ``P``
    is a min/max of two of them (``adjustment/separable.py``): the gradients have the bits of the
    rule's list form on the stored ``P`` (the form before), on random gradients and large ``k``."""
    torch.manual_seed(0)
    model = MODELS[kind]()
    _, sparsity = _set_state(model, trained=2)
    if setting == "adahat":
        plugin = AdaHATPlugin(adjustment_intensity=ALPHA, epsilon=EPSILON)
    else:
        plugin = _fgadahat_plugin(model, **SOFT_RATE_SETTINGS[setting])
    engine = plugin.engine
    engine.prepare(model)
    weights_between_groups = [i for i, (p, _, _) in enumerate(engine.entries)
                              if any(p is l.weight and l.input_groups for l in model.param_layouts)]
    assert weights_between_groups
    if setting in NOT_SEPARABLE:
        assert not set(weights_between_groups) & set(engine.separable)
    else:
        assert sorted(engine.separable) == list(range(len(engine.entries)))
    # R_l scaled, and set so that k = (ε + R_l)/α is inf, 0 or negative (the stored P's form then)
    for scale in (1.0, 1e3, 1e7, float("inf"), "k=0", "k<0"):
        if scale == "k=0":
            epsilon = plugin.rule.epsilon
            plugin.layer_sparsity = {k: torch.tensor(-epsilon) for k in sparsity}
            assert all(float(c) == 0 for c in plugin.rule.soft_coefficients(list(sparsity), plugin.signals))
        elif scale == "k<0":
            plugin.layer_sparsity = {k: torch.tensor(-1.0) for k in sparsity}
        else:
            plugin.layer_sparsity = {k: v * scale for k, v in sparsity.items()}
        grads = [torch.randn_like(m) * 10.0 ** torch.randint(-30, 3, m.shape) for _, m, _ in engine.entries]
        results = []
        for use_vectors in (True, False):
            for (param, _, _), grad in zip(engine.entries, grads):
                param.grad = grad.clone()
            if use_vectors:
                engine.adjust_(plugin.signals)
            else:  # the rule's list form on the stored P, every entry
                entries = engine.entries
                plugin.rule.adjust_([p.grad for p, _, _ in entries], [m for _, m, _ in entries],
                                    [k for _, _, k in entries], plugin.signals)
                from avalanche_fgadahat.masking.subnormals import flush_gradients_
                flush_gradients_(p for p, _, _ in entries)
            results.append([p.grad.view(torch.int32).clone() for p, _, _ in engine.entries])
        assert all(torch.equal(a, b) for a, b in zip(*results)), scale  # NaN bits included


def test_an_entry_whose_vectors_do_not_rebuild_its_measure_keeps_the_general_path():
    from avalanche_fgadahat.adjustment.separable import separable_measures

    model = _mlp()
    _set_state(model, trained=2)
    plugin = AdaHATPlugin(adjustment_intensity=ALPHA, epsilon=EPSILON)
    plugin.engine.prepare(model)
    unit = plugin.rule.unit_measure(model)
    measures = [m.clone() for _, m, _ in plugin.engine.entries]
    assert sorted(separable_measures(model.param_layouts, unit, "min", measures, None)) == list(range(len(measures)))
    measures[2].view(-1)[3] += 0.5  # one element off: that entry is not separable
    found = separable_measures(model.param_layouts, unit, "min", measures, None)
    assert 2 not in found and len(found) == len(measures) - 1
    assert separable_measures(model.param_layouts, unit, "mean", measures, None) == {}
    empty = [m[:0] if i == 2 else m for i, m in enumerate(measures)]  # a parameter with no elements
    assert 2 not in separable_measures(model.param_layouts, unit, "min", empty, [torch.ones_like(m) for m in empty])


def test_a_layer_bias_shares_its_weight_output_vector_and_each_k_gets_its_own_divisor():
    """The bias's output vector is a view of its weight's (one divisor ``1 + out·k`` formed per layer
    and step); sharing is keyed by the vector's memory *and* ``k``, so a vector read with another
    ``k`` is divided by its own divisor, bit for bit the direct formula's."""
    from avalanche_fgadahat.adjustment.separable import divide_by_soft_rates_, separable_measures

    model = _mlp()
    _set_state(model, trained=2)
    plugin = AdaHATPlugin(adjustment_intensity=ALPHA, epsilon=EPSILON)
    plugin.engine.prepare(model)
    found = separable_measures(model.param_layouts, plugin.rule.unit_measure(model), "min",
                               [m for _, m, _ in plugin.engine.entries], None)
    index = {id(p): i for i, (p, _, _) in enumerate(plugin.engine.entries)}
    for layout in model.param_layouts:
        weight, bias = found[index[id(layout.weight)]][0], found[index[id(layout.bias)]][0]
        assert bias.data_ptr() == weight.data_ptr() and bias.shape == (weight.shape[0],)

    torch.manual_seed(0)
    out = torch.rand(4, 1) * 1e3
    k1, k2 = torch.tensor(2.5e5), torch.tensor(7.0e6)
    grads = [torch.randn(4, 3), torch.randn(4), torch.randn(4, 3)]
    vectors = [(out, None), (out.view(4), None), (out, None)]
    want = [grads[0] / (out * k1 + 1.0), grads[1] / (out.view(4) * k1 + 1.0), grads[2] / (out * k2 + 1.0)]
    divide_by_soft_rates_(grads, vectors, [k1, k1, k2], "min")
    assert all(torch.equal(g.view(torch.int32), w.view(torch.int32)) for g, w in zip(grads, want))
    assert not torch.equal(want[0], grads[2] / (out * k1 + 1.0))  # a divisor shared across k would differ


@pytest.mark.parametrize("mode", ["hat", "hat_const_alpha", "adahat_no_reg"])
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_a_first_layer_rate_is_kept_per_output_unit_and_multiplies_with_the_same_bits(kind, mode):
    """Constant rates of a weight whose ``P`` does not vary over its inputs (the first layer) are
    kept as ``(out, 1, …)`` (``engine.compact_rate``) and multiplied broadcast: the gradients have
    the bits of the product with the full rate, and the capacity is the full rates' mean."""
    torch.manual_seed(0)
    model = MODELS[kind]()
    _set_state(model, trained=2)
    if mode == "adahat_no_reg":
        plugin = AdaHATPlugin(adjustment_mode=mode, adjustment_intensity=ALPHA, epsilon=EPSILON)
    else:
        plugin = HATPlugin(adjustment_mode=mode, alpha=0.4)
    engine = plugin.engine
    engine.prepare(model)
    full = [plugin.rule.rate(m, k, plugin.signals).expand_as(p) for p, m, k in engine.entries]
    first = next(l for l in model.param_layouts if not l.input_groups)
    index = next(i for i, (p, _, _) in enumerate(engine.entries) if p is first.weight)
    assert engine.constant_rates[index].shape == (first.weight.shape[0],) + (1,) * (first.weight.dim() - 1)
    assert all(r.shape == p.shape for i, ((p, _, _), r) in enumerate(zip(engine.entries, engine.constant_rates))
               if i != index and any(p is l.weight and l.input_groups for l in model.param_layouts))
    assert any(float(r.min()) < 1 for r in full)  # something is protected
    grads = [torch.randn_like(p) for p, _, _ in engine.entries]
    for (p, _, _), g in zip(engine.entries, grads):
        p.grad = g.clone()
    engine.adjust_(plugin.signals)
    from avalanche_fgadahat.masking.subnormals import flush_gradients_

    for (p, _, _), g, rate in zip(engine.entries, grads, full):
        want = g * rate
        if not plugin.rule.binary_rates:
            p.grad, adjusted = want, p.grad
            flush_gradients_([p])
            want, p.grad = p.grad, adjusted
        assert torch.equal(p.grad.view(torch.int32), want.view(torch.int32))
    count = sum(r.numel() for r in full)
    assert engine.capacity(plugin.signals) == pytest.approx(float(sum(r.double().sum() for r in full)) / count, rel=1e-6)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 3, 2, 2)])
def test_compact_rate_of_a_parameter_with_no_elements_multiplies_its_gradient(shape):
    # a layer with no outputs or no inputs: nothing to compare, and the rate still broadcasts to it
    from avalanche_fgadahat.adjustment.engine import compact_rate

    rate = compact_rate(torch.ones(shape))
    grad = torch.empty(shape)
    assert grad.mul_(rate).shape == shape and rate.dim() == len(shape)


class _GradRecorder(SupervisedPlugin):
    def __init__(self, model: HATBackbone) -> None:
        super().__init__()
        self.params = [p for l in model.param_layouts for p in (l.weight, l.bias) if p is not None]
        self.grads: list[list[torch.Tensor]] = []

    def after_backward(self, strategy, **kwargs):
        self.grads.append([p.grad.clone() for p in self.params])


def test_adahat_changes_no_gradient_at_the_first_task(digits5):
    torch.manual_seed(0)
    bench = digits5
    model = HATMLP(64, (16, 16))
    before, after = _GradRecorder(model), _GradRecorder(model)
    strategy = Naive(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
                     plugins=[before, AdaHATPlugin(adjustment_intensity=1e-6), after],
                     train_mb_size=100, train_epochs=1, evaluator=quiet())
    strategy.train(bench.train_stream[0])
    assert len(before.grads) == len(after.grads) == 3
    for raw, adjusted in zip(before.grads, after.grads):  # but the flush of gradients ≤ 1e-16 (deviation H16)
        assert all(torch.equal(a.hardshrink(GRADIENT_FLOOR), b) for a, b in zip(raw, adjusted))
    # control: at the second task the units task 0 uses are damped
    steps = len(before.grads)
    strategy.train(bench.train_stream[1])
    changed = [not torch.equal(a, b) for a, b in zip(before.grads[steps], after.grads[steps])]
    assert any(changed)


@pytest.mark.parametrize("mode", ["adahat", "adahat_no_reg"])
def test_adahat_limits_small_alpha_is_hat_large_alpha_is_finetuning(mode):
    model = _alexnet()
    summative, sparsity = _set_state(model, trained=2)
    hat_rates = _applied_rates(HATPlugin(adjustment_mode="hat"), model)
    used = [r == 0 for r in hat_rates]  # parameters HAT freezes: min-broadcast S ≥ 1
    assert any(u.any() for u in used) and not all(u.all() for u in used)
    previous = None
    for alpha in (1e-9, 1e-6, 1e-3, 1.0, 1e3, 1e9):
        rates = _applied_rates(AdaHATPlugin(adjustment_mode=mode, adjustment_intensity=alpha), model, sparsity)
        for rate, frozen in zip(rates, used):
            assert torch.all(rate[~frozen] == 1.0)  # S = 0: always free
        if previous is not None:  # every rate grows with α
            assert all(torch.all(r >= p) for r, p in zip(rates, previous))
        previous = rates
        if alpha == 1e-9:  # HAT-like: used parameters frozen
            assert all(torch.allclose(r, h, atol=1e-7, rtol=0) for r, h in zip(rates, hat_rates))
        if alpha == 1e9:  # fine-tuning-like: nothing frozen
            assert all(torch.all(r > 1 - 1e-7) for r in rates)

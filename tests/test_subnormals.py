"""No subnormal float in the HAT family's training step (issue 14; ``docs/deviations.md`` H16).

The case: ``HATMLP(64, (128, 128))`` on two tasks of Permuted Digits, three epochs each, Adam;
by the second task's last epoch the gate scale reaches ``s_max = 400`` and the masks of units
the task does not use saturate far below the float32 normal range. The last
:data:`COUNTED_ITERATIONS` iterations of that epoch are counted by
:class:`~avalanche_fgadahat.masking.subnormals.SubnormalCounter` (every ATen op output of the
forward, the backward, the plugin's hooks, the optimizer step, FG-AdaHAT's accumulation and
attribution passes), and the gradients handed to the optimizer, the optimizer's state and the
model's parameters and buffers are inspected after each counted step.

* The unflushed computation (every floor of H16 at 0, :func:`unflushed`: bit for bit the code
  before the change — ``scripts/fingerprint.py`` and the README's main job run under it give the
  earlier fingerprints and results) produces thousands of subnormals: in the gate and its
  gradient, the products of saturated masks with activations and gradients (the network's
  forward, backward and weight gradients), the rates, Adam's state, the importance
  accumulation and the attribution passes. With the floors the step produces none.
* Flushing changes no stored mask and moves no parameter by more than :data:`PARAMETER_BOUND`.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter

import pytest
import torch
from avalanche.core import SupervisedPlugin

from avalanche_fgadahat import AdaHAT, FGAdaHAT, HAT, set_seed
from avalanche_fgadahat.adjustment import gradient_step
from avalanche_fgadahat.data import permuted_digits
from avalanche_fgadahat.importance import accumulator, in_pass, normalize
from avalanche_fgadahat.importance.attribution import _engine as attribution_engine
from avalanche_fgadahat.importance.normalize import STEP_IMPORTANCE_FLOOR, min_max_normalize_all
from avalanche_fgadahat.masking import gate, subnormals
from avalanche_fgadahat.masking.gate import (KEPT_MASK_MINIMUM, MASK_FLOOR, SCALED_EMBEDDING_FLOOR,
                                             compensate_embedding_gradient_, soft_mask)
from avalanche_fgadahat.masking.subnormals import (
    GRADIENT_FLOOR,
    SubnormalCounter,
    count_subnormal,
    flush_gradients_,
    product_below,
)
from avalanche_fgadahat.models import HATMLP
from hat_test_support import quiet

TINY = torch.finfo(torch.float32).tiny
COUNTED_ITERATIONS = 3
#: flushed and unflushed runs of the case agree on every parameter within this (absolute)
PARAMETER_BOUND = 1e-6

#: every floor of H16 and its value with nothing flushed
UNFLUSHED_FLOORS = [
    (gate, "SCALED_EMBEDDING_FLOOR", -math.inf),
    (gate, "KEPT_MASK_MINIMUM", 0.0),
    (gate, "_GATE_GRADIENT_FLOOR", 0.0),
    (gate, "GRADIENT_FLOOR", 0.0),
    (subnormals, "GRADIENT_FLOOR", 0.0),
    (gradient_step, "GRADIENT_FLOOR", 0.0),  # the fused kernels' copy
    (normalize, "RAW_IMPORTANCE_FLOOR", 0.0),
    (in_pass, "_PRODUCT_FLOOR", 0.0),
    (normalize, "STEP_IMPORTANCE_FLOOR", 0.0),
    (accumulator, "STEP_IMPORTANCE_FLOOR", 0.0),
    (attribution_engine, "ATTRIBUTION_MASK_FLOOR", 0.0),
]


@contextlib.contextmanager
def unflushed():
    """Every flush floor at 0: the computation before H16, bit for bit (``scripts/fingerprint.py``
    run under this gives the 56 fingerprints of the earlier code)."""
    saved = [(module, name, getattr(module, name)) for module, name, _ in UNFLUSHED_FLOORS]
    try:
        for module, name, value in UNFLUSHED_FLOORS:
            setattr(module, name, value)
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def _subnormal_elements(tensors) -> int:
    return sum(count_subnormal(t) for t in tensors if isinstance(t, torch.Tensor))


class StepCounter(SupervisedPlugin):
    """Counts subnormals in the last ``iterations`` steps of the last epoch of experience ``task``."""

    def __init__(self, task: int, epochs: int, iterations: int = COUNTED_ITERATIONS) -> None:
        super().__init__()
        self.task, self.epochs, self.iterations = task, epochs, iterations
        self.by_site: Counter = Counter()
        self.gradients = self.optimizer_state = self.model_state = self.steps = 0
        self._counter: SubnormalCounter | None = None

    def _counting(self, strategy) -> bool:
        clock = strategy.clock
        return (strategy.experience.task_label == self.task and clock.train_exp_epochs == self.epochs - 1
                and clock.train_epoch_iterations >= len(strategy.dataloader) - self.iterations)

    def before_training_iteration(self, strategy, **kwargs):
        if self._counting(strategy):
            self._counter = SubnormalCounter()
            self._counter.__enter__()

    def before_update(self, strategy, **kwargs):
        if self._counter is not None:
            self.gradients += _subnormal_elements(p.grad for p in strategy.model.parameters())

    def after_training_iteration(self, strategy, **kwargs):
        if self._counter is None:
            return
        self._counter.__exit__(None, None, None)
        self.by_site.update(self._counter.by_site)
        self._counter = None
        self.steps += 1
        self.optimizer_state += _subnormal_elements(
            value for state in strategy.optimizer.state.values() for value in state.values())
        self.model_state += _subnormal_elements(strategy.model.state_dict().values())

    @property
    def total(self) -> int:
        """Subnormal elements in every op output of the counted steps."""
        return sum(self.by_site.values())


METHODS = {
    "hat": (HAT, {}),
    "adahat": (AdaHAT, {}),
    "fgadahat_icu": (FGAdaHAT, {}),
    # squared-gradient sums times activations: 1-3 subnormal products per step before in_pass.product
    "fgadahat_afi": (FGAdaHAT, {"importance_type": "input_weight_gradient_square_sum_x_activation_abs"}),
    "fgadahat_integrated_gradients": (FGAdaHAT, {"importance_type": "integrated_gradients_abs"}),
    "fgadahat_lrp_captum": (FGAdaHAT, {"importance_type": "lrp_abs"}),
}
EPOCHS = 3


def _train(method: str, **extra) -> tuple[StepCounter, dict[str, torch.Tensor]]:
    strategy_class, settings = METHODS[method]
    settings = {**settings, **extra}
    set_seed(0)
    benchmark = permuted_digits(2, seed=1)
    model = HATMLP(64, (128, 128))
    counter = StepCounter(task=1, epochs=EPOCHS)
    strategy = strategy_class(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                              train_mb_size=64, train_epochs=EPOCHS, evaluator=quiet(), plugins=[counter], **settings)
    for experience in benchmark.train_stream:
        strategy.train(experience)
    return counter, {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def runs():
    """``{method: {"flushed"/"unflushed": (counter, final state)}}``, trained once per module (one
    torch thread: the counts and states do not depend on how matmuls are split)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = {}
        for method in METHODS:
            with unflushed():
                before = _train(method)
            results[method] = {"unflushed": before, "flushed": _train(method),
                               "never": _train(method, subnormal_guards="never"),
                               "always": _train(method, subnormal_guards="always")}
    finally:
        torch.set_num_threads(threads)
    return results


@pytest.mark.parametrize("method", list(METHODS))
def test_unflushed_step_produces_subnormals_where_the_flushed_one_produces_none(runs, method):
    before, _ = runs[method]["unflushed"]
    after, _ = runs[method]["flushed"]
    assert before.steps == after.steps == COUNTED_ITERATIONS
    # the case does produce them with nothing flushed (the test would fail on the earlier code) ...
    assert before.total > 1000, dict(before.by_site)
    sites = {op for _, op in before.by_site}
    assert {"aten.mm.default", "aten.addcmul_.default"} <= sites  # weight gradients, Adam's second moment
    assert before.gradients > 0 and before.optimizer_state > 0
    # ... and none with H16, anywhere in the step
    assert after.total == 0, dict(after.by_site)
    assert after.gradients == 0, "a gradient handed to the optimizer is subnormal"
    assert after.optimizer_state == 0, "the optimizer's state holds a subnormal"
    assert after.model_state == 0, "a parameter or buffer of the model is subnormal"


@pytest.mark.parametrize("method", list(METHODS))
def test_flushing_changes_no_stored_mask_and_no_parameter_beyond_the_bound(runs, method):
    _, before = runs[method]["unflushed"]
    _, after = runs[method]["flushed"]
    assert before.keys() == after.keys()
    for key in before:
        if key.endswith(("task_masks", "cumulative", "summative", "task_positions")):
            assert torch.equal(before[key], after[key]), key
        elif before[key].is_floating_point():
            difference = (before[key] - after[key]).abs().max().item() if before[key].numel() else 0.0
            assert difference <= PARAMETER_BOUND, (key, difference)


@pytest.mark.parametrize("method", list(METHODS))
def test_guards_never_is_the_unflushed_computation_and_cpu_mode_guards_a_cpu_model(runs, method):
    """``subnormal_guards="never"`` (what the default ``"cpu"`` does on a GPU, H16a) skips every
    flush and floor test: its run is the run with every floor at 0 (the arithmetic before H16),
    bit for bit, subnormals included; on this CPU the default ``"cpu"`` is ``"always"``."""
    _, unflushed_state = runs[method]["unflushed"]
    never, never_state = runs[method]["never"]
    always, always_state = runs[method]["always"]
    _, default_state = runs[method]["flushed"]
    assert never_state.keys() == unflushed_state.keys() == always_state.keys()
    assert [k for k in never_state if not torch.equal(never_state[k], unflushed_state[k])] == []
    assert [k for k in always_state if not torch.equal(always_state[k], default_state[k])] == []
    assert never.total > 1000 and never.gradients > 0 and always.total == 0
    # not vacuous: the counts show the guards ran in one run and not in the other (the final states
    # can agree: for HAT on this case the flushes change no parameter)
    assert never.total != always.total


def test_guards_apply_on_cpu_devices_only_by_default_and_refuse_other_modes():
    cpu, cuda, meta = torch.device("cpu"), torch.device("cuda", 0), torch.device("meta")
    assert [subnormals.guards_apply("cpu", d) for d in (cpu, cuda, meta)] == [True, False, False]
    assert [subnormals.guards_apply("always", d) for d in (cpu, cuda)] == [True, True]
    assert [subnormals.guards_apply("never", d) for d in (cpu, cuda)] == [False, False]
    with pytest.raises(ValueError, match="subnormal_guards='gpu' is not supported; accepted values are: "
                                         "'cpu', 'always', 'never'"):
        subnormals.guards_apply("gpu", cpu)
    with pytest.raises(ValueError, match="subnormal_guards=True is not supported"):
        HAT(model=HATMLP(4, (3,)), optimizer=None, subnormal_guards=True)
    model = HATMLP(4, (3,))
    strategy = AdaHAT(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert strategy.hat_plugin.config.subnormal_guards == "cpu"


def test_plugin_decides_the_guards_from_the_model_device_each_step(monkeypatch):
    """The plugin asks :func:`guards_apply` with the setting and the task embeddings' device at
    each step and hands the answer to the gate (``TrainingStep.subnormal_guards``): a model that
    the decision puts off the guards trains as ``"never"`` does, bit for bit."""
    from avalanche_fgadahat.plugins import hat as hat_plugin_module

    asked = []

    def decide(mode, device):
        asked.append((mode, device.type))
        return False

    monkeypatch.setattr(hat_plugin_module, "guards_apply", decide)
    _, decided = _train("adahat")
    monkeypatch.undo()
    _, never = _train("adahat", subnormal_guards="never")
    assert asked and set(asked) == {("cpu", "cpu")}
    assert all(torch.equal(decided[k], never[k]) for k in never)


# ---------------------------------------------------------------- the pieces
def test_gate_is_torch_sigmoid_bit_for_bit_but_zero_below_the_floor_and_raised_below_the_minimum():
    embedding = torch.linspace(-0.6, 0.6, 20001)
    for scale in (1 / 400, 1.0, 57.3, 400.0):
        e = embedding.clone().requires_grad_(True)
        reference = embedding.clone().requires_grad_(True)
        upstream = torch.randn(embedding.shape, generator=torch.Generator().manual_seed(0))
        mask, expected = soft_mask(e, scale), torch.sigmoid(scale * reference)
        mask.backward(upstream)
        expected.backward(upstream)
        sigma = expected.detach()
        kept, raised = sigma >= MASK_FLOOR, (sigma >= MASK_FLOOR) & (sigma < KEPT_MASK_MINIMUM)
        assert torch.equal(mask[kept & ~raised], sigma[kept & ~raised])
        assert (mask[raised] == KEPT_MASK_MINIMUM).all() and (mask[~kept] == 0).all()
        # the gradient is σ's, bit for bit, wherever the unit is kept (raised or not); 0 where flushed
        assert torch.equal(e.grad[kept], reference.grad[kept]) and (e.grad[~kept] == 0).all()
        assert count_subnormal(mask) == count_subnormal(e.grad) == 0
    sigma = torch.sigmoid(400.0 * embedding)
    assert (sigma < MASK_FLOOR).any() and ((sigma >= MASK_FLOOR) & (sigma < KEPT_MASK_MINIMUM)).any()


def test_gate_flushes_exactly_below_the_float32_floor():
    """``s·e`` at the float32 value of ``ln 1e-30`` is kept (``σ`` raised to 1e-15, gradient σ's);
    one float32 step below it is flushed (0, gradient 0): the gate's ``threshold`` at the float
    below the floor is the comparison ``s·e < floor`` of float32."""
    floor = torch.tensor(SCALED_EMBEDDING_FLOOR)
    below = torch.nextafter(floor, torch.tensor(-float("inf")))
    e = torch.stack([floor, below, below.nextafter(torch.tensor(-float("inf"))), floor.nextafter(torch.tensor(0.0))])
    e.requires_grad_(True)
    mask = soft_mask(e, 1.0)
    mask.backward(torch.ones(4))
    raised = torch.tensor(KEPT_MASK_MINIMUM).item()  # its float32 value
    assert mask.tolist() == [raised, 0.0, 0.0, raised]
    sigma = torch.sigmoid(e.detach()[[0, 3]])
    assert torch.equal(e.grad[[0, 3]], sigma * (1 - sigma)) and e.grad[1] == 0 and e.grad[2] == 0
    assert float(sigma[0]) > 0 and count_subnormal(mask) == count_subnormal(e.grad) == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_gate_flushes_below_the_floor_of_each_dtype_as_its_comparison_does(dtype):
    """The floor is compared in the embedding's dtype: ``s·e < ln 1e-30`` there (float64 embeddings,
    half precision), whatever torch's default dtype is."""
    floor = torch.tensor(SCALED_EMBEDDING_FLOOR, dtype=dtype)
    minus_inf = torch.tensor(-float("inf"), dtype=dtype)
    below = torch.nextafter(floor, minus_inf)
    e = torch.stack([floor, below, torch.nextafter(below, minus_inf), torch.nextafter(floor, -minus_inf)])
    e = torch.cat([e, torch.linspace(-0.3, 0.3, 4001, dtype=dtype)])
    for scale in (1.0, 400.0):
        with torch.no_grad():
            mask = soft_mask(e, scale)
            scaled = scale * e  # the gate's forward before the threshold form: the comparison in the dtype
            flushed = scaled < SCALED_EMBEDDING_FLOOR
            sigma = torch.sigmoid(scaled.clamp_min(SCALED_EMBEDDING_FLOOR)).masked_fill_(flushed, 0.0)
            expected = sigma.clamp_min(KEPT_MASK_MINIMUM).masked_fill_(flushed, 0.0)
        assert torch.equal(mask, expected) and mask.dtype == dtype
        assert flushed[1:3].all() and not flushed[0] if scale == 1.0 else flushed.any()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        float32 = torch.stack([torch.tensor(SCALED_EMBEDDING_FLOOR, dtype=torch.float32)] * 2)
        with torch.no_grad():
            assert (soft_mask(float32, 1.0) != 0).all()  # at the float32 floor: kept
    finally:
        torch.set_default_dtype(previous)


def test_gate_gradient_that_would_be_subnormal_is_zero_and_none_is_computed():
    # σ(400·(−0.17)) = 3.4e-30 (kept); σ(0) = 0.5 with s = 1/400: ∂L/∂e = g · 0.25 · 0.0025
    e = torch.tensor([-0.17, -0.17, 0.0, 0.0], requires_grad=True)
    scales = (400.0, 400.0, 1 / 400, 1 / 400)
    upstream = (1e-10, 1.0, 2e-36, 1e-30)
    grads = []
    for index, (scale, g) in enumerate(zip(scales, upstream)):
        e.grad = None
        with SubnormalCounter() as counter:
            soft_mask(e[index:index + 1], scale).backward(torch.tensor([g]))
        assert counter.total == 0
        grads.append(e.grad[index].item())
    assert grads[0] == 0.0  # 1e-10 · 3.4e-30 = 3.4e-40: subnormal
    assert grads[1] == pytest.approx(400 * 3.4e-30, rel=0.05)
    assert grads[2] == 0.0  # 2e-36 · 0.25 · 0.0025 = 1.3e-39: subnormal
    assert grads[3] == pytest.approx(1e-30 * 0.25 / 400, rel=1e-6)


def test_compensation_zeroes_only_what_would_fall_below_the_gradient_floor():
    e = torch.tensor([0.1, 0.1, -0.3], requires_grad=True)
    e.grad = torch.tensor([1.0, 1e-33, 1e-20])
    expected = e.grad.clone()
    with SubnormalCounter() as counter:
        compensate_embedding_gradient_(e, 400.0, 400.0, 50.0)
    numerator = torch.cosh(torch.clamp(400.0 * e.detach(), -50.0, 50.0)) + 1
    factor = numerator / (torch.cosh(e.detach()) + 1)
    assert counter.total == 0
    assert e.grad[0] == expected[0] * factor[0]  # kept: bit for bit the unflushed product
    assert e.grad[1] == 0  # 1e-33 · 5.9e16 = 5.9e-17 < GRADIENT_FLOOR
    assert e.grad[2] == expected[2] * factor[2]  # 1e-20 · 1.3e21: amplified, kept


def test_product_below_never_forms_the_product_and_keeps_exactly_the_large_enough():
    a = torch.tensor([1e-20, 1e-20, 3.0, 1e-30, 1e-30, 0.0, 2e-38])
    b = torch.tensor([1e-5, 1e-3, 0.0, 1e30, 1e10, 1.0, 4.0])
    with SubnormalCounter() as counter:
        below = product_below(a, b, 1e-24)
    assert counter.total == 0
    exact = (a.double() * b.double()).abs() < 1e-24
    assert below.tolist() == exact.tolist() == [True, False, True, False, False, True, True]


def test_flush_gradients_zeroes_at_most_the_floor_and_keeps_every_other_bit():
    param = torch.nn.Parameter(torch.zeros(6))
    values = [1e-17, -1e-16, 2e-16, -3.0, 1e-39, float("nan")]
    param.grad = torch.tensor(values)
    expected = torch.tensor(values)
    grad = param.grad
    flush_gradients_([param])
    assert param.grad is grad  # in place: no new tensor of the parameter's size per step
    assert param.grad[[0, 1, 4]].tolist() == [0.0, 0.0, 0.0]
    assert torch.equal(param.grad[2:4], expected[2:4]) and torch.isnan(param.grad[5])
    assert GRADIENT_FLOOR == 1e-16
    # a gradient set to an expanded tensor (its elements share memory) cannot be written in place
    shared = torch.nn.Parameter(torch.zeros(2, 3))
    shared.grad = torch.tensor([1e-17, 2.0, -3.0]).expand(2, 3)
    flush_gradients_([shared])
    assert shared.grad.tolist() == [[0.0, 2.0, -3.0]] * 2


def test_normalisation_with_flush_equals_the_plain_one_except_below_the_floors():
    x = torch.tensor([0.0, 1e-31, 2e-30, 0.5, 1.0])
    plain, flushed = min_max_normalize_all([x])[0], min_max_normalize_all([x], flush=True)[0]
    assert flushed[:3].tolist() == [0.0, 0.0, 0.0]  # 1e-31: raw below 1e-30; 2e-30 / (1 + 1e-8): below 1e-20
    assert torch.equal(flushed[3:], plain[3:])
    # raw values one float32 spacing apart (9.4e-38 at 1e-30) under a span of 1e3: 1e-40 unflushed
    close = torch.tensor([1e-30, 1e-30, 1e3])
    close[1] = torch.nextafter(close[0], torch.tensor(1.0))
    assert count_subnormal(min_max_normalize_all([close])[0]) == 1
    with SubnormalCounter() as counter:
        min_max_normalize_all([close, torch.tensor([5e-38, 6e-38])], flush=True)
    assert counter.total == 0
    assert STEP_IMPORTANCE_FLOOR == 1e-20


def test_counter_counts_written_elements_once_and_skips_views_and_uninitialised_memory():
    a = torch.full((4,), 1e-20)
    grads = [torch.full((3,), 1e-20)]
    with SubnormalCounter() as counter:
        product = a * a  # 4 written
        product.t().view(2, 2)  # views: nothing written
        a.mul_(1e-19)  # in place: 4 written
        torch._foreach_mul_(grads, 1e-19)  # list in place: 3 written
        torch.empty(1000)  # whatever the memory held is not a computed value
        torch.mul(torch.ones(2), 1e-39, out=torch.empty(2))  # out=: 2 written
    assert counter.total == 13
    assert counter.by_op["aten.mul.Tensor"] == 4 and counter.by_op["aten._foreach_mul_.Scalar"] == 3
    assert all(node is None for node, _ in counter.by_site)
    x = torch.tensor([1.0], requires_grad=True)
    with SubnormalCounter() as counter:
        (x * 1e-20).backward(torch.tensor([1e-20]))  # backward: 1e-40, inside MulBackward0
    assert counter.by_site == {("MulBackward0", "aten.mul.Tensor"): 1}
    assert counter.count_at({("MulBackward0", "aten.mul.Tensor")}) == 1

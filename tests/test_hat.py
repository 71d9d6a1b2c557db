"""HAT: equations against hand computations, the optimizer state, end-to-end training and bad
arguments (old tasks' outputs frozen bit for bit, per backbone: ``test_backbones.py``)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
from avalanche.models.utils import avalanche_model_adaptation
from avalanche.training import Naive
from hat_test_support import OPTIMIZERS, quiet, tiny_alexnet_12

from avalanche_fgadahat import HAT, HATPlugin
from avalanche_fgadahat.masking import (
    annealed_scale,
    broadcast,
    compensate_embedding_gradient_,
    mask_sparsity_regularizer,
)
from avalanche_fgadahat.models import HATAlexNet, HATMLP, HATResNet18, UntrainedTaskWarning

# Per-backbone checks (old tasks' outputs frozen bit for bit under every optimizer, the
# untrained-task union, mixed-task batches, ...) are in backbone_conformance.py, run for every
# backbone by test_backbones.py.


# ---------------------------------------------------------------- annealing (Eq. 3)
def test_annealing_endpoints_and_midpoint():
    s_max, batches = 400.0, 11
    assert annealed_scale(1, batches, s_max) == pytest.approx(1 / s_max)
    assert annealed_scale(batches, batches, s_max) == pytest.approx(s_max)
    assert annealed_scale(6, batches, s_max) == pytest.approx(1 / s_max + (s_max - 1 / s_max) * 0.5)
    assert all(annealed_scale(b, batches, s_max) > 0 for b in range(1, batches + 1))
    assert annealed_scale(1, 1, s_max) == s_max


def test_plugin_feeds_one_based_batch_index(digits5):
    """The first batch of every epoch sees s = 1/s_max (the reference's is negative)."""
    seen = []

    class Spy(HATPlugin):
        def before_backward(self, strategy, **kwargs):
            seen.append((strategy.clock.train_epoch_iterations, self.gate_scale))
            super().before_backward(strategy, **kwargs)

    bench = digits5
    model = HATMLP(64, (16,))
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                     train_mb_size=128, train_epochs=2, evaluator=quiet(), plugins=[Spy()])
    strategy.train(bench.train_stream[0])
    batches = len(strategy.dataloader) if strategy.dataloader else 3
    firsts = [s for b, s in seen if b == 0]
    lasts = [s for b, s in seen if b == max(i for i, _ in seen)]
    assert len(firsts) == 2 and all(s == pytest.approx(1 / 400) for s in firsts)
    assert all(s == pytest.approx(400.0) for s in lasts)
    assert batches >= 1


# ---------------------------------------------------------------- regulariser (Eq. 5)
def test_regularizer_original_against_hand_computation():
    masks = {"a": torch.tensor([0.5, 0.2, 0.9] + [0.1] * 9), "b": torch.tensor([1.0] * 4)}
    cumulative = {"a": torch.tensor([1.0, 0.0, 0.0] + [0.0] * 9), "b": torch.tensor([0.0, 1.0, 0.0, 0.0])}
    reg, sparsity = mask_sparsity_regularizer(masks, cumulative, factor=0.1)
    occ_a, avail_a = 0.2 + 0.9 + 0.9, 11.0
    occ_b, avail_b = 3.0, 3.0
    assert float(reg) == pytest.approx(0.1 * (occ_a + occ_b) / (avail_a + avail_b))
    assert float(sparsity["a"]) == pytest.approx(occ_a / avail_a)
    assert float(sparsity["b"]) == 0.0  # at most 10 free units → 0


def test_regularizer_keeps_the_masks_dtype():
    """A float64 network's masks give a float64 regulariser and ``R_l`` (its per-layer sums were
    float32, and ``index_add_`` refused the float64 masks)."""
    masks = {"a": torch.tensor([0.5, 0.2, 0.9] + [0.1] * 9, dtype=torch.float64)}
    cumulative = {"a": torch.tensor([1.0, 0.0, 0.0] + [0.0] * 9, dtype=torch.float64)}
    reg, sparsity = mask_sparsity_regularizer(masks, cumulative, factor=0.1)
    assert reg.dtype == sparsity["a"].dtype == torch.float64
    assert float(sparsity["a"]) == pytest.approx((0.2 + 0.9 + 0.9) / 11.0, rel=1e-15)


def test_regularizer_is_zero_when_at_most_ten_units_free():
    masks = {"a": torch.ones(10)}
    reg, _ = mask_sparsity_regularizer(masks, {"a": torch.zeros(10)}, factor=0.1)
    assert float(reg) == 0.0


def test_regularizer_cross_adds_overlap_term_once():
    masks = {"a": torch.tensor([0.5] * 14)}
    cumulative = {"a": torch.tensor([1.0, 1.0] + [0.0] * 12)}
    reg, _ = mask_sparsity_regularizer(masks, cumulative, factor=0.2, mode="cross")
    original = (0.5 * 12) / 12
    overlap = (0.5 * 2) / 2
    assert float(reg) == pytest.approx(0.2 * (original + overlap))
    masks = {"a": torch.full((14,), 0.3, requires_grad=True)}
    reg, _ = mask_sparsity_regularizer(masks, cumulative, factor=0.2, mode="cross")
    reg.backward()
    assert masks["a"].grad is not None and reg.dim() == 0


# ---------------------------------------------------------------- compensation (Eq. 4)
def test_embedding_compensation_against_hand_computation():
    e = torch.tensor([0.3, -2.0, 0.01], requires_grad=True)
    e.grad = torch.tensor([1.0, 2.0, -3.0])
    s, s_max, theta = 2.5, 400.0, 50.0
    compensate_embedding_gradient_(e, s, s_max, theta)
    expected = [
        g * (s_max / s) * (math.cosh(max(-theta, min(theta, s * v))) + 1) / (math.cosh(v) + 1)
        for g, v in zip([1.0, 2.0, -3.0], [0.3, -2.0, 0.01])
    ]
    assert e.grad.tolist() == pytest.approx(expected, rel=1e-5)
    e2 = torch.tensor([3.0], requires_grad=True)
    e2.grad = torch.tensor([1.0])
    compensate_embedding_gradient_(e2, 400.0, 400.0, 50.0)  # s·e = 1200 clamped to 50
    assert float(e2.grad) == pytest.approx((math.cosh(50) + 1) / (math.cosh(3.0) + 1), rel=1e-5)


# ---------------------------------------------------------------- broadcast
def test_broadcast_linear_first_layer_and_aggregations():
    model = HATMLP(3, (2, 2))
    first, second = model.param_layouts
    measure = {"fc0": torch.tensor([0.2, 0.7]), "fc1": torch.tensor([0.5, 0.1])}
    w, b = broadcast(first, measure, "min")
    assert torch.equal(w, torch.tensor([[0.2] * 3, [0.7] * 3]))
    assert torch.equal(b, measure["fc0"])
    for agg, fn in {"min": min, "max": max, "mean": lambda a, c: (a + c) / 2}.items():
        w, b = broadcast(second, measure, agg)
        expected = [[fn(o, i) for i in [0.2, 0.7]] for o in [0.5, 0.1]]
        assert torch.allclose(w, torch.tensor(expected))
        assert torch.equal(b, measure["fc1"])


def test_broadcast_conv_kernels_and_flatten():
    model = tiny_alexnet_12()
    conv0, conv1, fc0 = model.param_layouts
    measure = {"conv0": torch.tensor([1.0, 0.0]), "conv1": torch.tensor([0.3, 1.0, 0.6]),
               "fc0": torch.tensor([0.9, 0.1, 1.0, 0.4])}
    w, _ = broadcast(conv1, measure, "min")
    assert w.shape == conv1.weight.shape  # (3, 2, 2, 2)
    for i in range(3):
        for j in range(2):
            assert torch.all(w[i, j] == min(measure["conv1"][i], measure["conv0"][j]))
    # flatten: conv1 output is 3 channels × 2 × 2 after pooling; channel-major order
    assert fc0.in_repeat == 4 and fc0.weight.shape == (4, 12)
    w, b = broadcast(fc0, measure, "min")
    for i in range(4):
        for col in range(12):
            channel = col // 4
            assert w[i, col] == min(measure["fc0"][i], measure["conv1"][channel])
    assert torch.equal(b, measure["fc0"])


def test_broadcast_resnet_shortcut_between_block_input_and_output():
    model = HATResNet18((3, 16, 16), widths=(4, 8, 8, 8))
    shortcut = next(l for l in model.param_layouts if l.name.endswith("shortcut"))
    assert shortcut.in_key == "layer1_1_conv2" and shortcut.out_key == "layer2_0_conv2"
    measure = {k: torch.rand(n) for k, n in model.unit_sizes.items()}
    w, b = broadcast(shortcut, measure, "min")
    assert b is None
    expected = torch.minimum(measure["layer2_0_conv2"].view(-1, 1), measure["layer1_1_conv2"].view(1, -1))
    assert torch.equal(w[:, :, 0, 0], expected)


# ---------------------------------------------------------------- gradient masking
def test_hat_gradient_rates_against_hand_computation():
    torch.manual_seed(0)
    model = HATMLP(3, (2, 2))
    plugin = HATPlugin()
    with torch.no_grad():
        model.unit_state["fc0"].cumulative.copy_(torch.tensor([1.0, 0.0]))
        model.unit_state["fc1"].cumulative.copy_(torch.tensor([0.0, 1.0]))
    plugin.engine.prepare(model)
    for layout in model.param_layouts:
        layout.weight.grad = torch.ones_like(layout.weight)
        layout.bias.grad = torch.ones_like(layout.bias)
    plugin.engine.adjust_(plugin.signals)
    fc0, fc1 = model.fc
    assert torch.equal(fc0.weight.grad, torch.tensor([[0.0] * 3, [1.0] * 3]))
    assert torch.equal(fc0.bias.grad, torch.tensor([0.0, 1.0]))
    # fc1: 1 − min(M1[i], M0[j]); M1 = [0, 1], M0 = [1, 0]
    assert torch.equal(fc1.weight.grad, torch.tensor([[1.0, 1.0], [0.0, 1.0]]))
    assert torch.equal(fc1.bias.grad, torch.tensor([1.0, 0.0]))
    # capacity under "hat" = fraction of free parameters
    assert plugin.network_capacity() == pytest.approx((3 + 1 + 3 + 1) / (6 + 2 + 4 + 2))


@pytest.mark.parametrize("mode,expected", [("hat_const_1", 1.0), ("hat_const_alpha", 0.25)])
def test_hat_variant_rates(mode, expected):
    model = HATMLP(3, (2,))
    plugin = HATPlugin(adjustment_mode=mode, alpha=0.25)
    with torch.no_grad():
        model.unit_state["fc0"].cumulative.fill_(1.0)
    plugin.engine.prepare(model)
    model.fc[0].weight.grad = torch.ones(2, 3)
    model.fc[0].bias.grad = torch.ones(2)
    plugin.engine.adjust_(plugin.signals)
    assert torch.allclose(model.fc[0].weight.grad, torch.full((2, 3), expected))


def test_hat_random_rates_are_fresh_and_bounded():
    model = HATMLP(3, (50,))
    plugin = HATPlugin(adjustment_mode="hat_random")
    with torch.no_grad():
        model.unit_state["fc0"].cumulative[:25] = 1.0
    plugin.engine.prepare(model)
    grads = []
    for _ in range(2):
        model.fc[0].weight.grad = torch.ones(50, 3)
        model.fc[0].bias.grad = torch.ones(50)
        plugin.engine.adjust_(plugin.signals)
        grads.append(model.fc[0].weight.grad.clone())
    assert torch.all(grads[0][25:] == 1.0)
    assert torch.all((grads[0][:25] >= 0) & (grads[0][:25] <= 1))
    assert not torch.equal(grads[0][:25], grads[1][:25])


# ---------------------------------------------------------------- task embedding initialisation
def test_task_embeddings_are_drawn_on_the_cpu_generator_and_last_keeps_them():
    """Drawn on the CPU's global generator and copied to the model's device, so one seed gives
    the same embeddings on every device (``benchmarks/device_check.py`` checks a GPU)."""
    model = HATMLP(64, (32, 16)).double()
    torch.manual_seed(7)
    model.initialize_task_embeddings("U-11")
    torch.manual_seed(7)
    expected = torch.empty(48, dtype=torch.float64).uniform_(-1.0, 1.0)
    assert torch.equal(model.task_embeddings.detach(), expected)
    model.initialize_task_embeddings("last")
    assert torch.equal(model.task_embeddings.detach(), expected)


# ---------------------------------------------------------------- conv mask folded into the kernel
def _alexnet_pass(model, x, embedding, scale, train):
    """Logits, and the gradients of the weights and of the embedding, in train or eval mode."""
    model.train(train)
    model.zero_grad()
    e = embedding.clone().requires_grad_(True)
    masks = model.split_units(torch.sigmoid(scale * e))
    out = model.classifier(model.forward_features(x, masks, 0), 0)
    (out * torch.linspace(-1, 1, out.shape[1])).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, e.grad


@pytest.mark.parametrize("scale", [0.5, 400.0])
def test_conv_mask_folded_into_kernel_equals_masked_feature_map(scale, first_experience):
    """Training folds the mask into the conv kernel, conv_{W·m,b·m}(x) = conv(x)·m; eval mode
    masks the feature map. Same logits and same gradients (weights, biases, embedding)."""
    torch.manual_seed(0)
    model = HATAlexNet((3, 20, 20), conv_channels=(8, 16, 16), kernel_sizes=(3, 3, 2), fc_sizes=(32,),
                       conv_dropout=0.0, fc_dropout=0.0)
    avalanche_model_adaptation(model, first_experience)
    x = torch.randn(5, 3, 20, 20)
    embedding = torch.randn(model.task_embeddings.numel()) * 0.05
    folded = _alexnet_pass(model, x, embedding, scale, train=True)
    masked_map = _alexnet_pass(model, x, embedding, scale, train=False)
    torch.testing.assert_close(folded[0], masked_map[0], rtol=1e-5, atol=1e-6)
    assert folded[1].keys() == masked_map[1].keys() and "body.convs.0.weight" in folded[1]
    for name in folded[1]:
        torch.testing.assert_close(folded[1][name], masked_map[1][name], rtol=1e-4, atol=1e-6, msg=name)
    torch.testing.assert_close(folded[2], masked_map[2], rtol=1e-4, atol=1e-6)
    assert float(folded[2].abs().max()) > 0  # the embedding gradient flows through the folded kernel


# ---------------------------------------------------------------- optimizer state
@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_seeded_adam_second_moments_change_no_update(optimizer, monkeypatch, digits5):
    """Adam's v seeded at 1e30 on frozen weights (a CPU speed fix): every parameter after three
    tasks is bit-identical to a run without the seeding, and the seeding did happen."""
    import avalanche_fgadahat.plugins.hat as hat_module
    from avalanche_fgadahat.plugins.optimizer_state import seed_frozen_second_moments_

    bench = digits5
    states, seeded = [], []

    def counting(optimizer_, rates):
        seeded.append(seed_frozen_second_moments_(optimizer_, rates))
        return seeded[-1]

    for seeding in (counting, lambda optimizer_, rates: 0):
        monkeypatch.setattr(hat_module, "seed_frozen_second_moments_", seeding)
        torch.manual_seed(0)
        model = HATMLP(64, (32, 32))
        strategy = HAT(model=model, optimizer=OPTIMIZERS[optimizer](model.parameters()),
                       train_mb_size=64, train_epochs=2, evaluator=quiet())
        for exp in bench.train_stream[:3]:
            strategy.train(exp)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    assert seeded == [0, 4, 4]  # nothing frozen at the first task; then both masked layers (weight, bias)
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_seeded_second_moments_only_where_frozen_and_only_for_plain_cpu_adam():
    from avalanche_fgadahat.plugins.optimizer_state import FROZEN_SECOND_MOMENT, seed_frozen_second_moments_

    weight, bias = torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(3))
    rates = [(weight, torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])), (bias, torch.tensor([1.0, 1.0, 1.0]))]
    adam = torch.optim.Adam([weight, bias], lr=1e-3)
    assert seed_frozen_second_moments_(adam, rates) == 1  # the bias has nothing frozen
    state = adam.state[weight]
    assert torch.equal(state["exp_avg_sq"], torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]) * FROZEN_SECOND_MOMENT)
    assert torch.equal(state["exp_avg"], torch.zeros(3, 2)) and float(state["step"]) == 0.0
    assert bias not in adam.state
    assert seed_frozen_second_moments_(adam, rates) == 0  # existing state is never overwritten
    for other in (torch.optim.SGD([weight], lr=0.1), torch.optim.Adam([weight], amsgrad=True),
                  torch.optim.Adam([weight], fused=True)):
        assert seed_frozen_second_moments_(other, rates) == 0 and not other.state


def test_naive_with_plugin_equals_hat_strategy(digits5):
    bench = digits5
    outs = []
    for use_plugin in (False, True):
        torch.manual_seed(1)
        model = HATMLP(64, (16, 16))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        if use_plugin:
            strategy = Naive(model=model, optimizer=opt, train_mb_size=64, train_epochs=1, evaluator=quiet(), plugins=[HATPlugin()])
        else:
            strategy = HAT(model=model, optimizer=opt, train_mb_size=64, train_epochs=1, evaluator=quiet())
        for exp in bench.train_stream[:2]:
            torch.manual_seed(2)
            strategy.train(exp)
        outs.append({k: v.clone() for k, v in model.state_dict().items()})
    assert outs[0].keys() == outs[1].keys()
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


# ---------------------------------------------------------------- end to end with Avalanche evaluation
def test_end_to_end_with_evaluation_plugin_and_untrained_tasks(digits5):
    torch.manual_seed(0)
    bench = digits5
    model = HATMLP(64, (64, 64))
    evaluator = quiet(accuracy_metrics(experience=True, stream=True), forgetting_metrics(experience=True, stream=True))
    strategy = HAT(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                   train_mb_size=32, train_epochs=5, eval_mb_size=256, evaluator=evaluator)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for exp in bench.train_stream:
            strategy.train(exp)
            results = strategy.eval(bench.test_stream)
    untrained = [w for w in caught if issubclass(w.category, UntrainedTaskWarning)]
    assert len(untrained) == 4  # tasks 1..4 warned once each, before they were trained
    accs = [results[f"Top1_Acc_Exp/eval_phase/test_stream/Task{t:03d}/Exp{t:03d}"] for t in range(5)]
    assert sum(accs) / 5 > 0.8 and min(accs) > 0.55, accs  # 2-class tasks: chance is 0.5
    assert results["StreamForgetting/eval_phase/test_stream"] == pytest.approx(0.0, abs=1e-9)
    sd = model.state_dict()
    assert sd["unit_state.fc0.task_masks"].shape == (5, 64)
    assert torch.equal(sd["unit_state.fc0.cumulative"], sd["unit_state.fc0.task_masks"].amax(0))
    assert torch.equal(sd["unit_state.fc0.summative"], sd["unit_state.fc0.task_masks"].sum(0))
    assert model.trained_tasks() == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("kwargs,needle", [
    ({"adjustment_mode": "hta"}, "adjustment_mode='hta'"),
    ({"s_max": 0}, "s_max"),
    ({"s_max": -3.0}, "s_max"),
    ({"clamp_threshold": 0}, "clamp_threshold"),
    ({"mask_sparsity_reg_mode": "crossed"}, "'original', 'cross'"),
    ({"task_embedding_init_mode": "zeros"}, "N01"),
    ({"mask_sparsity_reg_factor": -1}, "mask_sparsity_reg_factor"),
])
def test_bad_hyperparameters_name_argument_and_choices(kwargs, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        HATPlugin(**kwargs)


def test_model_without_masked_layers_is_refused():
    model = torch.nn.Linear(4, 2)
    with pytest.raises(TypeError, match="no layer HAT can mask besides its head.*HATMLP, HATAlexNet, HATResNet18"):
        HAT(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_unsupported_layer_fails_loudly():
    class WithNorm(HATMLP):
        def __init__(self):
            super().__init__(4, (3,))
            self.norm = torch.nn.LayerNorm(3)
            self._check_supported_layers()

    with pytest.raises(TypeError, match="norm"):
        WithNorm()

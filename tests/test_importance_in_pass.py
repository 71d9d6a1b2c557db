"""FG-AdaHAT's in-pass importances against hand computations on the same tensors.

Every type is recomputed here with explicit per-unit Python loops over the weights,
gradients and activations of one real training step (forward, backward, SGD step), from
a hand-written list of which weights feed and read each unit — independent of
``importance/wiring.py`` — for an MLP (two heads, the second task's is read), a shared-head
MLP, a small HATAlexNet (conv kernels, conv→linear flatten) and a small ResNet-18
(shortcut convs).
"""

from __future__ import annotations

import math

import pytest
import torch
from avalanche.models.utils import avalanche_model_adaptation
from hat_test_support import one_training_step

from avalanche_fgadahat.importance import IMPORTANCE_TYPES, IN_PASS_TYPES, REFERENCE_IMPORTANCE_TYPES
from avalanche_fgadahat.models import HATAlexNet, HATMLP, HATResNet18

IN_PASS = list(IN_PASS_TYPES)


def test_all_in_pass_types_registered_with_reference_names():
    assert len(IN_PASS) == 13
    assert set(IN_PASS) <= set(IMPORTANCE_TYPES)
    assert set(IN_PASS) <= set(REFERENCE_IMPORTANCE_TYPES)
    assert len(REFERENCE_IMPORTANCE_TYPES) == len(set(REFERENCE_IMPORTANCE_TYPES)) == 23
    needs = {n for n in IN_PASS if IMPORTANCE_TYPES[n].needs_activations}
    assert needs == {n for n in IN_PASS if "activation" in n or n == "cbp_adaptive_contribution"}
    assert IMPORTANCE_TYPES["input_weight_abs_sum_x_activation_abs"].short_name == "ICU"
    assert all(IMPORTANCE_TYPES[n].extra_passes == "none" for n in IN_PASS)


# ---------------------------------------------------------------- one real step (one_training_step) by hand
def _abs_sum(values):
    return sum(abs(v) for v in values)


def _sq_sum(values):
    return sum(v * v for v in values)


def _hand(ctx, wiring, name):
    """Per-unit hand computation. ``wiring[key] = (inputs, outputs)``: ``inputs`` are
    parameters whose row ``i`` feeds unit ``i``; ``outputs`` are ``(param, columns(i))``
    giving the flat column indices (of ``param.flatten(2)`` viewed ``(out, in, k)``)
    reading unit ``i``."""
    out = {}
    for key, (inputs, outputs) in wiring.items():
        n = ctx.model.unit_sizes[key]
        values = []
        for i in range(n):
            def rows(kind):
                vals = []
                for p in inputs:
                    t = p.detach() if kind == "w" else p.grad
                    vals += t[i].flatten().tolist()
                return vals

            def cols(kind):
                vals = []
                for p, columns in outputs:
                    t = p.detach() if kind == "w" else p.grad
                    t = t.reshape(t.shape[0], t.shape[1], -1)
                    for c in columns(i):
                        vals += t[:, c, :].flatten().tolist()
                return vals

            act = ctx.activations.get(key)
            a = None
            if act is not None:
                a = act[:, i].abs().mean().item() if act.dim() == 2 else _abs_sum(act[:, i].flatten().tolist()) / act[:, i].numel()
            w_in, w_out = _abs_sum(rows("w")), _abs_sum(cols("w"))
            formulas = {
                "input_weight_abs_sum": lambda: w_in,
                "output_weight_abs_sum": lambda: w_out,
                "input_weight_gradient_abs_sum": lambda: _abs_sum(rows("g")),
                "output_weight_gradient_abs_sum": lambda: _abs_sum(cols("g")),
                "activation_abs": lambda: a,
                "input_weight_abs_sum_x_activation_abs": lambda: w_in * a,
                "output_weight_abs_sum_x_activation_abs": lambda: w_out * a,
                "input_weight_gradient_square_sum": lambda: _sq_sum(rows("g")),
                "output_weight_gradient_square_sum": lambda: _sq_sum(cols("g")),
                "input_weight_gradient_square_sum_x_activation_abs": lambda: _sq_sum(rows("g")) * a,
                "output_weight_gradient_square_sum_x_activation_abs": lambda: _sq_sum(cols("g")) * a,
                "cbp_adaptation": lambda: 1.0 / w_in,
                "cbp_adaptive_contribution": lambda: w_out * a / w_in,
            }
            values.append(formulas[name]())
        out[key] = torch.tensor(values, dtype=torch.float64)
    return out


def _check_all_types(ctx, wiring):
    for name in IN_PASS:
        got = IMPORTANCE_TYPES[name].function(ctx)
        want = _hand(ctx, wiring, name)
        assert set(got) == set(ctx.model.unit_sizes), name
        for key in want:
            assert got[key].shape == (ctx.model.unit_sizes[key],)
            assert got[key].grad_fn is None and not got[key].requires_grad
            torch.testing.assert_close(got[key].double(), want[key], rtol=2e-5, atol=1e-10, msg=f"{name} {key}")


def _same(i):
    return [i]


# ---------------------------------------------------------------- MLP
def test_mlp_two_heads_reads_current_task_head(digits5):
    torch.manual_seed(0)
    model = HATMLP(64, (7, 5))
    for exp in digits5.train_stream[:2]:
        avalanche_model_adaptation(model, exp)
    x, y = torch.rand(9, 64), torch.randint(0, 2, (9,))
    before = [p.detach().clone() for p in model.fc.parameters()]
    # hand-recompute the activations of the forward pass (pre-step weights)
    masks = {k: torch.sigmoid(3.0 * e.detach()) for k, e in model.task_embedding.items()}
    h0 = torch.relu(masks["fc0"] * (x @ before[0].T + before[1]))
    h1 = torch.relu(masks["fc1"] * (h0 @ before[2].T + before[3]))
    ctx = one_training_step(model, x, y, task=1)
    torch.testing.assert_close(ctx.activations["fc0"], h0)
    torch.testing.assert_close(ctx.activations["fc1"], h1)
    head1 = model.classifier.classifiers["1"].classifier
    head0 = model.classifier.classifiers["0"].classifier
    assert head1.weight.grad is not None and head0.weight.grad is None
    wiring = {
        "fc0": ([model.fc[0].weight], [(model.fc[1].weight, _same)]),
        "fc1": ([model.fc[1].weight], [(head1.weight, _same)]),
    }
    _check_all_types(ctx, wiring)
    # the weights read are the post-step ones
    assert not torch.equal(model.fc[0].weight.detach(), before[0])


def test_mlp_shared_head(digits5):
    torch.manual_seed(0)
    model = HATMLP(64, (6, 4), multihead=False)
    avalanche_model_adaptation(model, digits5.train_stream[0])
    ctx = one_training_step(model, torch.rand(5, 64), torch.randint(0, 2, (5,)), task=0)
    head = model.classifier.classifier
    wiring = {
        "fc0": ([model.fc[0].weight], [(model.fc[1].weight, _same)]),
        "fc1": ([model.fc[1].weight], [(head.weight, _same)]),
    }
    _check_all_types(ctx, wiring)


def test_cbp_adaptation_of_dead_unit_is_finite(digits5):
    torch.manual_seed(0)
    model = HATMLP(64, (4, 3))
    ctx = one_training_step(model, torch.rand(5, 64), torch.randint(0, 2, (5,)), task=0)
    with torch.no_grad():
        model.fc[0].weight[2].zero_()
    value = IMPORTANCE_TYPES["cbp_adaptation"].function(ctx)["fc0"]
    assert torch.isfinite(value).all() and value[2] > 1e30


# ---------------------------------------------------------------- conv net with flatten
def test_alexnet_conv_kernels_and_flatten():
    torch.manual_seed(0)
    model = HATAlexNet(
        (2, 12, 12), conv_channels=(3, 4), kernel_sizes=(3, 2), fc_sizes=(5, 4), conv_dropout=0.0, fc_dropout=0.0
    )
    # after conv1 + pool: 4 channels of 2×2 → fc0 reads 4 consecutive columns per channel
    assert model.fcs[0].in_features == 16
    ctx = one_training_step(model, torch.rand(6, 2, 12, 12), torch.randint(0, 2, (6,)), task=0)
    assert ctx.activations["conv0"].dim() == 4
    head = model.classifier.classifiers["0"].classifier

    def flat(c):
        return list(range(4 * c, 4 * c + 4))

    wiring = {
        "conv0": ([model.convs[0].weight], [(model.convs[1].weight, _same)]),
        "conv1": ([model.convs[1].weight], [(model.fcs[0].weight, flat)]),
        "fc0": ([model.fcs[0].weight], [(model.fcs[1].weight, _same)]),
        "fc1": ([model.fcs[1].weight], [(head.weight, _same)]),
    }
    _check_all_types(ctx, wiring)


# ---------------------------------------------------------------- ResNet shortcuts
def test_resnet_shortcut_weights_count_as_input_and_output_weights():
    torch.manual_seed(0)
    model = HATResNet18((3, 8, 8), small_input_stem=True, widths=(2, 3, 3, 4))
    ctx = one_training_step(model, torch.rand(3, 3, 8, 8), torch.randint(0, 2, (3,)), task=0)
    blocks = model.blocks
    head = model.classifier.classifiers["0"].classifier
    assert blocks[2].shortcut is not None and blocks[1].shortcut is None
    # block 1's output is read by block 2's conv1 and its projection shortcut;
    # block 2's output is fed by its conv2 and its shortcut
    wiring = {
        "layer1_1_conv2": (
            [blocks[1].conv2.weight],
            [(blocks[2].conv1.weight, _same), (blocks[2].shortcut.weight, _same)],
        ),
        "layer2_0_conv2": ([blocks[2].conv2.weight, blocks[2].shortcut.weight], [(blocks[3].conv1.weight, _same)]),
        "layer4_1_conv2": ([blocks[7].conv2.weight], [(head.weight, _same)]),
        "conv1": ([model.conv1.weight], [(blocks[0].conv1.weight, _same)]),
    }
    for name in ("output_weight_abs_sum", "input_weight_gradient_abs_sum", "cbp_adaptive_contribution"):
        got = IMPORTANCE_TYPES[name].function(ctx)
        want = _hand(ctx, wiring, name)
        for key in wiring:
            torch.testing.assert_close(got[key].double(), want[key], rtol=2e-5, atol=1e-10)
    for name in IN_PASS:
        got = IMPORTANCE_TYPES[name].function(ctx)
        assert all(got[k].shape == (n,) and torch.isfinite(got[k]).all() for k, n in model.unit_sizes.items())


def test_missing_activations_is_a_clear_error():
    torch.manual_seed(0)
    model = HATMLP(64, (4, 3))
    ctx = one_training_step(model, torch.rand(5, 64), torch.randint(0, 2, (5,)), task=0)
    ctx.activations = {}
    with pytest.raises(ValueError, match="record_activations"):
        IMPORTANCE_TYPES["activation_abs"].function(ctx)
    assert math.isfinite(float(IMPORTANCE_TYPES["input_weight_abs_sum"].function(ctx)["fc0"].sum()))

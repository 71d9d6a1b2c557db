"""HATMLP, HATAlexNet and HATResNet18 as builders on the conversion (issue 12, part 5).

Each network is now a plain torch network converted by the same rewrite as ``to_hat``. These
tests hold them to the hand-written classes they replace (frozen in ``legacy_backbones.py``):
the same initial values from the same seed, bit-identical outputs and gradients in training
and evaluation, bit-identical states after three tasks of HAT and FG-AdaHAT training; and a
model of the earlier classes (pickled by ``data/legacy_models/make_fixtures.py`` at commit
f5e1c8a, as an Avalanche checkpoint pickles it) loads, predicts as it did and trains on.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hat_test_support import digits_benchmark, quiet, stream_inputs
from legacy_backbones import LegacyHATAlexNet, LegacyHATMLP, LegacyHATResNet18

from avalanche_fgadahat import HAT, FGAdaHAT, set_seed
from avalanche_fgadahat.models import HATAlexNet, HATMLP, HATResNet18, to_hat
from avalanche_fgadahat.models.builders import BuiltHATModel

LEGACY_DIR = Path(__file__).parent / "data" / "legacy_models"

#: name → (new class, legacy class, kwargs, input shape)
CASES = {
    "mlp": (HATMLP, LegacyHATMLP, dict(input_size=64, hidden_sizes=(16, 12), dropout=0.2), (64,)),
    "mlp_shared_head": (HATMLP, LegacyHATMLP, dict(input_size=64, hidden_sizes=(16,), multihead=False), (64,)),
    "alexnet": (HATAlexNet, LegacyHATAlexNet, dict(input_shape=(1, 8, 8), conv_channels=(4, 6), kernel_sizes=(3, 2),
                                                   fc_sizes=(16,)), (1, 8, 8)),
    "alexnet_3_convs": (HATAlexNet, LegacyHATAlexNet, dict(input_shape=(1, 16, 16), conv_channels=(3, 4, 5),
                                                           kernel_sizes=(3, 2, 2), fc_sizes=(8, 8)), (1, 16, 16)),
    "resnet": (HATResNet18, LegacyHATResNet18, dict(input_shape=(1, 8, 8), widths=(4, 4, 8, 8),
                                                    small_input_stem=True), (1, 8, 8)),
    "resnet_bn_torchvision_stem": (HATResNet18, LegacyHATResNet18, dict(input_shape=(1, 16, 16), widths=(4, 4, 8, 8),
                                                                        batch_norm="per_task"), (1, 16, 16)),
}


def _pair(name: str, seed: int = 3):
    new_cls, legacy_cls, kwargs, shape = CASES[name]
    set_seed(seed)
    legacy = legacy_cls(**kwargs)
    set_seed(seed)
    new = new_cls(**kwargs)
    return new, legacy, shape


def _values(model) -> list[tuple[str, torch.Tensor]]:
    return [(k.removeprefix("body."), v) for k, v in model.state_dict().items()]


def _assert_same_values(new, legacy) -> None:
    new_values, legacy_values = _values(new), _values(legacy)
    assert [k for k, _ in new_values] == [k for k, _ in legacy_values]
    different = [k for (k, a), (_, b) in zip(new_values, legacy_values) if not torch.equal(a, b)]
    assert not different, different


@pytest.mark.parametrize("name", CASES)
def test_same_seed_same_initial_values_names_and_parameter_order(name):
    new, legacy, _ = _pair(name)
    assert isinstance(new, BuiltHATModel) and new.unit_keys == legacy.unit_keys
    assert new.unit_sizes == legacy.unit_sizes
    _assert_same_values(new, legacy)
    assert [p.shape for p in new.parameters()] == [p.shape for p in legacy.parameters()]
    assert [(l.name, l.out_key, l.in_key, l.in_repeat) for l in new.param_layouts] == [
        (l.name, l.out_key, l.in_key, l.in_repeat) for l in legacy.param_layouts]


def _train_forward_backward(model, x, y, task, scale):
    model.train()
    step = model.begin_training(task, record_activations=True)
    step.gate_scale = scale
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # the same dropout draws
    logits = model(x, task)
    torch.nn.functional.cross_entropy(logits, y).backward()
    activations = {k: a.detach().clone() for k, a in step.activations.items()}
    model.end_training()
    grads = [(n.removeprefix("body."), None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()]
    return logits.detach(), activations, grads


@pytest.mark.parametrize("name", CASES)
def test_outputs_gradients_and_recorded_activations_are_bit_identical(name):
    torch.set_num_threads(1)
    new, legacy, shape = _pair(name)
    x, y = torch.randn(6, *shape), torch.tensor([0, 1, 0, 1, 1, 0])
    for model in (new, legacy):
        model.task_embeddings.data.normal_(generator=torch.Generator().manual_seed(1))
    for scale in (1.0, 400.0):
        got, want = _train_forward_backward(new, x, y, 0, scale), _train_forward_backward(legacy, x, y, 0, scale)
        assert torch.equal(got[0], want[0])
        assert got[1].keys() == want[1].keys() and all(torch.equal(got[1][k], want[1][k]) for k in got[1])
        assert [n for n, _ in got[2]] == [n for n, _ in want[2]]
        for (n, a), (_, b) in zip(got[2], want[2]):
            assert (a is None) == (b is None) and (a is None or torch.equal(a, b)), n
    new.eval(), legacy.eval()
    new.commit_task(0), legacy.commit_task(0)
    assert torch.equal(new(x, 0), legacy(x, 0))  # its stored mask


@pytest.mark.parametrize("strategy_cls", [HAT, FGAdaHAT], ids=["HAT", "FGAdaHAT"])
@pytest.mark.parametrize("name", ["mlp", "alexnet", "resnet_bn_torchvision_stem"])
def test_three_tasks_of_training_end_bit_identical(name, strategy_cls):
    torch.set_num_threads(1)
    new_cls, legacy_cls, kwargs, shape = CASES[name]
    shape = (64,) if shape == (64,) else (1, 8, 8)
    kwargs = {**kwargs, "input_size": 64} if new_cls is HATMLP else {**kwargs, "input_shape": (1, 8, 8)}
    bench = digits_benchmark(5, shape)
    finals = []
    for cls in (new_cls, legacy_cls):
        set_seed(5)
        model = cls(**kwargs)
        strategy = strategy_cls(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
                                train_mb_size=32, train_epochs=1, evaluator=quiet(), device="cpu")
        for experience in bench.train_stream[:3]:
            strategy.train(experience)
        model.eval()
        outputs = [model(stream_inputs(e)[:30], t) for t, e in enumerate(bench.test_stream[:3])]
        finals.append((model, outputs))
    (new, new_out), (legacy, legacy_out) = finals
    _assert_same_values(new, legacy)
    assert all(torch.equal(a, b) for a, b in zip(new_out, legacy_out))


@pytest.mark.parametrize("name", ["hatmlp", "hatalexnet", "hatresnet18"])
def test_a_pickled_model_of_the_hand_written_class_loads_predicts_and_trains_on(name):
    torch.set_num_threads(1)
    saved = torch.load(LEGACY_DIR / f"{name}.pt", weights_only=False)
    model, optimizer = saved["model"], saved["optimizer"]
    assert isinstance(model, BuiltHATModel) and "body" in dict(model.named_children())
    model.eval()
    for task, x in saved["inputs"].items():
        assert torch.equal(model(x, task), saved["outputs"][task])
    in_model = {id(p) for p in model.parameters()}
    assert all(id(p) in in_model for group in optimizer.param_groups for p in group["params"])
    assert {k.removeprefix("body.") for k in model.state_dict()} == set(saved["state_dict"])
    shape = saved["inputs"][0].shape[1:]
    strategy = HAT(model=model, optimizer=optimizer, train_mb_size=32, train_epochs=1, evaluator=quiet(), device="cpu")
    bench = digits_benchmark(5, tuple(shape))
    strategy.train(bench.train_stream[2])
    model.eval()
    for task, x in saved["inputs"].items():  # HAT: the earlier tasks are untouched
        assert torch.equal(model(x, task), saved["outputs"][task])
    assert model.trained_tasks() == [0, 1, 2]


@pytest.mark.parametrize("name", ["hatmlp", "hatalexnet", "hatresnet18"])
def test_a_state_dict_of_the_hand_written_class_loads_into_a_new_model(name):
    saved = torch.load(LEGACY_DIR / f"{name}.pt", weights_only=False)
    fresh = {"hatmlp": lambda: HATMLP(64, (16, 12), dropout=0.1),
             "hatalexnet": lambda: HATAlexNet((1, 8, 8), conv_channels=(4, 6), kernel_sizes=(3, 2), fc_sizes=(16,)),
             "hatresnet18": lambda: HATResNet18((1, 8, 8), widths=(4, 4, 8, 8), small_input_stem=True,
                                                batch_norm="per_task")}[name]()
    assert not any(k.startswith("body.") for k in saved["state_dict"])
    fresh.load_state_dict(saved["state_dict"])
    fresh.eval()
    for task, x in saved["inputs"].items():
        assert torch.equal(fresh(x, task), saved["outputs"][task])


def test_layers_are_reachable_by_their_old_names_and_are_the_body_s():
    mlp = HATMLP(8, (4, 3))
    assert mlp.fc is mlp.body.fc and isinstance(mlp.fc, torch.nn.ModuleList) and mlp.fc[1].out_features == 3
    resnet = HATResNet18((1, 8, 8), widths=(4, 4, 8, 8), small_input_stem=True)
    assert resnet.blocks[2].shortcut is resnet.body.blocks[2].shortcut
    with pytest.raises(AttributeError, match="no_such_layer"):
        mlp.no_such_layer


class _MLPWithHead(torch.nn.Module):
    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.fc, self.dropout, self.head = network.fc, network.dropout, torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.head(HATMLP.NETWORK.forward(self, x))


def test_the_package_networks_and_to_hat_share_one_rewrite():
    """``to_hat`` of HATMLP's plain network with a head gives HATMLP's body code (the unit
    groups named by default) and the same layouts."""
    built = HATMLP(8, (4, 3))
    converted = to_hat(_MLPWithHead(built), head="head")
    def lines(code):  # without the signature (its type annotations differ)
        return [line for line in code.strip().splitlines() if not line.startswith("def ")]
    assert lines(converted.body.code.replace("'fc_0'", "'fc0'").replace("'fc_1'", "'fc1'")) == lines(built.body.code)
    assert [(l.name, l.in_repeat) for l in converted.param_layouts] == [(l.name, l.in_repeat) for l in built.param_layouts]

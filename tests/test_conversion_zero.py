"""A unit switched off must reach the next layer as exactly 0 (issue 12's conversion).

HAT protects the weights that read a unit used by an earlier task; a weight reading a unit that
no earlier task uses is free. That is only safe if an unused unit's value is 0 where the next
layer reads it. An operation after the gate that maps 0 to another value (σ(0) = 0.5,
softplus(0) = log 2, a BatchNorm after the activation, a constant added) would let a later task
change the old tasks' outputs through those free weights. ``to_hat`` puts the gate after such
operations; where it cannot (behind a flatten), it refuses with the reason.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from hat_test_support import digits_benchmark, quiet, stream_inputs

from avalanche_fgadahat import HAT, set_seed
from avalanche_fgadahat.models import ConversionError, to_hat
from avalanche_fgadahat.models.gates import apply_gate


class _AddOne(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(64, 32), nn.Linear(32, 16), nn.Linear(16, 2)

    def forward(self, x):
        return self.head(torch.relu(self.b(torch.relu(self.a(x)) + 1.0)))


class _Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(64, 32), nn.Linear(32, 16), nn.Linear(16, 2)

    def forward(self, x):
        return self.head(torch.relu(self.b(-(2.0 * torch.relu(self.a(x))) / 3.0)))


def _relu_batchnorm():
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.BatchNorm1d(32), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 2))


def _sigmoid():
    return nn.Sequential(nn.Linear(64, 32), nn.Sigmoid(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 2))


def _softplus():
    return nn.Sequential(nn.Linear(64, 32), nn.Softplus(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 2))


#: name → (builder, the operation the first group's gate must follow)
BREAKERS = {
    "relu_then_batchnorm": (_relu_batchnorm, "_2"),  # fx names a Sequential's layer k "_k"
    "sigmoid": (_sigmoid, "_1"),
    "softplus": (_softplus, "_1"),
    "plus_a_constant": (_AddOne, "add"),
}


def _gate_inputs(model) -> list[str]:
    return [str(node.args[0]) for node in model.body.graph.nodes if node.target is apply_gate]


@pytest.mark.parametrize("name", sorted(BREAKERS))
def test_the_gate_follows_an_operation_that_turns_zero_into_another_value(name):
    build, breaker = BREAKERS[name]
    model = to_hat(build(), task_incremental_heads=True)
    assert _gate_inputs(model)[0] == breaker


@pytest.mark.parametrize("name", sorted(BREAKERS))
def test_earlier_task_stays_bit_identical_through_such_an_operation(name):
    torch.set_num_threads(1)
    set_seed(0)
    bench = digits_benchmark(5)
    model = to_hat(BREAKERS[name][0](), task_incremental_heads=True)
    strategy = HAT(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2), train_mb_size=32,
                   train_epochs=2, evaluator=quiet(), device="cpu")
    x = stream_inputs(bench.test_stream[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        strategy.train(bench.train_stream[0])
        model.eval()
        before = model(x, 0)
        strategy.train(bench.train_stream[1])
    model.eval()
    assert torch.equal(model(x, 0), before)


def test_zero_preserving_scalar_operations_pass_units_through():
    model = to_hat(_Scaled(), task_incremental_heads=True)
    layouts = {layout.name: (layout.out_key, layout.in_key) for layout in model.param_layouts}
    assert layouts == {"a": ("a", None), "b": ("b", "a")}
    assert _gate_inputs(model) == ["a", "b"]  # the gates stay right after the layers


class _SigmoidAfterFlatten(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc, self.head = nn.Conv2d(1, 4, 3), nn.Linear(4 * 6 * 6, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.relu(self.fc(torch.sigmoid(torch.relu(self.conv(x)).flatten(1)))))


def test_an_operation_turning_zero_into_another_value_behind_a_flatten_is_refused():
    with pytest.raises(ConversionError, match=r"layer 'fc' reads unit group\(s\) conv through 'sigmoid'.*flatten"):
        to_hat(_SigmoidAfterFlatten())

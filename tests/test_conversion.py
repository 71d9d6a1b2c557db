"""``to_hat``: any traceable network becomes a HAT network (the any-model issue's tests).

1. Conformance: every converted model type passes :class:`BackboneConformance`
   (``MTSimpleMLP``, ``SimpleMLP``, ``SimpleCNN``, ``MTSlimResNet18``, a torchvision ResNet, a
   user's ``nn.Sequential`` with Conv/BatchNorm/Linear, a network with residual additions);
   the real torchvision ``resnet18`` in one structural test.
2. Training on real data: three tasks of Split Digits for each type, with the ``HAT``
   strategy and with ``Naive(plugins=[HATPlugin()])``: every task learns, and the earlier
   tasks' outputs are bit-identical after the later ones (the body's features when the head
   is shared by every task; the full outputs with ``task_incremental_heads=True``).
3. Hand computations on a small converted residual network: its unit groups, layouts and
   forward; AdaHAT's and FG-AdaHAT's rates.
4. Refusals (``docs/bad_input.md`` rows 3e–3r): one test per refused model or layer, each
   matching its message, the user's model left as it was.
5. The optimizer built from the plain model's parameters trains the converted model; the
   converted model's state dict loads into a fresh conversion of a freshly built same model.

The three library bugs these tests found (a converted single head's width; the last unit group's
gate and recording dropped when the head read them; a wrapper reported as control flow) are fixed;
their tests below are regular tests.

Speed: one intra-op thread (module fixture), tiny widths, few samples per class for the
conformance checks, two-class heads for the training runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
import torchvision
from avalanche.core import SupervisedPlugin
from avalanche.models import MTSimpleMLP, MultiHeadClassifier, SimpleCNN, SimpleMLP
from avalanche.models.slim_resnet18 import MTSlimResNet18
from avalanche.training import Naive
from backbone_conformance import BackboneConformance
from hat_test_support import commit_signs, digits_images, quiet, snapshot_state, stream_inputs
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from avalanche_fgadahat import HAT, AdaHATPlugin, FGAdaHAT, FGAdaHATPlugin, HATPlugin, set_seed
from avalanche_fgadahat.models import ConversionError, ConvertedHATModel, UntrainedTaskWarning, to_hat
from avalanche_fgadahat.models.per_task_norm import PerTaskNorm

pytestmark = pytest.mark.filterwarnings("ignore:No loggers specified")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these small networks gain nothing from more, and on a shared
    machine OpenMP threads waiting for each other make every convolution ~20× slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------- the user's networks
class ResidualMLP(nn.Module):
    """fc1 → relu → (fc2 + identity) → relu → (fc3 + proj) → relu → head: an identity residual
    and a projection residual, as a user writes them."""

    def __init__(self, inputs: int = 64, width: int = 16, out: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(inputs, width)
        self.fc2 = nn.Linear(width, width)
        self.fc3 = nn.Linear(width, out)
        self.proj = nn.Linear(width, out)
        self.head = nn.Linear(out, classes)

    def forward(self, x):
        h1 = torch.relu(self.fc1(x.flatten(1)))
        h2 = torch.relu(self.fc2(h1) + h1)
        h3 = torch.relu(self.fc3(h2) + self.proj(h2))
        return self.head(h3)


def user_sequential(classes: int = 10) -> nn.Sequential:
    """A user's own network on the 8×8 digit image: Conv/BatchNorm2d, then Linear/BatchNorm1d."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(4 * 4 * 4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, classes),
    )


def small_torchvision_resnet(classes: int = 10) -> ResNet:
    """torchvision's ResNet with one BasicBlock per stage (resnet18 has two; it is tested in
    :func:`test_torchvision_resnet18_structure_and_function`)."""
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=classes)


def with_bn_momentum(model: nn.Module, momentum: float) -> nn.Module:
    """``model`` with every BatchNorm's running-statistics momentum set to ``momentum``."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum
    return model


#: name → (plain model builder, one sample's input shape, single head?) for the structure checks
PLAIN_MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], bool]] = {
    "MTSimpleMLP": (lambda: MTSimpleMLP(64, 16), (64,), False),
    "SimpleMLP": (lambda: SimpleMLP(num_classes=10, input_size=64, hidden_size=16, drop_rate=0), (64,), True),
    "SimpleCNN": (lambda: SimpleCNN(num_classes=10), (3, 16, 16), True),
    # MTSlimResNet18's own MultiHeadClassifier starts at nclasses outputs: 2 is Avalanche's default
    "MTSlimResNet18": (lambda: MTSlimResNet18(2, nf=4), (3, 32, 32), False),
    "torchvision_resnet": (small_torchvision_resnet, (3, 16, 16), True),
    "Sequential": (user_sequential, (1, 8, 8), True),
    "ResidualMLP": (ResidualMLP, (64,), True),
}


def plain_forward(model: nn.Module, x: torch.Tensor, task: int) -> torch.Tensor:
    """The plain model's own forward (with the task label when it takes one)."""
    return model(x, task) if isinstance(model, (MTSimpleMLP, MTSlimResNet18)) else model(x)


def labels_of(experience) -> torch.Tensor:
    data = experience.dataset
    return torch.tensor([int(data[i][1]) for i in range(len(data))])


# ---------------------------------------------------------------- 1. conformance
#: samples per class kept in each experience by the conformance checks (fast runs; the
#: NaN-rollback check needs four mini-batches of 32 in a two-class task)
CONFORMANCE_TRAIN_PER_CLASS, CONFORMANCE_TEST_PER_CLASS = 50, 20


class _Converted(BackboneConformance):
    """Conformance of ``to_hat(plain)`` (task-incremental heads for a single-head model)."""

    plain: str

    @property
    def input_shape(self):
        return PLAIN_MODELS[self.plain][1]

    def build(self):
        builder, _, single_head = PLAIN_MODELS[self.plain]
        return to_hat(builder(), task_incremental_heads=single_head)

    def benchmark(self, n_experiences: int = 5):
        return digits_images(n_experiences, self.input_shape, train_per_class=CONFORMANCE_TRAIN_PER_CLASS,
                             test_per_class=CONFORMANCE_TEST_PER_CLASS)


class _SingleHead(_Converted):
    """A single-head model converted with ``task_incremental_heads=True`` (Avalanche's
    ``MultiHeadClassifier``: heads of 2 outputs grown to each task's classes)."""


class _HeadAfterLastActivation(_SingleHead):
    """The head reads the last unit group's activation directly (``ReLU → head``): the gate and
    the recording inserted before the head are part of the body's output."""


class TestConvertedMTSimpleMLP(_Converted):
    plain = "MTSimpleMLP"


class TestConvertedSimpleMLP(_SingleHead):
    plain = "SimpleMLP"


class TestConvertedSimpleCNN(_SingleHead):
    plain = "SimpleCNN"


class TestConvertedMTSlimResNet18(_Converted):
    plain = "MTSlimResNet18"
    buffers_moved_by_training = ("norms.1.running_mean",)  # task 1's own BatchNorm statistics


class TestConvertedTorchvisionResNet(_SingleHead):
    plain = "torchvision_resnet"
    buffers_moved_by_training = ("norms.1.running_mean",)


class TestConvertedSequential(_HeadAfterLastActivation):
    plain = "Sequential"
    buffers_moved_by_training = ("norms.1.running_mean",)


class TestConvertedResidualMLP(_HeadAfterLastActivation):
    plain = "ResidualMLP"


@pytest.mark.parametrize("name", sorted(PLAIN_MODELS))
def test_conversion_keeps_the_function_and_the_parameter_objects(name):
    """Before any task is trained every mask is all ones and task 0's BatchNorm is the user's
    own: the converted model computes exactly what the plain one does; every parameter of the
    plain model is the converted model's (the same object; a BatchNorm's once task 0 is
    adapted), the head's unmasked."""
    builder, shape, _ = PLAIN_MODELS[name]
    torch.manual_seed(0)
    plain = builder().eval()
    model = to_hat(plain).eval()
    assert isinstance(model, ConvertedHATModel)
    for module in model.modules():  # as Avalanche's adaptation to task 0 does
        if isinstance(module, PerTaskNorm):
            module.ensure_tasks_([0])
    own = {id(p) for p in model.parameters()}
    assert all(id(p) in own for p in plain.parameters())
    masked = {id(p) for layout in model.param_layouts for p in (layout.weight, layout.bias) if p is not None}
    assert not masked & {id(p) for p in model.classifier.parameters()}
    x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), pytest.warns(UntrainedTaskWarning):  # all units: no task stored yet
        assert torch.equal(model(x, 0), plain_forward(plain, x, 0))


def test_torchvision_resnet18_structure_and_function():
    """The real torchvision resnet18: 17 unit groups (the stem and the 16 block convs), each
    downsample conv in its block's output group (gated after the residual sum), every
    BatchNorm per task, each block reading the previous block's output group; before training
    it computes exactly what resnet18 computes."""
    torch.manual_seed(0)
    plain = torchvision.models.resnet18(num_classes=10).eval()
    model = to_hat(plain).eval()
    assert model.classifier is plain.fc
    blocks = [f"layer{i}_{j}" for i in range(1, 5) for j in range(2)]
    assert list(model.unit_sizes) == ["conv1"] + [f"{b}_conv{k}" for b in blocks for k in (1, 2)]
    assert [model.unit_sizes[f"{b}_conv2"] for b in blocks] == [64, 64, 128, 128, 256, 256, 512, 512]
    layouts = {layout.name: (layout.out_key, layout.in_key, layout.in_repeat) for layout in model.param_layouts}
    previous = "conv1"
    for b in blocks:
        dotted = b.replace("_", ".")
        assert layouts[f"{dotted}.conv1"] == (f"{b}_conv1", previous, 1)
        assert layouts[f"{dotted}.conv2"] == (f"{b}_conv2", f"{b}_conv1", 1)
        if b.endswith("_0") and b != "layer1_0":
            assert layouts[f"{dotted}.downsample.0"] == (f"{b}_conv2", previous, 1)
        previous = f"{b}_conv2"
    assert len(layouts) == 1 + 16 + 3 and layouts["conv1"] == ("conv1", None, 1)
    norms = [m for m in model.modules() if isinstance(m, PerTaskNorm)]
    assert len(norms) == 1 + 16 + 3
    for norm in norms:
        norm.ensure_tasks_([0])
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), pytest.warns(UntrainedTaskWarning):
        assert torch.equal(model(x, 0), plain(x))


# ---------------------------------------------------------------- 2. training on real data
@dataclass(frozen=True)
class TrainingCase:
    """How one model type is trained on three Split Digits tasks (two classes each)."""

    build: Callable[[], nn.Module]
    shape: tuple[int, ...]
    single_head: bool
    optimizer: Callable
    epochs: int
    batch: int = 16
    train_per_class: int | None = None  # samples of each class kept per task (None: all, ~126)


def _sgd(lr):
    return lambda params: torch.optim.SGD(params, lr=lr, momentum=0.9)


def _adam(lr):
    return lambda params: torch.optim.Adam(params, lr=lr)


# Single-head models get a head of 2 outputs (every task's classes are 0 and 1), shared and
# trained by every task. MTSlimResNet18's BatchNorms track with momentum 0.5: in a few dozen
# steps the default 0.1 leaves running statistics that lag the weights (test-time accuracy at
# chance while the training batches are fitted).
TRAINING_CASES = {
    "MTSimpleMLP": TrainingCase(lambda: MTSimpleMLP(64, 32), (64,), False, _sgd(0.05), 3),
    "SimpleMLP": TrainingCase(lambda: SimpleMLP(num_classes=2, input_size=64, hidden_size=32, drop_rate=0),
                              (64,), True, _sgd(0.05), 5),
    "SimpleCNN": TrainingCase(lambda: SimpleCNN(num_classes=2), (3, 16, 16), True, _adam(5e-3), 3),
    "MTSlimResNet18": TrainingCase(lambda: with_bn_momentum(MTSlimResNet18(2, nf=8), 0.5), (3, 32, 32), False,
                                   _adam(1e-2), 2, train_per_class=80),
    "torchvision_resnet": TrainingCase(lambda: small_torchvision_resnet(2), (3, 16, 16), True, _adam(3e-3), 2, 32),
    "Sequential": TrainingCase(lambda: user_sequential(2), (1, 8, 8), True, _sgd(0.05), 3),
    "ResidualMLP": TrainingCase(lambda: ResidualMLP(64, 64, 32, 2), (64,), True, _sgd(0.02), 5),
}
TRAINING_RUNS = [(name, via) for name in TRAINING_CASES for via in ("HAT", "Naive+HATPlugin")] + [
    (name, "HAT, task_incremental_heads") for name, case in TRAINING_CASES.items() if case.single_head
]
MIN_ACCURACY = 0.75  # two classes per task: chance is 0.5


@pytest.mark.parametrize("name, via", TRAINING_RUNS)
def test_three_tasks_learn_and_earlier_tasks_stay_bit_identical(name, via):
    """Three Split Digits tasks, the plain model given to the strategy (or to ``Naive`` with
    the plugin), which converts it: every task is learnt (test accuracy well above chance
    right after its training) and, under HAT, every earlier task's outputs are bit-identical
    after each later task. A head shared by every task is trained by each of them, so then the
    body's features are compared, and the shared head is checked to have moved."""
    case = TRAINING_CASES[name]
    bench = digits_images(5, case.shape, train_per_class=case.train_per_class)
    set_seed(0)
    plain = case.build()
    given = to_hat(plain, task_incremental_heads=True) if via == "HAT, task_incremental_heads" else plain
    optimizer = case.optimizer(given.parameters())
    settings = dict(train_mb_size=case.batch, train_epochs=case.epochs, evaluator=quiet())
    if via == "Naive+HATPlugin":
        strategy = Naive(model=given, optimizer=optimizer, plugins=[HATPlugin()], **settings)
    else:
        strategy = HAT(model=given, optimizer=optimizer, **settings)
    tests = [(stream_inputs(exp), labels_of(exp)) for exp in bench.test_stream[:3]]
    shared_head = case.single_head and via != "HAT, task_incremental_heads"

    def outputs(model, task):
        x = tests[task][0]
        return model.forward_features(x, model.masks_for_task(task), task) if shared_head else model(x, task)

    reference, first_outputs = {}, None
    for task, experience in enumerate(bench.train_stream[:3]):
        strategy.train(experience)
        model = strategy.model
        assert isinstance(model, ConvertedHATModel) and model.trained_tasks() == list(range(task + 1))
        assert model.param_layouts[0].weight is next(plain.parameters())  # the user's own layer
        model.eval()
        with torch.no_grad():
            x, y = tests[task]
            accuracy = float((model(x, task).argmax(1) == y).float().mean())
            assert accuracy >= MIN_ACCURACY, (task, accuracy)
            reference[task] = outputs(model, task)
            if task == 0:
                first_outputs = model(tests[0][0], 0)
            for old in range(task):
                assert torch.equal(outputs(model, old), reference[old]), f"task {old} changed after task {task}"
    if shared_head:
        with torch.no_grad():
            assert not torch.equal(strategy.model(tests[0][0], 0), first_outputs)  # the shared head moved


# ---------------------------------------------------------------- 3. hand computations
class HandResidual(nn.Module):
    """fc1 (4→3) → relu → [fc2 (3→3) + identity] → relu → [fc3 (3→2) + proj (3→2) of fc1's
    block] → relu → head (2→2): small enough to write every rate by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.fc2 = nn.Linear(3, 3)
        self.fc3 = nn.Linear(3, 2)
        self.proj = nn.Linear(3, 2)
        self.head = nn.Linear(2, 2)

    def forward(self, x):
        h1 = torch.relu(self.fc1(x))
        h2 = torch.relu(self.fc2(h1) + h1)
        h3 = torch.relu(self.fc3(h2) + self.proj(h1))
        return self.head(h3)


#: layer → (unit group of its outputs, unit group feeding its inputs), written by hand: fc2's
#: outputs are gated after the identity sum; fc3 and proj meet at one sum, so share a group;
#: fc3 reads the sum's group fc2, proj reads fc1
HAND_STRUCTURE = {"fc1": ("fc1", None), "fc2": ("fc2", "fc1"), "fc3": ("fc3", "fc2"), "proj": ("fc3", "fc1")}
HAND_MASKS = ({"fc1": [1, 0, 1], "fc2": [1, 1, 0], "fc3": [0, 1]},
              {"fc1": [1, 1, 0], "fc2": [0, 1, 0], "fc3": [1, 1]})
HAND_SPARSITY = {"fc1": 0.2, "fc2": 0.05, "fc3": 0.4}  # R_l of the current batch


def _hand_model() -> tuple[HandResidual, ConvertedHATModel]:
    torch.manual_seed(0)
    plain = HandResidual()
    return plain, to_hat(plain)


def test_residual_unit_groups_layouts_and_forward_against_hand_computation():
    plain, model = _hand_model()
    assert model.unit_sizes == {"fc1": 3, "fc2": 3, "fc3": 2}
    layouts = {layout.name: (layout.out_key, layout.in_key) for layout in model.param_layouts}
    assert layouts == {layer: groups for layer, groups in HAND_STRUCTURE.items()}
    assert all(layout.in_repeat == 1 for layout in model.param_layouts)
    assert model.classifier is plain.head
    # the gates: after fc1, after the identity sum (fc2's group), after the projection sum (fc3's)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(5, 4, generator=generator)
    masks = {k: torch.rand(n, generator=generator) for k, n in model.unit_sizes.items()}
    with torch.no_grad():
        h1 = torch.relu(masks["fc1"] * plain.fc1(x))
        h2 = torch.relu(masks["fc2"] * (plain.fc2(h1) + h1))
        h3 = torch.relu(masks["fc3"] * (plain.fc3(h2) + plain.proj(h1)))
        assert torch.allclose(model.forward_features(x, masks, 0), h3, rtol=0, atol=1e-6)
        off = dict(masks, fc2=torch.zeros(3))  # fc2's group gated off: the identity does not leak
        assert torch.allclose(model.forward_features(x, off, 0),
                              torch.relu(masks["fc3"] * (plain.fc3.bias + plain.proj(h1))), rtol=0, atol=1e-6)


def _adjusted_gradients(plugin, model) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The plugin's rates: its engine applied to all-ones gradients, per layer (weight, bias)."""
    plugin.engine.prepare(model)
    plugin.layer_sparsity = {k: torch.tensor(v) for k, v in HAND_SPARSITY.items()}
    layers = {layer: model.body.get_submodule(layer) for layer in HAND_STRUCTURE}
    for layer in layers.values():
        layer.weight.grad, layer.bias.grad = torch.ones_like(layer.weight), torch.ones_like(layer.bias)
    plugin.engine.adjust_(plugin.signals)
    return {name: (layer.weight.grad.clone(), layer.bias.grad.clone()) for name, layer in layers.items()}


def _expected(model, measure: dict[str, list[float]], rate: Callable[[str, float], float]):
    """``rate(out group, P)`` per weight ``P = min(measure_out[i], measure_in[j])`` (the output
    unit's own for the first layer) and per bias ``P = measure_out[i]``, index by index."""
    expected = {}
    for layer, (out_key, in_key) in HAND_STRUCTURE.items():
        module = model.body.get_submodule(layer)
        rows, cols = module.weight.shape
        weight = [[rate(out_key, measure[out_key][i] if in_key is None else min(measure[out_key][i], measure[in_key][j]))
                   for j in range(cols)] for i in range(rows)]
        bias = [rate(out_key, measure[out_key][i]) for i in range(rows)]
        expected[layer] = (torch.tensor(weight), torch.tensor(bias))
    return expected


def test_adahat_rates_on_a_converted_residual_network_against_hand_computation():
    """AdaHAT: ``a = r_l / (P + r_l)``, ``r_l = α / (ε + R_l)``, ``P`` the summative masks'
    ``min(S_l[i], S_{l−1}[j])`` (the first layer: ``S_l[i]``) — with fc3's group shared by fc3
    (fed by fc2's group) and proj (fed by fc1's)."""
    _, model = _hand_model()
    for task, masks in enumerate(HAND_MASKS):
        commit_signs(model, task, masks)
    summative = {k: [float(a + b) for a, b in zip(HAND_MASKS[0][k], HAND_MASKS[1][k])] for k in HAND_MASKS[0]}
    assert {k: v.tolist() for k, v in model.summative_masks().items()} == summative
    alpha, epsilon = 0.3, 0.1
    plugin = AdaHATPlugin(adjustment_intensity=alpha, epsilon=epsilon)

    def rate(key, p):
        r = alpha / (epsilon + HAND_SPARSITY[key])
        return r / (p + r)

    got = _adjusted_gradients(plugin, model)
    assert plugin.rule.task_position == 3
    for layer, (weight, bias) in _expected(model, summative, rate).items():
        torch.testing.assert_close(got[layer][0], weight, rtol=1e-6, atol=0, msg=layer)
        torch.testing.assert_close(got[layer][1], bias, rtol=1e-6, atol=0, msg=layer)
    assert float(got["proj"][0].min()) < 0.5 and float(got["fc3"][0].max()) == 1.0  # not trivially 1


def test_fgadahat_rates_on_a_converted_residual_network_against_hand_computation():
    """FG-AdaHAT: ``a = α / ((R_l + b_R)·L·P + α)``, ``P = min(I_l[i], I_{l−1}[j])`` of the
    summed importances (the first layer and biases: ``I_l[i]``), ``L = t + b_L``."""
    _, model = _hand_model()
    for task, masks in enumerate(HAND_MASKS):
        commit_signs(model, task, masks)
    importance = {"fc1": [0.5, 1.5, 0.0], "fc2": [2.0, 0.25, 1.0], "fc3": [0.75, 3.0]}
    for key, values in importance.items():
        model.unit_state[key].summed_importance.copy_(torch.tensor(values))
    alpha, b_r, b_l = 0.3, 0.1, 5.0
    plugin = FGAdaHATPlugin(adjustment_intensity=alpha, base_mask_sparsity_reg=b_r, base_linear=b_l)
    linear = 3 + b_l  # t = 3: two tasks stored

    def rate(key, p):
        return alpha / ((HAND_SPARSITY[key] + b_r) * linear * p + alpha)

    got = _adjusted_gradients(plugin, model)
    assert plugin.rule.task_position == 3
    for layer, (weight, bias) in _expected(model, importance, rate).items():
        torch.testing.assert_close(got[layer][0], weight, rtol=1e-5, atol=1e-7, msg=layer)
        torch.testing.assert_close(got[layer][1], bias, rtol=1e-5, atol=1e-7, msg=layer)
    assert float(got["fc2"][1][0]) < 0.2  # not trivially 1


# ---------------------------------------------------------------- 4. refusals
class _Embedding(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.relu(self.fc(self.emb(x))))


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.att = nn.MultiheadAttention(8, 2)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        h = self.fc(x)
        return self.head(self.att(h, h, h)[0])


class _Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.fc2 = nn.Linear(8, 8)
        self.fc2.weight = self.fc1.weight
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class _CalledTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.relu(self.fc(torch.relu(self.fc(x)))))


class _FunctionalParameter(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 8))
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.relu(self.fc(torch.relu(F.linear(x, self.w)))))


class _ControlFlow(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        h = torch.relu(self.fc(x))
        if h.sum() > 0:
            h = h * 2
        return self.head(h)


class _ConcatenatedInput(nn.Module):
    """A layer fed by a unit group concatenated with the raw input."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 4)
        self.fc = nn.Linear(12, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.relu(self.fc(torch.cat([torch.relu(self.a(x)), x], dim=1))))


class _SumOfGroups(nn.Module):
    """A layer fed by the sum of two unit groups, each gated at its own layer."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 4)
        self.b = nn.Linear(8, 4)
        self.fc = nn.Linear(4, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.relu(self.fc(torch.relu(self.a(x)) + torch.relu(self.b(x)))))


#: case → (plain model builder, to_hat keywords, the error's message)
REFUSED = {
    "lstm": (_Recurrent, {}, r"layer 'rnn' \(LSTM\) cannot be converted to HAT: recurrent layers reuse their weights"),
    "multihead_attention": (_Attention, {}, r"layer 'att' \(MultiheadAttention\) cannot be converted to HAT: "
                                            r"attention's projections are functional calls"),
    "embedding": (_Embedding, {}, r"layer 'emb' \(Embedding\) cannot be converted to HAT: an embedding table "
                                  r"has no output units"),
    "layer_norm": (lambda: nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 2)), {},
                   r"layer '1' \(LayerNorm\) cannot be converted to HAT: a LayerNorm mixes all units"),
    "grouped_conv": (lambda: nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)), {},
                     r"layer '0' \(Conv2d\) cannot be converted to HAT: a grouped convolution \(groups=2\)"),
    "tied_weights": (_Tied, {}, r"parameter 'fc2.weight' is the same tensor as 'fc1.weight' \(tied weights\)"),
    "layer_called_twice": (_CalledTwice, {}, r"layer 'fc' is called twice in the forward \(shared weights\)"),
    "functional_call_on_a_parameter": (_FunctionalParameter, {},
                                       r"parameter 'w' is used by a functional call .*use an nn.Linear/nn.Conv2d"),
    "data_dependent_control_flow": (_ControlFlow, {}, r"torch.fx could not trace _ControlFlow.forward .*"
                                                      r"Data-dependent control flow"),
    "concatenation_with_the_input": (_ConcatenatedInput, {}, r"layer 'fc' is fed by a concatenation"),
    "sum_of_two_gated_groups": (_SumOfGroups, {}, r"layer 'fc' is fed by a sum of unit groups .*'a'.*'b'.* "
                                                  r"that no masked layer feeds directly"),
    "batch_norm_refuse": (lambda: nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)),
                          {"batch_norm": "refuse"}, r"layer '1' \(BatchNorm1d\): batch_norm='refuse' was asked"),
    "no_layer_besides_the_head": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), {},
                                  r"Sequential has no layer HAT can mask besides its head"),
}


def _fingerprint(model: nn.Module):
    """Everything of ``model`` a conversion could change: its state (keys and values), its
    modules (names, objects, classes), its parameters (objects) and its mode."""
    return (snapshot_state(model), [(n, id(m), type(m)) for n, m in model.named_modules()],
            [(n, id(p)) for n, p in model.named_parameters()], model.training)


def _unchanged(before, model: nn.Module) -> bool:
    state, modules, params, training = _fingerprint(model)
    return (state.keys() == before[0].keys() and all(torch.equal(state[k], before[0][k]) for k in state)
            and (modules, params, training) == before[1:])


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_model_is_named_and_left_unchanged(case):
    """Each model or layer HAT cannot convert raises a ``ConversionError`` naming it and the
    way out, by ``to_hat`` and by the strategies (which convert a plain model); the user's
    model is as it was."""
    builder, kwargs, match = REFUSED[case]
    torch.manual_seed(0)
    model = builder()
    before = _fingerprint(model)
    with pytest.raises(ConversionError, match=match):
        to_hat(model, **kwargs)
    assert _unchanged(before, model)
    if not kwargs:
        with pytest.raises(ConversionError, match=match):
            HAT(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), evaluator=quiet())
        assert _unchanged(before, model)


WRAPPERS = {"DataParallel": (nn.DataParallel, "DataParallel"), "torch.compile": (torch.compile, "OptimizedModule")}


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_wrapped_plain_model_is_refused_naming_the_wrapper(wrapper):
    """``DataParallel`` and ``torch.compile`` hide the task labels from a converted model:
    refused by the strategies at construction and by the plugin before anything trains (a
    plain template); the wrapper and the model in it are as they were."""
    wrap, kind = WRAPPERS[wrapper]
    torch.manual_seed(0)
    wrapped = wrap(nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 2)))
    before = _fingerprint(wrapped)
    match = (rf"model is a {kind} wrapping a Sequential: Avalanche calls a model that is not a MultiTaskModule "
             r"without task labels, so HAT could not pick its masks")
    with pytest.raises(TypeError, match=match):
        HAT(model=wrapped, optimizer=torch.optim.SGD(wrapped.parameters(), lr=0.1), evaluator=quiet())
    strategy = Naive(model=wrapped, optimizer=torch.optim.SGD(wrapped.parameters(), lr=0.1), plugins=[HATPlugin()],
                     evaluator=quiet())
    with pytest.raises(TypeError, match=match):
        strategy.train(digits_images(5, (64,), train_per_class=10).train_stream[0])
    assert strategy.model is wrapped and _unchanged(before, wrapped)


def test_to_hat_names_a_wrapper_rather_than_control_flow():
    wrapped = nn.DataParallel(nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 2)))
    with pytest.raises(ConversionError) as info:
        to_hat(wrapped)
    assert "DataParallel wrapping a Sequential" in str(info.value), str(info.value)


# ---------------------------------------------------------------- 5. optimizer and state dict
def test_optimizer_built_before_conversion_trains_the_converted_model():
    """``HAT(model=plain, optimizer=Adam(plain.parameters()))``: the strategy's model is the
    conversion, its masked weights the plain model's objects, moved by the optimizer; the task
    embeddings (created by the conversion) reach the optimizer and are trained; task 1's new
    BatchNorm too."""
    starts = []

    class EmbeddingsAtStart(SupervisedPlugin):  # after HAT's plugin draws the task's embeddings
        def before_training_exp(self, strategy, **kwargs):
            starts.append(strategy.model.task_embeddings.detach().clone())

    bench = digits_images(5, (1, 8, 8), train_per_class=40)
    set_seed(0)
    plain = user_sequential(2)
    weights = [layer.weight for layer in (plain[0], plain[5])]
    initial = [w.detach().clone() for w in weights]
    optimizer = torch.optim.Adam(plain.parameters(), lr=1e-2)
    strategy = HAT(model=plain, optimizer=optimizer, train_mb_size=16, train_epochs=1, evaluator=quiet(),
                   plugins=[EmbeddingsAtStart()])
    model = strategy.model
    assert isinstance(model, ConvertedHATModel) and model is not plain
    assert len(model.param_layouts) == 2
    assert all(layout.weight is w for layout, w in zip(model.param_layouts, weights))  # the same objects
    for task in range(2):
        strategy.train(bench.train_stream[task])
        assert strategy.optimizer is optimizer and strategy.model is model
        optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
        assert id(model.task_embeddings) in optimized
        assert not torch.equal(model.task_embeddings.detach(), starts[task])  # trained in this task
        assert all(id(p) in optimized for p in model.parameters())
    assert all(not torch.equal(w.detach(), w0) for w, w0 in zip(weights, initial))
    new_norm = model.body.get_submodule("1").norms["1"]
    assert new_norm is not plain[1] and id(new_norm.weight) in optimized
    assert not torch.equal(new_norm.weight.detach(), torch.ones(4))
    assert model.trained_tasks() == [0, 1]


@pytest.mark.parametrize("name", sorted(PLAIN_MODELS))
def test_state_dict_round_trips_into_a_fresh_conversion_of_a_fresh_model(name):
    """Two tasks trained (the plain model given to ``HAT``), then the converted model's state
    dict loaded into ``to_hat`` of a freshly built model (other initial weights): every key
    and value, and the outputs of both tasks, equal."""
    builder, shape, _ = PLAIN_MODELS[name]
    bench = digits_images(5, shape, train_per_class=16, test_per_class=8)
    set_seed(0)
    plain = builder()
    strategy = HAT(model=plain, optimizer=torch.optim.Adam(plain.parameters(), lr=1e-2), train_mb_size=16,
                   train_epochs=1, evaluator=quiet())
    for experience in bench.train_stream[:2]:
        strategy.train(experience)
    model = strategy.model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    set_seed(1)
    fresh = to_hat(builder())
    assert not torch.equal(fresh.param_layouts[0].weight, model.param_layouts[0].weight)
    fresh.load_state_dict(state)
    loaded = fresh.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    assert fresh.trained_tasks() == [0, 1]
    model.eval()
    fresh.eval()
    with torch.no_grad():
        for task in range(2):
            x = stream_inputs(bench.test_stream[task])
            assert torch.equal(fresh(x, task), model(x, task)), task


# ---------------------------------------------------------------- the bugs, one focused test each
def test_task_incremental_heads_start_at_avalanches_default_width():
    model = to_hat(SimpleMLP(num_classes=10, input_size=64, hidden_size=16), task_incremental_heads=True)
    assert isinstance(model.classifier, MultiHeadClassifier)
    assert model.classifier.classifiers["0"].classifier.out_features == MultiHeadClassifier(16).classifiers[
        "0"].classifier.out_features == 2


class _SumIntoHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 6)
        self.fc2 = nn.Linear(6, 4)
        self.proj = nn.Linear(6, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return self.head(self.fc2(h) + self.proj(h))


GATE_INTO_HEAD = {
    "batch_norm_into_head": (lambda: nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4), nn.BatchNorm1d(4),
                                                   nn.Linear(4, 2)), "2"),
    "residual_sum_into_head": (_SumIntoHead, "fc2"),
}


@pytest.mark.parametrize("case", sorted(GATE_INTO_HEAD))
def test_the_last_unit_group_is_gated_when_the_head_reads_its_gate_point(case):
    """The last group's mask all zero: the features the head reads are zero."""
    builder, key = GATE_INTO_HEAD[case]
    torch.manual_seed(0)
    model = to_hat(builder()).eval()
    for module in model.modules():
        if isinstance(module, PerTaskNorm):
            module.ensure_tasks_([0])
    masks = {k: torch.ones(n) for k, n in model.unit_sizes.items()}
    masks[key] = torch.zeros(model.unit_sizes[key])
    with torch.no_grad():
        features = model.forward_features(torch.rand(3, 8), masks, 0)
    assert torch.equal(features, torch.zeros_like(features))


def test_a_masked_layer_right_before_the_head_is_masked():
    model = to_hat(nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4), nn.Linear(4, 2)))
    assert model.unit_sizes == {"0": 6, "2": 4}


def test_fgadahat_trains_a_sequential_whose_head_follows_its_last_activation():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 2))
    strategy = FGAdaHAT(model=plain, optimizer=torch.optim.Adam(plain.parameters(), lr=1e-2), train_mb_size=32,
                        evaluator=quiet())
    strategy.train(digits_images(5, (64,), train_per_class=20).train_stream[0])
    assert strategy.model.trained_tasks() == [0]

"""Helpers shared by the test modules (plain functions and classes; the fixtures are in
``conftest.py``). Imported as ``from hat_test_support import ...`` (``tests/`` is on the
path, ``pyproject.toml``); never a package named ``tests``, which avalanche-lib installs.

* :func:`quiet`: the one quiet evaluator, an ``EvaluationPlugin`` with no loggers;
* :func:`digits_benchmark`: Split Digits, built once per setting, optionally with the
  images reshaped (``(1, 8, 8)`` for the conv backbones);
* :data:`OPTIMIZERS`: the optimizers the frozen-output checks train with;
* small model builders (:func:`tiny_alexnet_12`, :func:`digits_alexnet`, :func:`digits_resnet`);
* masks by hand (:func:`set_embedding_signs`, :func:`commit_signs`) and one real training
  step as FG-AdaHAT's importances read it (:func:`one_training_step`);
* state snapshots and comparisons (:func:`snapshot_state`, :func:`same_state`,
  :func:`assert_same_state`), the plugins that record the state at the start of an
  experience (:class:`RecordStarts`) and poison a mini-batch (:class:`Poison`), and the
  NaN-loss rollback scenario (:func:`rollback_case`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import pytest
import torch
from avalanche.benchmarks import tensors_benchmark
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import EvaluationPlugin
from torch import nn

from avalanche_fgadahat import set_seed
from avalanche_fgadahat.data import split_digits
from avalanche_fgadahat.importance import StepContext
from avalanche_fgadahat.models import HATAlexNet, HATResNet18

__all__ = [
    "DIGITS_IMAGE",
    "OPTIMIZERS",
    "Poison",
    "RecordStarts",
    "assert_same_state",
    "commit_signs",
    "digits_alexnet",
    "digits_benchmark",
    "digits_resnet",
    "one_training_step",
    "quiet",
    "rollback_case",
    "same_state",
    "set_embedding_signs",
    "snapshot_state",
    "stream_inputs",
    "tiny_alexnet_12",
]

#: Split Digits' 64 features as a one-channel 8×8 image (the conv backbones' input).
DIGITS_IMAGE = (1, 8, 8)


# ---------------------------------------------------------------- evaluation
def quiet(*metrics) -> EvaluationPlugin:
    """An ``EvaluationPlugin`` of ``metrics`` (none by default) that logs nothing."""
    return EvaluationPlugin(*metrics, loggers=[])


# ---------------------------------------------------------------- data
@functools.lru_cache(maxsize=None)
def digits_benchmark(
    n_experiences: int = 5, shape: tuple[int, ...] = (64,), *, class_ids_from_zero_in_each_exp: bool = True
):
    """``split_digits(n_experiences)``, built once per setting (tests must not mutate it).

    ``shape`` (a tuple: the cache key) is one sample's input shape, 64 features in all:
    ``(64,)`` is ``split_digits`` itself; e.g. ``(1, 8, 8)`` gives the same samples, in the
    same order, as images.
    """
    bench = split_digits(n_experiences, class_ids_from_zero_in_each_exp=class_ids_from_zero_in_each_exp)
    shape = tuple(shape)
    if shape == (64,):
        return bench
    if math.prod(shape) != 64:
        raise ValueError(f"Split Digits has 64 features per sample; shape {shape} holds {math.prod(shape)}")

    def tensors(stream):
        out = []
        for experience in stream:
            data = experience.dataset
            x = torch.stack([data[i][0] for i in range(len(data))]).view(-1, *shape)
            y = torch.tensor([int(data[i][1]) for i in range(len(data))])
            out.append((x, y))
        return out

    return tensors_benchmark(
        train_tensors=tensors(bench.train_stream), test_tensors=tensors(bench.test_stream),
        task_labels=list(range(n_experiences)),
    )


def stream_inputs(experience) -> torch.Tensor:
    """Every input of ``experience``, stacked in dataset order."""
    data = experience.dataset
    return torch.stack([data[i][0] for i in range(len(data))])


# ---------------------------------------------------------------- optimizers
OPTIMIZERS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.0),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3),
}


# ---------------------------------------------------------------- small models
def tiny_alexnet_12() -> HATAlexNet:
    """conv0 (first layer) 1→2 channels, conv1 2→3 channels, flatten 3 channels × 2×2 → fc0
    (``in_repeat`` = 4), no dropout: small enough for hand computations."""
    return HATAlexNet((1, 12, 12), conv_channels=(2, 3), kernel_sizes=(3, 2), fc_sizes=(4,),
                      conv_dropout=0.0, fc_dropout=0.0)


def digits_alexnet() -> HATAlexNet:
    """A small HATAlexNet for Split Digits' 8×8 images (:data:`DIGITS_IMAGE`), no dropout."""
    return HATAlexNet(DIGITS_IMAGE, conv_channels=(4, 6), kernel_sizes=(3, 2), fc_sizes=(16,),
                      conv_dropout=0.0, fc_dropout=0.0)


def digits_resnet(batch_norm: str = "none") -> HATResNet18:
    """A narrow HATResNet18 (small-input stem) for Split Digits' 8×8 images."""
    return HATResNet18(DIGITS_IMAGE, widths=(4, 4, 8, 8), small_input_stem=True, batch_norm=batch_norm)


# ---------------------------------------------------------------- masks by hand
def set_embedding_signs(model, signs: Mapping[str, Sequence[float]]) -> None:
    """Set ``e_l`` to +1 where ``signs[l]`` is 1 (unit used) and −1 where it is 0."""
    with torch.no_grad():
        for key, values in signs.items():
            model.task_embedding[key].copy_(torch.tensor(values, dtype=torch.float32) * 2 - 1)


def commit_signs(model, task: int, signs: Mapping[str, Sequence[float]]) -> dict[str, torch.Tensor]:
    """Store a mask for ``task`` with the given per-unit signs (1 = unit used)."""
    set_embedding_signs(model, signs)
    return model.commit_task(task)


def one_training_step(model, x: torch.Tensor, y: torch.Tensor, task: int, scale: float = 3.0) -> StepContext:
    """Forward (soft masks, recorded activations), CE backward, SGD step; the step's
    :class:`StepContext` (masks and activations detached). The training step stays open."""
    torch.manual_seed(1)
    model.train()
    step = model.begin_training(task, record_activations=True)
    step.gate_scale = scale
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x, task), y)
    loss.backward()
    optimizer.step()
    return StepContext(
        model=model,
        task=task,
        inputs=x,
        targets=y,
        masks={k: m.detach() for k, m in step.masks.items()},
        activations={k: a.detach() for k, a in step.activations.items()},
        gate_scale=scale,
    )


# ---------------------------------------------------------------- state
def snapshot_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``model.state_dict()``."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before: Mapping[str, torch.Tensor], model: nn.Module, ignore=frozenset()) -> tuple[bool, list[str]]:
    after = model.state_dict()
    same_keys = after.keys() == before.keys()
    changed = sorted(k for k in before if k not in ignore and (k not in after or not torch.equal(before[k], after[k])))
    return same_keys, changed


def same_state(before: Mapping[str, torch.Tensor], model: nn.Module, ignore=frozenset()) -> bool:
    """Whether ``model``'s state has the keys of ``before`` and equal values (but ``ignore``)."""
    same_keys, changed = _changed(before, model, ignore)
    return same_keys and not changed


def assert_same_state(before: Mapping[str, torch.Tensor], model: nn.Module, ignore=frozenset()) -> None:
    """Assert :func:`same_state`, naming the entries that changed."""
    same_keys, changed = _changed(before, model, ignore)
    assert same_keys, sorted(set(before) ^ set(model.state_dict()))
    assert not changed, changed


class RecordStarts(SupervisedPlugin):
    """Placed first: the model's state at the start of every training experience
    (``starts``; ``start`` is the last one) and after every iteration (``after_iteration``,
    the last one)."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[dict[str, torch.Tensor]] = []
        self.after_iteration: dict[str, torch.Tensor] | None = None

    @property
    def start(self) -> dict[str, torch.Tensor] | None:
        """The state at the start of the last training experience."""
        return self.starts[-1] if self.starts else None

    def before_training_exp(self, strategy, **kwargs):
        self.starts.append(snapshot_state(strategy.model))

    def after_training_iteration(self, strategy, **kwargs):
        self.after_iteration = snapshot_state(strategy.model)


class Poison(SupervisedPlugin):
    """Replaces the mini-batch's inputs by NaN (``what="nan"``) or makes its first task label
    another task's (``what="task_labels"``) at one iteration of every epoch."""

    def __init__(self, iteration: int, what: str = "nan") -> None:
        super().__init__()
        self.iteration, self.what = iteration, what

    def before_forward(self, strategy, **kwargs):
        if strategy.clock.train_epoch_iterations == self.iteration:
            if self.what == "nan":
                strategy.mbatch[0] = torch.full_like(strategy.mbatch[0], math.nan)
            else:
                labels = strategy.mbatch[-1].clone()
                labels[0] = labels[0] + 1
                strategy.mbatch[-1] = labels


def rollback_case(model, strategy_cls, bench, **kwargs) -> list[str]:
    """Train task 0, then a NaN loss at task 1's fourth iteration (three real steps first);
    assert the rollback restored every parameter and buffer. Returns the state entries the
    three steps had moved."""
    set_seed(0)
    recorder = RecordStarts()
    strategy = strategy_cls(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
                            train_mb_size=32, evaluator=quiet(), **kwargs)
    strategy.train(bench.train_stream[0])
    strategy.plugins.insert(0, recorder)
    strategy.plugins.append(Poison(3))  # three real steps first
    with pytest.raises(FloatingPointError, match="rolled back"):
        strategy.train(bench.train_stream[1])
    start, before_nan = recorder.start, recorder.after_iteration
    after = model.state_dict()
    moved = [k for k in start if not torch.equal(start[k], before_nan[k])]
    assert all(torch.equal(start[k], after[k]) for k in start)
    return moved


# ---------------------------------------------------------------- converted models (tests/test_conversion.py)
@functools.lru_cache(maxsize=None)
def digits_images(
    n_experiences: int = 5, shape: tuple[int, ...] = (64,), *, train_per_class: int | None = None,
    test_per_class: int | None = None,
):
    """Split Digits with every sample shaped ``shape``, built once per setting (do not mutate).

    ``shape`` is ``(64,)`` (the features), or ``(C, H, W)``: the 8×8 image upsampled to H×W
    by repeating each pixel (H and W multiples of 8) and repeated over the C channels, for
    networks that need larger or three-channel images (``SimpleCNN``, ResNets). At most
    ``train_per_class`` / ``test_per_class`` samples of each class are kept per experience
    (the first ones, in :func:`digits_benchmark`'s order; ``None``: all), for fast runs.
    """
    shape = tuple(shape)
    base = digits_benchmark(n_experiences)

    def tensors(stream, per_class):
        out = []
        for experience in stream:
            data = experience.dataset
            x = torch.stack([data[i][0] for i in range(len(data))])
            y = torch.tensor([int(data[i][1]) for i in range(len(data))])
            if per_class is not None:
                keep = torch.zeros_like(y, dtype=torch.bool)
                for label in y.unique():
                    keep[torch.nonzero(y == label).flatten()[:per_class]] = True
                x, y = x[keep], y[keep]
            out.append((as_digit_images(x, shape), y))
        return out

    return tensors_benchmark(
        train_tensors=tensors(base.train_stream, train_per_class),
        test_tensors=tensors(base.test_stream, test_per_class),
        task_labels=list(range(n_experiences)),
    )


def as_digit_images(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Digits ``(B, 64)`` shaped ``(B, *shape)``: ``(64,)`` as they are; ``(C, H, W)`` the 8×8
    image with each pixel repeated ``H/8 × W/8`` times and the image repeated over C channels."""
    shape = tuple(shape)
    if shape == (64,):
        return x.reshape(-1, 64)
    channels, height, width = shape
    if height % 8 or width % 8:
        raise ValueError(f"image sides must be multiples of 8, got {shape}")
    images = x.reshape(-1, 1, 8, 8).repeat_interleave(height // 8, dim=2).repeat_interleave(width // 8, dim=3)
    return images.repeat(1, channels, 1, 1).contiguous()


__all__ += ["as_digit_images", "digits_images"]


def two_unit_task_network(score: str, *, confident_heads: bool = True):
    """``HATMLP(2, (2,))`` whose hidden unit i copies input i, with task inference ``score``:
    task 0 uses unit 0 and owns classes 0, 1; task 1 uses unit 1 and owns classes 2, 3 (masks
    stored). ``confident_heads``: each head answers 10.0 for one class from its own unit only
    (task 0 → class 0, task 1 → class 3), so a head is confident only on its own unit's input;
    otherwise the heads keep their initial weights. Returned in training mode."""
    from types import SimpleNamespace

    from avalanche_fgadahat.models import HATMLP
    from avalanche_fgadahat.task_inference.adaptation import adapt_relabeled

    model = HATMLP(2, (2,))
    model.set_task_inference(score)
    with torch.no_grad():
        model.fc[0].weight.copy_(torch.eye(2))
        model.fc[0].bias.zero_()
    model.train()
    for task, classes in ((0, [0, 1]), (1, [2, 3])):
        adapt_relabeled(model, SimpleNamespace(classes_in_this_experience=classes, task_labels=[0]), task)
        if confident_heads:
            head = model.classifier.classifiers[str(task)].classifier
            with torch.no_grad():
                head.weight.zero_()
                head.bias.zero_()
                head.weight[classes[task], task] = 10.0
        commit_signs(model, task, {"fc0": [1.0 - task, float(task)]})
    model.max_class_label = 4
    return model

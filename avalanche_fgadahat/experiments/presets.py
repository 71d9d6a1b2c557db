"""Benchmark presets: data, backbone and training protocol of each experiment.

A :class:`Preset` fixes the protocol of a benchmark (reference: the experiment configs of
CLArena's companion repository, github.com/pengxiang-wang/continual-learning-research,
``configs/`` at commit 07c8d26, including the AdaHAT and FG-AdaHAT papers' index configs
``configs/index/{adahat,fgadahat}_paper/``); every field can be overridden from the
command line, giving the :class:`ExperimentSettings` of a sweep. Benchmarks and backbones
are looked up in the :data:`BENCHMARKS` and :data:`BACKBONES` registries.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from types import MappingProxyType
from typing import Any

import torch

from .._validation import check_choice, check_number
from ..models.base import HATBackbone
from .benchmark_data import (digits, digits_ci, pdigits, pdigits_di, pmnist, pmnist_di, smnist, smnist_ci,
                             split_cifar100)


@dataclass(frozen=True)
class ExperimentSettings:
    """Everything that defines a run apart from the strategy and the seed."""

    benchmark: str
    n_experiences: int
    backbone: str
    input_shape: tuple[int, ...]
    hidden_sizes: tuple[int, ...] | None
    epochs: int
    batch_size: int
    eval_batch_size: int
    lr: float
    max_train_samples: int | None = None
    max_test_samples: int | None = None
    data_root: str | None = None
    device: str = "cpu"
    num_workers: int = 0
    threads: int | None = None
    #: the HAT family's ``fused_step=True`` (``docs/benchmark.md``, "Fused step"): same numbers
    fused_step: bool = False

    #: fields that do not change the numbers a run produces (ignored when resuming)
    NON_DEFINING = ("data_root", "device", "num_workers", "threads", "fused_step")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Preset:
    """A benchmark's default protocol. ``reference`` says where the values come from."""

    name: str
    description: str
    benchmark: str
    n_experiences: int
    backbone: str
    input_shape: tuple[int, ...]
    hidden_sizes: tuple[int, ...] | None
    epochs: int
    batch_size: int
    lr: float
    reference: str
    eval_batch_size: int = 1024
    threads: int | None = None
    data_note: str = ""

    def settings(self, *, device_here: bool = True, **overrides: Any) -> ExperimentSettings:
        """The preset's settings with ``overrides`` (``None`` values keep the preset's).
        ``device_here=False``: the runs execute on other machines (Ray), so a CUDA device is
        not checked here."""
        base = ExperimentSettings(
            benchmark=self.benchmark,
            n_experiences=self.n_experiences,
            backbone=self.backbone,
            input_shape=self.input_shape,
            hidden_sizes=self.hidden_sizes,
            epochs=self.epochs,
            batch_size=self.batch_size,
            eval_batch_size=self.eval_batch_size,
            lr=self.lr,
            threads=self.threads,
        )
        unknown = set(overrides) - set(base.to_dict())
        if unknown:
            raise ValueError(
                f"unknown setting(s) {sorted(unknown)}; accepted: {sorted(base.to_dict())}"
            )
        given = {k: v for k, v in overrides.items() if v is not None}
        if "hidden_sizes" in given:
            given["hidden_sizes"] = tuple(given["hidden_sizes"])
        settings = replace(base, **given)
        validate_settings(settings, device_here=device_here)
        return settings


def validate_settings(s: ExperimentSettings, device_here: bool = True) -> None:
    """``ValueError`` naming the first bad setting (a CUDA device is checked only with ``device_here``)."""
    check_choice("benchmark", s.benchmark, BENCHMARKS)
    check_choice("backbone", s.backbone, BACKBONES)
    check_number("n_experiences", s.n_experiences, minimum=1, integer=True)
    check_number("epochs", s.epochs, minimum=1, integer=True)
    check_number("batch_size", s.batch_size, minimum=1, integer=True)
    check_number("eval_batch_size", s.eval_batch_size, minimum=1, integer=True)
    check_number("lr", s.lr, minimum=0.0, strict_minimum=True)
    check_number("num_workers", s.num_workers, minimum=0, integer=True)
    if s.threads is not None:
        check_number("threads", s.threads, minimum=1, integer=True)
    for name in ("max_train_samples", "max_test_samples"):
        if getattr(s, name) is not None:
            check_number(name, getattr(s, name), minimum=1, integer=True)
    if s.backbone in ("mlp", "mtsimplemlp"):
        if not s.hidden_sizes:
            raise ValueError(f"hidden_sizes must hold at least one width for the {s.backbone} backbone")
        if s.backbone == "mtsimplemlp" and len(s.hidden_sizes) != 1:
            raise ValueError(f"hidden_sizes={s.hidden_sizes}: Avalanche's MTSimpleMLP has one hidden layer; give one width")
    elif s.hidden_sizes is not None:
        raise ValueError(
            f"hidden_sizes={s.hidden_sizes} applies to the mlp backbone only; "
            f"the {s.benchmark} preset uses {s.backbone!r}"
        )
    BENCHMARKS[s.benchmark].check(s)
    if device_here and s.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={s.device!r} but CUDA is not available here; use device='cpu'")


# ---------------------------------------------------------------------------- benchmarks
@dataclass(frozen=True)
class BenchmarkBuilder:
    """``build(settings, seed)`` → an Avalanche benchmark with task labels;
    ``check(settings)`` raises ``ValueError`` on settings the benchmark cannot honour;
    ``build_on_workers``: on Ray, each worker builds it from ``data_root`` rather than receiving
    it through the object store (a benchmark far larger in memory than its files)."""

    build: Callable[[ExperimentSettings, int], Any]
    check: Callable[[ExperimentSettings], None] = lambda s: None
    #: whether the experiences carry task labels (``False``: class-/domain-incremental, ``scenarios.py``)
    task_labels: bool = True
    #: the stream's classes (the baselines' single head on a stream without task labels)
    classes: int = 10
    build_on_workers: bool = False


def _divides(total: int, what: str) -> Callable[[ExperimentSettings], None]:
    def check(s: ExperimentSettings) -> None:
        if total % s.n_experiences:
            divisors = [d for d in range(1, total + 1) if total % d == 0]
            raise ValueError(
                f"n_experiences={s.n_experiences} must divide the {total} {what} of "
                f"{s.benchmark}; accepted: {divisors}"
            )

    return check


BENCHMARKS: Mapping[str, BenchmarkBuilder] = MappingProxyType(
    {
        "digits": BenchmarkBuilder(digits, _divides(10, "classes")),
        "pdigits": BenchmarkBuilder(pdigits),
        "pmnist": BenchmarkBuilder(pmnist, build_on_workers=True),  # 220 MB of permuted images per task
        "smnist": BenchmarkBuilder(smnist, _divides(10, "classes")),
        "split_cifar100": BenchmarkBuilder(split_cifar100, _divides(100, "classes")),
        "digits_ci": BenchmarkBuilder(digits_ci, _divides(10, "classes"), task_labels=False),
        "pdigits_di": BenchmarkBuilder(pdigits_di, task_labels=False),
        "smnist_ci": BenchmarkBuilder(smnist_ci, _divides(10, "classes"), task_labels=False),
        "pmnist_di": BenchmarkBuilder(pmnist_di, build_on_workers=True, task_labels=False),
    }
)


# ---------------------------------------------------------------------------- backbones
def _mlp(s: ExperimentSettings) -> HATBackbone:
    from ..models import HATMLP

    return HATMLP(math.prod(s.input_shape), tuple(s.hidden_sizes))


def _resnet18(s: ExperimentSettings) -> HATBackbone:
    from ..models import HATResNet18

    return HATResNet18(tuple(s.input_shape), batch_norm="none")


def _alexnet(s: ExperimentSettings) -> HATBackbone:
    from ..models import HATAlexNet

    return HATAlexNet(tuple(s.input_shape))


def _mtsimplemlp(s: ExperimentSettings) -> HATBackbone:
    from avalanche.models import MTSimpleMLP

    from ..models import to_hat

    return to_hat(MTSimpleMLP(math.prod(s.input_shape), s.hidden_sizes[0]))


#: backbone name → HAT-masked multi-head backbone; baselines unmask it (``baseline_models``).
#: ``mtsimplemlp`` is Avalanche's ``MTSimpleMLP`` (one hidden layer, dropout 0.5) converted with
#: ``to_hat`` (the HAT family only: run the baselines on the ``mlp`` backbone).
#: ``alexnet`` (the HAT paper's conv net) is used by no preset: ``benchmarks/step_time.py``
#: times it on the ``split_cifar100`` preset's input shape.
BACKBONES: Mapping[str, Callable[[ExperimentSettings], HATBackbone]] = MappingProxyType(
    {"mlp": _mlp, "resnet18": _resnet18, "alexnet": _alexnet, "mtsimplemlp": _mtsimplemlp}
)


# ---------------------------------------------------------------------------- presets
PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        "digits": Preset(
            name="digits",
            description="scikit-learn's 8x8 digits, 5 tasks of 2 classes (embedded, no download)",
            benchmark="digits",
            n_experiences=5,
            backbone="mlp",
            input_shape=(64,),
            hidden_sizes=(128, 128),
            epochs=20,
            batch_size=16,
            lr=1e-3,
            threads=1,
            reference="tuned here for a CPU demo of about a minute (no reference protocol): batch 16 "
            "gives HAT's annealing 16 steps per epoch; one torch thread, as the layers are too "
            "small for intra-op parallelism to pay (2 threads on a busy 2-core machine: 30x slower)",
        ),
        "pdigits": Preset(
            name="pdigits",
            description="Permuted digits: scikit-learn's 8x8 digits, every task all 10 classes under "
            "its own pixel permutation (the Permuted MNIST protocol; embedded, no download)",
            benchmark="pdigits",
            n_experiences=10,
            backbone="mlp",
            input_shape=(64,),
            hidden_sizes=(128, 128),
            epochs=5,
            batch_size=64,
            lr=1e-2,
            threads=1,
            reference="tuned here for the README's main job (no reference protocol): 10 tasks that "
            "share nothing but the digits, so fine-tuning forgets (Naive about 64 % ACC) while HAT and "
            "FG-AdaHAT keep the old tasks (about 83-84 %; AdaHAT trades forgetting for plasticity, "
            "about 69 %); 100 Adam steps per task at lr 1e-2 (lr x steps = 1, docs/diagnostics.md); "
            "one torch thread (layers too small for intra-op parallelism)",
        ),
        "pmnist": Preset(
            name="pmnist",
            description="Permuted MNIST with task labels (fast in-memory copy of Avalanche's)",
            benchmark="pmnist",
            n_experiences=20,
            backbone="mlp",
            input_shape=(1, 28, 28),
            hidden_sizes=(256, 100, 64),
            epochs=2,
            batch_size=128,
            lr=1e-3,
            reference="FG-AdaHAT/AdaHAT paper index configs: 20 tasks, HATMaskMLP 784-256-100-64, "
            "Adam 1e-3, batch 128, 2 epochs",
        ),
        "smnist": Preset(
            name="smnist",
            description="Split MNIST, 5 tasks of 2 consecutive classes, task labels",
            benchmark="smnist",
            n_experiences=5,
            backbone="mlp",
            input_shape=(1, 28, 28),
            hidden_sizes=(256, 100, 64),
            epochs=2,
            batch_size=128,
            lr=1e-3,
            reference="no reference protocol: the PMNIST backbone and training protocol",
        ),
        "split_cifar100": Preset(
            name="split_cifar100",
            description="Split CIFAR-100, 20 tasks of 5 consecutive classes, task labels",
            benchmark="split_cifar100",
            n_experiences=20,
            backbone="resnet18",
            input_shape=(3, 32, 32),
            hidden_sizes=None,
            epochs=20,
            batch_size=64,
            lr=1e-3,
            eval_batch_size=256,
            reference="FG-AdaHAT/AdaHAT paper index configs: HATMaskResNet18 without BatchNorm, "
            "Adam 1e-3, batch 64, 20 epochs, no augmentation (HEAD config)",
            data_note="needs the CIFAR-100 files under --data-root (or a network) and a GPU",
        ),
    }
)


def _without_task_labels(base: str, name: str, description: str, reference: str) -> Preset:
    """``base``'s protocol on its stream without task labels (benchmark ``name``)."""
    return replace(PRESETS[base], name=name, benchmark=name, description=description, reference=reference)


PRESETS = MappingProxyType({
    **PRESETS,
    "digits_ci": _without_task_labels(
        "digits", "digits_ci", "class-incremental Split digits: 5 experiences of 2 classes, no task labels, global "
        "class ids (embedded, no download)", "the digits protocol; the HAT family infers the task (@score)"),
    "pdigits_di": _without_task_labels(
        "pdigits", "pdigits_di", "domain-incremental Permuted digits: no task labels at test time (embedded)",
        "the pdigits protocol; the HAT family infers the task (@score)"),
    "smnist_ci": _without_task_labels(
        "smnist", "smnist_ci", "class-incremental Split MNIST: 5 experiences of 2 consecutive classes, no task "
        "labels, global class ids (Avalanche's SplitMNIST(return_task_id=False))",
        "the smnist protocol (the PMNIST backbone and training); the HAT family infers the task (@score)"),
    "pmnist_di": _without_task_labels(
        "pmnist", "pmnist_di", "domain-incremental Permuted MNIST: no task labels (fast in-memory copy of "
        "Avalanche's PermutedMNIST(return_task_id=False))",
        "the pmnist protocol; the HAT family infers the task (@score)"),
})

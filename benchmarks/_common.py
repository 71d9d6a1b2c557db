"""What the benchmark scripts share: command-line basics, the table header, the output, and
the models and strategies they time.

Models and strategies are the experiments harness's (``avalanche_fgadahat.experiments``), not
copies: a setting is a harness preset's backbone (``presets.BACKBONES``), the plain twin that
``Naive`` trains is ``baseline_models.PlainMultiHead``, and every method is a strategy of the
harness's registry (``strategies.resolve_strategy``), with the harness's settings.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable

import torch

from avalanche_fgadahat.experiments.baseline_models import PlainMultiHead
from avalanche_fgadahat.experiments.presets import BACKBONES, PRESETS, ExperimentSettings
from avalanche_fgadahat.experiments.strategies import build_strategy, resolve_strategy


CLOCKS = {
    # wall time: what a user waits for (the primary measure); CPU time of the process: immune to
    # other processes sharing the cores, but with several torch threads it sums their CPU time
    # (not what a user waits for), so it is a secondary view for one thread on a loaded machine
    "wall": time.perf_counter,
    "cpu": time.process_time,
}


def base_parser(doc: str | None, settings: list[str]) -> argparse.ArgumentParser:
    """``--device``, ``--setting``, ``--threads``, ``--clock`` and ``--out``; scripts add their own.

    The primary measurement is what a user gets: torch's default number of CPU threads and wall
    time. ``--threads 1`` and ``--clock cpu`` are secondary views (one core, process CPU time).
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--setting", choices=[*settings, "all"], default=settings[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own default, what users get)")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall",
                        help="'wall' (default: what a user waits for) or 'cpu' (process CPU time, a secondary "
                             "view for --threads 1 on a shared machine; CPU devices only)")
    parser.add_argument("--out", default=None, help="write the Markdown table here")
    return parser


def check_clock(parser: argparse.ArgumentParser, clock: str, device: torch.device) -> None:
    """Refuse ``--clock cpu`` on an accelerator (it would time the host only)."""
    if clock == "cpu" and device.type != "cpu":
        parser.error("--clock cpu measures host CPU time only: use --clock wall on an accelerator")


def clock_words(clock: str) -> str:
    """What a ``--clock`` measures, for table headers."""
    return "wall time" if clock == "wall" else "CPU time of the process"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def apply_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` when given; otherwise torch's default stays."""
    if threads:
        torch.set_num_threads(threads)


#: torch's thread count before any script changes it (read at import, before ``--threads``)
_DEFAULT_THREADS = torch.get_num_threads()


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux; ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(device: torch.device, measured: str, per: str) -> list[str]:
    """The table's first lines: device (the CPU's model name on a CPU), versions, threads (and
    whether that is torch's default), what the times are, the command."""
    import os

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    threads = torch.get_num_threads()
    default = " (torch's default)" if threads == _DEFAULT_THREADS else ""
    return [
        f"Device: {device.type} ({name}; {os.cpu_count()} logical CPUs), torch {torch.__version__}, "
        f"{threads} threads{default}; times are {measured} per {per}.",
        f"Command: `python {' '.join(sys.argv)}`",
        "",
    ]


def emit(table: str, out: str | None) -> None:
    """Print the table and write it to ``out`` if given."""
    print(table)
    if out:
        with open(out, "w") as handle:
            handle.write(table)


# ---------------------------------------------------------------- models and strategies (the harness's)
#: setting → (harness preset, overrides): the preset's backbone, input shape, batch size and
#: Adam learning rate, one epoch per experience
HARNESS_SETTINGS = {
    "mlp": ("pmnist", {}),  # HATMLP(784, (256, 100, 64)), batch 128: the Permuted MNIST reference
    "alexnet": ("split_cifar100", {"backbone": "alexnet"}),  # HATAlexNet((3, 32, 32)), batch 64
}


def harness_settings(setting: str, device: torch.device | str = "cpu") -> ExperimentSettings:
    """The harness's settings of a benchmark ``setting`` (one epoch per experience)."""
    preset, overrides = HARNESS_SETTINGS[setting]
    return PRESETS[preset].settings(epochs=1, device=str(device), **overrides)


def _setting(name: str) -> tuple[tuple[int, ...], int, Callable, Callable]:
    settings = harness_settings(name)

    def hat_model() -> torch.nn.Module:
        return BACKBONES[settings.backbone](settings)

    def plain_model() -> torch.nn.Module:
        return PlainMultiHead(hat_model())

    return tuple(settings.input_shape), settings.batch_size, hat_model, plain_model


#: name → (input shape, batch size, HAT model factory, plain model factory)
SETTINGS = {name: _setting(name) for name in HARNESS_SETTINGS}

#: method (table label) → harness strategy name; FG-AdaHAT rows are ``FG-AdaHAT <importance>``
METHODS = {"Naive": "naive", "HAT": "hat", "AdaHAT": "adahat"}
FGADAHAT_LABEL = "FG-AdaHAT"


def method_names(importance_types: list[str]) -> list[str]:
    """The table's methods: ``Naive``, HAT, AdaHAT, then FG-AdaHAT with each importance type."""
    return [*METHODS, *(f"{FGADAHAT_LABEL} {name}" for name in importance_types)]


def _strategy_name(method: str) -> str:
    if method.startswith(FGADAHAT_LABEL + " "):
        return "fgadahat:" + method.split(" ", 1)[1]
    return METHODS[method]


OPTIMIZERS = {
    # the reference protocol's Adam (torch's default implementation for the device), its fused
    # kernel, and plain SGD (no second moment: isolates the HAT family's own work, see docs/benchmark.md)
    "adam": lambda params: torch.optim.Adam(params, lr=1e-3),
    "adam-fused": lambda params: torch.optim.Adam(params, lr=1e-3, fused=True),
    "sgd": lambda params: torch.optim.SGD(params, lr=1e-2),
}


def build_method(method: str, setting: str, device: torch.device, optimizer: str, plugins: list):
    """``method`` as the harness builds it on ``setting``'s backbone (HAT model, or its plain
    twin for ``Naive``), with ``OPTIMIZERS[optimizer]``, ``plugins`` and a silent evaluator."""
    from avalanche.training.plugins import EvaluationPlugin

    strategy = resolve_strategy(_strategy_name(method))
    return build_strategy(strategy, harness_settings(setting, device), EvaluationPlugin(loggers=[]),
                          plugins, optimizer=OPTIMIZERS[optimizer])

"""The command line's scale-out options: ``--executor``, ``--ray-address``, resources per run,
``--tune`` and ``--tune-trials``; checked together before anything runs.

Rules (each broken one is a ``ValueError`` naming the option and what it accepts):

* ``--ray-address``, ``--cpus-per-run``, ``--gpus-per-run`` and ``--memory-per-run`` apply
  to Ray: ``--executor ray`` or ``--tune``; ``--tune-trials`` needs ``--tune``;
* Ray must be importable when it is used (else: how to install the ``ray`` extra), checked
  after every other option (:meth:`ScaleChoice.require_ray`);
* with Ray, the device follows the GPUs reserved: ``cuda`` when ``--gpus-per-run`` > 0,
  else ``cpu`` (Ray hides GPUs from a task that reserves none), and it is not checked on
  this machine (the runs execute on the cluster's);
* torch threads in a Ray task: ``--threads`` if given, else ``--cpus-per-run`` (at least 1);
* with Ray, ``--data-root`` is made absolute (tasks run in other working directories).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .executors import Executor, LocalExecutor, import_ray
from .strategies import ResolvedStrategy
from .tuning_spaces import search_space

#: ``--tune-trials`` when not given
DEFAULT_TUNE_TRIALS = 8


def add_scale_arguments(parser: argparse.ArgumentParser) -> None:
    """The scale-out options (see the module doc)."""
    group = parser.add_argument_group("scale-out (Ray)")
    group.add_argument("--executor", default="local", choices=("local", "ray"),
                       help="local: one run after the other in this process (default); ray: every run a Ray task")
    group.add_argument("--ray-address", default=None, metavar="ADDRESS",
                       help="Ray cluster to use: 'auto' (the one `ray start` made here), host:port, ray://host:port "
                       "(default: a local Ray on this machine's cores)")
    group.add_argument("--cpus-per-run", type=float, default=None, metavar="N",
                       help="CPUs each Ray run reserves (default 1); also its torch threads unless --threads")
    group.add_argument("--gpus-per-run", type=float, default=None, metavar="N",
                       help="GPUs each Ray run reserves (default 0; fractions share a GPU); > 0 means --device cuda")
    group.add_argument("--memory-per-run", type=float, default=None, metavar="GIB",
                       help="memory (GiB) each Ray run reserves (default: not declared)")
    group.add_argument("--tune", action="store_true",
                       help="first search each method's hyperparameters with Ray Tune on a validation split of the "
                       "training data, then run the best setting with every seed on the test set")
    group.add_argument("--tune-trials", type=int, default=None, metavar="N",
                       help=f"trials per method with --tune, the default setting first (default {DEFAULT_TUNE_TRIALS})")


@dataclass(frozen=True)
class ScaleChoice:
    """The checked scale-out options: whether Ray is used, the device (``None``: the local
    default), the torch threads (``None``: the preset's) and the per-run resources."""

    uses_ray: bool
    device: str | None
    threads: int | None
    cpus_per_run: float
    gpus_per_run: float
    memory_gb: float | None
    tune: bool

    def data_root(self, given: str | None) -> str | None:
        """``--data-root``, made absolute with Ray (tasks may run in other working directories)."""
        if given is None or not self.uses_ray:
            return given
        return str(Path(given).expanduser().resolve())

    def require_ray(self, executor: str) -> None:
        """``RayMissingError`` (how to install it) when Ray is used but not installed."""
        if self.uses_ray:
            import_ray("--executor ray" if executor == "ray" else "--tune")

    def check_overrides(self, strategies: Sequence[ResolvedStrategy], parsed: Mapping[str, Mapping[str, Any]]) -> None:
        """With ``--tune``, a ``--set`` of a searched setting is refused (one of the two would be ignored)."""
        if not self.tune:
            return
        for strategy in strategies:
            space = search_space(strategy.base)
            given = {**parsed.get(strategy.base, {}), **parsed.get(strategy.label, {})}
            clash = sorted(set(given) & set(space.keys if space else ()))
            if clash:
                raise ValueError(
                    f"--set {strategy.base}.{clash[0]} and --tune: --tune searches {strategy.label}'s "
                    f"{', '.join(space.keys)}; drop the --set or the --tune"
                )


def _positive(name: str, value: float | None, *, zero: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        bound = ">= 0" if zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value:g}")


def check_scale_arguments(args: argparse.Namespace) -> ScaleChoice:
    """The module doc's rules; ``ValueError`` on the first broken one."""
    uses_ray = args.executor == "ray" or args.tune
    if not uses_ray:
        for flag in ("ray_address", "cpus_per_run", "gpus_per_run", "memory_per_run"):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag.replace('_', '-')} applies to Ray runs only: add --executor ray "
                                 "(or --tune), or drop it")
    if args.tune_trials is not None:
        if not args.tune:
            raise ValueError("--tune-trials applies to --tune only: add --tune, or drop it")
        if args.tune_trials < 1:
            raise ValueError(f"--tune-trials must be an integer >= 1, got {args.tune_trials}")
    _positive("--cpus-per-run", args.cpus_per_run)
    _positive("--gpus-per-run", args.gpus_per_run, zero=True)
    _positive("--memory-per-run", args.memory_per_run)
    cpus = 1.0 if args.cpus_per_run is None else args.cpus_per_run
    gpus = 0.0 if args.gpus_per_run is None else args.gpus_per_run
    device = args.device
    threads = args.threads
    if uses_ray:
        if device is None:
            device = "cuda" if gpus > 0 else "cpu"
        elif device.startswith("cuda") and gpus == 0:
            raise ValueError(f"--device {device} with Ray needs --gpus-per-run > 0: Ray hides the GPUs from a run "
                             "that reserves none")
        elif not device.startswith("cuda") and gpus > 0:
            raise ValueError(f"--gpus-per-run {gpus:g} reserves GPUs that --device {device} does not use: "
                             "use --device cuda, or drop --gpus-per-run")
        threads = threads or max(1, int(cpus))
    return ScaleChoice(uses_ray, device, threads, cpus, gpus, args.memory_per_run, bool(args.tune))


def executor_for(args: argparse.Namespace, scale: ScaleChoice) -> Executor:
    """The executor ``--executor`` names, with the resources of ``scale``."""
    if args.executor == "local":
        return LocalExecutor()
    from .ray_executor import RayExecutor

    return RayExecutor(args.ray_address, scale.cpus_per_run, scale.gpus_per_run, scale.memory_gb, scale.threads)


def tune_options(args: argparse.Namespace, scale: ScaleChoice, seed: int):
    """``tuning.TuneOptions`` of ``--tune``: the trial budget, Ray's address, the resources;
    the search (validation split, sampling) uses ``seed``."""
    from .tuning import TuneOptions

    return TuneOptions(trials=args.tune_trials or DEFAULT_TUNE_TRIALS, seed=seed, address=args.ray_address,
                       cpus_per_run=scale.cpus_per_run, gpus_per_run=scale.gpus_per_run,
                       memory_gb=scale.memory_gb, threads=scale.threads or 1)

"""Command line of the experiments (``python -m avalanche_fgadahat.experiments``).

Example (the README's main job, about two minutes on two CPU cores)::

    python -m avalanche_fgadahat.experiments --benchmark pdigits \\
        --strategies fgadahat:icu adahat hat naive ewc --seeds 1 2 3 --out results/pdigits

``--executor ray`` runs every (strategy, seed) run as a Ray task (``ray_executor.py``);
``--tune`` first searches each method's hyperparameters with Ray Tune (``tuning.py``).
Options of both are checked in ``cli_scale.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch

from .presets import BACKBONES, BENCHMARKS, PRESETS
from .report import TABLE_LEGEND, matrices_text, write_plots, write_tables
from .cli_scale import add_scale_arguments, check_scale_arguments, executor_for, tune_options
from .settings import SETTINGS_SOURCES, STRATEGY_SETTINGS
from .strategies import STRATEGIES, overrides_for, parse_overrides, resolve_strategy
from .sweep import SweepError, run_sweep

DEFAULT_STRATEGIES = ("fgadahat:icu", "adahat", "hat", "naive", "ewc")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avalanche-fgadahat-experiments",
        description="Benchmark FG-AdaHAT, AdaHAT and HAT against Avalanche's baselines. Presets set "
        "the protocol; every option below overrides it.",
    )
    parser.add_argument("--benchmark", default="pdigits", choices=sorted(PRESETS),
                        help="preset (default: pdigits, the README's main job); --list describes them")
    parser.add_argument("--strategies", nargs="+", default=list(DEFAULT_STRATEGIES), metavar="NAME",
                        help=f"strategies: {', '.join(STRATEGIES)}, fgadahat:<importance> "
                        f"(default: {' '.join(DEFAULT_STRATEGIES)})")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1], metavar="SEED", help="seeds (default: 1)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: results/<benchmark>)")
    parser.add_argument("--data-root", default=None, help="dataset folder passed to Avalanche's loaders")
    parser.add_argument("--n-experiences", type=int, default=None, help="number of tasks")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per task")
    parser.add_argument("--batch-size", type=int, default=None, help="training mini-batch size")
    parser.add_argument("--eval-batch-size", type=int, default=None, help="evaluation mini-batch size")
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=None, metavar="N",
                        help="hidden layer widths (mlp backbones)")
    parser.add_argument("--backbone", default=None, choices=sorted(BACKBONES),
                        help="network (default: the preset's); mtsimplemlp = Avalanche's MTSimpleMLP "
                        "converted with to_hat (HAT family only)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: the preset's; digits uses 1)")
    parser.add_argument("--num-workers", type=int, default=None, help="data-loader workers (default: 0)")
    parser.add_argument("--fused-step", action="store_true",
                        help="HAT-family strategies with fused_step=True: the step's element-wise work compiled "
                        "by torch.compile, the same numbers (docs/benchmark.md); other strategies are unchanged")
    parser.add_argument("--max-train-samples", type=int, default=None,
                        help="random subset of at most N training samples per task (smoke runs)")
    parser.add_argument("--max-test-samples", type=int, default=None,
                        help="random subset of at most N test samples per task (smoke runs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="STRATEGY.KEY=VALUE",
                        help="override a strategy setting, e.g. --set ewc.ewc_lambda=100 (repeatable)")
    parser.add_argument("--force", action="store_true", help="rerun runs already complete in --out")
    parser.add_argument("--quiet", action="store_true", help="print only the final table")
    parser.add_argument("--list", action="store_true",
                        help="print presets, FG-AdaHAT importance names and strategy settings, then exit")
    add_scale_arguments(parser)
    return parser


def _list() -> None:
    print("Presets:")
    for preset in PRESETS.values():
        hidden = f" hidden {list(preset.hidden_sizes)}" if preset.hidden_sizes else ""
        print(f"  {preset.name}: {preset.description}; {preset.n_experiences} tasks, {preset.backbone}{hidden}, "
              f"{preset.epochs} epochs, batch {preset.batch_size}, Adam lr {preset.lr}")
        print(f"      source: {preset.reference}")
        if preset.data_note:
            print(f"      note: {preset.data_note}")
    _list_importances()
    print("Strategies (settings; source):")
    for name, settings in STRATEGY_SETTINGS.items():
        label = "fgadahat:<importance>" if name == "fgadahat" else name
        print(f"  {label}: {json.dumps(dict(settings))}")
        print(f"      {SETTINGS_SOURCES[name]}")


def _list_importances() -> None:
    """The names ``fgadahat:<importance>`` accepts: full name, or its short name (any case)."""
    from ..importance import IMPORTANCE_TYPES

    print("FG-AdaHAT importances (fgadahat:<name or short name>, any case; docs/importance.md):")
    from ..importance.registry import short_name_of

    shorts = {name: short_name_of(itype) or "-" for name, itype in IMPORTANCE_TYPES.items()}
    width = max(len(short) for short in shorts.values())
    for name, itype in IMPORTANCE_TYPES.items():
        cost = "in the training step" if itype.extra_passes == "none" else "extra forward/backward passes"
        print(f"  {shorts[name]:<{width}}  {name:<52} ({cost})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        _list()
        return 0
    try:
        scale = check_scale_arguments(args)
        device = scale.device or ("cuda" if torch.cuda.is_available() else "cpu")
        settings = PRESETS[args.benchmark].settings(
            n_experiences=args.n_experiences, epochs=args.epochs, batch_size=args.batch_size,
            eval_batch_size=args.eval_batch_size, lr=args.lr, hidden_sizes=args.hidden_sizes, backbone=args.backbone,
            device=device, num_workers=args.num_workers, threads=scale.threads, data_root=scale.data_root(args.data_root),
            max_train_samples=args.max_train_samples, max_test_samples=args.max_test_samples,
            device_here=not scale.uses_ray, fused_step=args.fused_step or None,
        )
        if len(set(args.strategies)) != len(args.strategies) or len(set(args.seeds)) != len(args.seeds):
            raise ValueError(f"--strategies {args.strategies} and --seeds {args.seeds} must not repeat a value")
        parsed = parse_overrides(args.overrides, args.strategies)
        task_labels = BENCHMARKS[settings.benchmark].task_labels
        strategies = [resolve_strategy(name, overrides_for(name, parsed), task_labels) for name in args.strategies]
        labels = [s.label for s in strategies]
        if len(set(labels)) != len(labels):
            raise ValueError(f"--strategies name the same strategy twice: {labels}")
        scale.check_overrides(strategies, parsed)
        if args.fused_step and not any(s.spec.family == "hat" for s in strategies):
            raise ValueError(f"--fused-step applies to the HAT family (hat*, adahat, fgadahat:*); --strategies "
                             f"{labels} holds none of them")
        scale.require_ray(args.executor)
    except ValueError as error:
        parser.error(str(error))
    out = args.out or Path("results") / args.benchmark
    log = (lambda message: None) if args.quiet else (lambda message: print(message, flush=True))
    log(f"{args.benchmark}: {settings.n_experiences} tasks, {settings.epochs} epoch(s), batch "
        f"{settings.batch_size}, lr {settings.lr}, device {settings.device}; "
        f"{len(strategies)} strategies x {len(args.seeds)} seed(s) -> {out} ({args.executor} executor"
        f"{', tuned first' if args.tune else ''})")
    failures: list[tuple[str, int, str]] = []
    notes = ""
    try:
        from .ray_executor import ray_session

        with ray_session(args.ray_address, "--executor ray" if args.executor == "ray" else "--tune") \
                if scale.uses_ray else nullcontext():
            if args.tune:
                from .tuning import tune_strategies, tuned_strategies, tuning_table

                options = tune_options(args, scale, args.seeds[0])
                searched, failed = tune_strategies(settings, strategies, out, options, force=args.force, log=log)
                failures += [(label, args.seeds[0], f"tuning: {error}") for label, error in failed.items()]
                strategies = tuned_strategies([s for s in strategies if s.label not in failed], searched)
                notes = tuning_table({s.label: searched[s.label] for s in strategies}, options)
                Path(out).mkdir(parents=True, exist_ok=True)
                (Path(out) / "tuning.md").write_text(notes)
            records = run_sweep(settings, strategies, args.seeds, out, force=args.force, log=log,
                                executor=executor_for(args, scale))
    except SweepError as error:
        records, failures = error.records, failures + error.failures
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: complete runs are saved in the output folder; rerun the same command to resume",
              file=sys.stderr)
        return 130
    if records:
        _report(records, out, f"{args.benchmark} ({settings.n_experiences} tasks)", notes, args.quiet, log)
    if failures:
        print(f"{len(failures)} run(s) failed (rerun the same command to retry them):", file=sys.stderr)
        for label, seed, error in failures:
            print(f"  {label} seed {seed}: {error}", file=sys.stderr)
        return 1
    return 0


def _report(records, out: Path, title: str, notes: str, quiet: bool, log) -> None:
    """Tables, plots, and the terminal summary of a sweep's complete runs."""
    md_path, csv_path, table = write_tables(records, out, title=title, notes=notes)
    plots = write_plots(records, out)
    matrices = matrices_text(records)
    if matrices and not quiet:
        print()
        print(matrices, end="")
    print()
    print(table)
    print(TABLE_LEGEND)
    if notes:
        print()
        print(notes, end="")
    log(f"tables: {md_path}, {csv_path}; plots: {', '.join(str(p) for p in plots)}")


if __name__ == "__main__":
    sys.exit(main())

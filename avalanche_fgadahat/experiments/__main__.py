"""Command line of the experiments (``python -m avalanche_fgadahat.experiments``).

Example (the README's main job, about two minutes on two CPU cores)::

    python -m avalanche_fgadahat.experiments --benchmark pdigits \\
        --strategies fgadahat:icu adahat hat naive ewc --seeds 1 2 3 --out results/pdigits
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from .presets import BACKBONES, PRESETS
from .report import TABLE_LEGEND, matrices_text, write_plots, write_tables
from .runner import run_sweep
from .settings import SETTINGS_SOURCES, STRATEGY_SETTINGS
from .strategies import STRATEGIES, overrides_for, parse_overrides, resolve_strategy

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
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        settings = PRESETS[args.benchmark].settings(
            n_experiences=args.n_experiences, epochs=args.epochs, batch_size=args.batch_size,
            eval_batch_size=args.eval_batch_size, lr=args.lr, hidden_sizes=args.hidden_sizes, backbone=args.backbone,
            device=device, num_workers=args.num_workers, threads=args.threads, data_root=args.data_root,
            max_train_samples=args.max_train_samples, max_test_samples=args.max_test_samples,
        )
        if len(set(args.strategies)) != len(args.strategies) or len(set(args.seeds)) != len(args.seeds):
            raise ValueError(f"--strategies {args.strategies} and --seeds {args.seeds} must not repeat a value")
        parsed = parse_overrides(args.overrides, args.strategies)
        strategies = [resolve_strategy(name, overrides_for(name, parsed)) for name in args.strategies]
        labels = [s.label for s in strategies]
        if len(set(labels)) != len(labels):
            raise ValueError(f"--strategies name the same strategy twice: {labels}")
    except ValueError as error:
        parser.error(str(error))
    out = args.out or Path("results") / args.benchmark
    log = (lambda message: None) if args.quiet else (lambda message: print(message, flush=True))
    log(f"{args.benchmark}: {settings.n_experiences} tasks, {settings.epochs} epoch(s), batch "
        f"{settings.batch_size}, lr {settings.lr}, device {settings.device}; "
        f"{len(strategies)} strategies x {len(args.seeds)} seed(s) -> {out}")
    try:
        records = run_sweep(settings, strategies, args.seeds, out, force=args.force, log=log)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    md_path, csv_path, table = write_tables(records, out, title=f"{args.benchmark} ({settings.n_experiences} tasks)")
    plots = write_plots(records, out)
    matrices = matrices_text(records)
    if matrices and not args.quiet:
        print()
        print(matrices, end="")
    print()
    print(table)
    print(TABLE_LEGEND)
    log(f"tables: {md_path}, {csv_path}; plots: {', '.join(str(p) for p in plots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""HAT's learning diagnostics against ``lr × optimizer steps per task`` (docs/diagnostics.md).

HAT (Adam) on the embedded scikit-learn digits, 5 task-incremental tasks, the digits
preset's 128-128 MLP, seeds 1–3; per setting: mean ACC over tasks after the last task, the
worst task, and the means of the end-of-experience report (mask bits changed, embedding
shift, free capacity after task 5), and how many tasks raised the "masks barely moved"
warning. Runs in about 3 minutes on two CPU cores::

    python benchmarks/diagnostics_rule_of_thumb.py --out docs/benchmarks/diagnostics_rule_of_thumb.md
"""

from __future__ import annotations

import math
import warnings

import torch

from _common import apply_threads, base_parser, emit, header

SETTINGS = [(1e-3, 1, 32), (1e-3, 3, 32), (1e-3, 10, 32), (1e-3, 20, 16), (1e-2, 3, 32), (1e-2, 20, 16)]


def run(lr: float, epochs: int, batch: int, seed: int, bench) -> dict:
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin

    from avalanche_fgadahat import HAT, set_seed
    from avalanche_fgadahat.models import HATMLP

    set_seed(seed)
    model = HATMLP(64, (128, 128))
    strategy = HAT(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=lr), train_mb_size=batch,
                   train_epochs=epochs, evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]))
    reports = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for experience in bench.train_stream:
            strategy.train(experience)
            reports.append(strategy.hat_plugin.last_report)
        results = strategy.eval(bench.test_stream)
    accuracies = [v for k, v in results.items() if k.startswith("Top1_Acc_Exp/eval_phase/test_stream")]
    steps = sum(math.ceil(len(e.dataset) / batch) for e in bench.train_stream) / len(bench.train_stream) * epochs
    return {
        "steps": steps,
        "acc": sum(accuracies) / len(accuracies),
        "worst": min(accuracies),
        "change": sum(r.mask_change for r in reports) / len(reports),
        "shift": sum(r.embedding_shift for r in reports) / len(reports),
        "free": reports[-1].free_capacity,
        "warned": sum(any("mask bits" in m for m in r.warnings) for r in reports),
    }


def main() -> None:
    parser = base_parser(__doc__, ["digits"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    apply_threads(args.threads)
    from avalanche_fgadahat.data import split_digits

    bench = split_digits(5)
    lines = header(torch.device("cpu"), "not timed", "setting") + [
        "| lr | epochs | batch | steps/task | lr × steps | ACC % | worst task % | mask bits changed % "
        "| embedding shift | free capacity after task 5 | tasks warned |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lr, epochs, batch in SETTINGS:
        rows = [run(lr, epochs, batch, seed, bench) for seed in args.seeds]
        mean = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}
        lines.append(
            f"| {lr:g} | {epochs} | {batch} | {mean['steps']:.0f} | {lr * mean['steps']:.3f} | {100 * mean['acc']:.1f} "
            f"| {100 * min(r['worst'] for r in rows):.1f} | {100 * mean['change']:.2f} | {mean['shift']:.4f} "
            f"| {mean['free']:.3f} | {sum(r['warned'] for r in rows)}/{5 * len(rows)} |"
        )
        print(lines[-1], flush=True)
    lines.append("")
    lines.append(f"Seeds {args.seeds}; means over seeds, worst task over seeds and tasks.")
    emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()

"""Training fingerprints: a refactor of the HAT family must leave every number unchanged.

Trains HAT (its four modes), AdaHAT (its three modes), and FG-AdaHAT (all 23 importance
types, every summing strategy, scheduler and aggregation, both filters, the training-mask
flag) for three tasks of Split Digits on ``HATMLP``, plus HAT, AdaHAT and two FG-AdaHAT
variants on ``HATAlexNet`` and ``HATResNet18``, and writes, for each configuration, the
SHA-256 of every tensor of the final ``state_dict`` and of the evaluation logits of every task.

Usage::

    python scripts/fingerprint.py OUT.json            # record
    python scripts/fingerprint.py OUT.json --compare BEFORE.json   # record and compare
    python scripts/fingerprint.py FUSED.json --fused-step --compare EAGER.json   # the fused step

Run it before and after a change that must not move the results (``docs/architecture.md``).
``--fused-step`` trains every configuration with ``fused_step=True`` (``docs/benchmark.md``,
"Fused step"): compared with an eager record it must give the same fingerprints, and it fails
if a compiled kernel fell back to eager (``FusedStepWarning``) instead of running.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings

import torch
from avalanche.benchmarks import tensors_benchmark
from avalanche.training.plugins import EvaluationPlugin

from avalanche_fgadahat import HAT, AdaHAT, FGAdaHAT, set_seed
from avalanche_fgadahat.data import split_digits
from avalanche_fgadahat.importance import IMPORTANCE_TYPES
from avalanche_fgadahat.models import HATAlexNet, HATMLP, HATResNet18

SUMMING_EXTRA = {
    "linear_decrease": {"importance_summing_strategy_linear_step": 0.5},
    "exponential_decrease": {"importance_summing_strategy_exponential_rate": 2.0},
    "log_decrease": {"importance_summing_strategy_log_base": 3.0},
}


def configurations() -> list[tuple[str, str, type, dict]]:
    """``(name, backbone, strategy, settings)`` of every fingerprinted run."""
    runs: list[tuple[str, str, type, dict]] = []
    for mode in ("hat", "hat_random", "hat_const_alpha", "hat_const_1"):
        runs.append((f"mlp/hat/{mode}", "mlp", HAT, {"adjustment_mode": mode}))
    runs.append(("mlp/hat/clamp6", "mlp", HAT, {"embedding_clamp": 6.0, "task_embedding_init_mode": "U-11"}))
    runs.append(("mlp/hat/cross", "mlp", HAT, {"mask_sparsity_reg_mode": "cross"}))
    for mode in ("adahat", "adahat_no_sum", "adahat_no_reg", "hat_const_alpha"):
        runs.append((f"mlp/adahat/{mode}", "mlp", AdaHAT, {"adjustment_mode": mode, "adjustment_intensity": 1e-3}))
    for name in IMPORTANCE_TYPES:
        runs.append((f"mlp/fgadahat/{name}", "mlp", FGAdaHAT, {"importance_type": name}))
    from avalanche_fgadahat.importance import SUMMING_STRATEGIES, IMPORTANCE_SCHEDULERS
    for summing in SUMMING_STRATEGIES:
        runs.append((f"mlp/fgadahat/sum/{summing}", "mlp", FGAdaHAT,
                     {"importance_summing_strategy": summing, **SUMMING_EXTRA.get(summing, {})}))
    for scheduler in IMPORTANCE_SCHEDULERS:
        runs.append((f"mlp/fgadahat/sched/{scheduler}", "mlp", FGAdaHAT, {"importance_scheduler_type": scheduler}))
    for aggregation in ("max", "mean"):
        runs.append((f"mlp/fgadahat/agg/{aggregation}", "mlp", FGAdaHAT,
                     {"neuron_to_weight_importance_aggregation_mode": aggregation}))
    runs.append(("mlp/fgadahat/filters", "mlp", FGAdaHAT, {
        "filter_by_cumulative_mask": True, "filter_unmasked_importance": True,
        "step_multiply_training_mask": False}))
    for backbone in ("alexnet", "resnet"):
        runs.append((f"{backbone}/hat", backbone, HAT, {}))
        runs.append((f"{backbone}/adahat", backbone, AdaHAT, {}))
        runs.append((f"{backbone}/fgadahat/icu", backbone, FGAdaHAT, {}))
        runs.append((f"{backbone}/fgadahat/ig", backbone, FGAdaHAT, {"importance_type": "integrated_gradients_abs"}))
    return runs


def build_model(backbone: str) -> torch.nn.Module:
    if backbone == "mlp":
        return HATMLP(input_size=64, hidden_sizes=(32, 16))
    if backbone == "alexnet":
        return HATAlexNet(input_shape=(1, 8, 8), conv_channels=(8, 8), kernel_sizes=(3, 2), fc_sizes=(32,))
    return HATResNet18(input_shape=(1, 8, 8), widths=(4, 4, 8, 8), batch_norm="per_task", small_input_stem=True)


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def fingerprint(backbone: str, strategy_class: type, settings: dict) -> dict[str, str]:
    set_seed(0)
    benchmark = split_digits(n_experiences=5) if backbone == "mlp" else image_digits()
    model = build_model(backbone)
    strategy = strategy_class(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        train_mb_size=32, train_epochs=1, evaluator=EvaluationPlugin(), **settings,
    )
    for experience in benchmark.train_stream[:3]:
        strategy.train(experience)
    result = {f"state/{k}": digest(v) for k, v in model.state_dict().items()}
    model.eval()
    with torch.no_grad():
        for task, experience in enumerate(benchmark.test_stream[:3]):
            x = torch.stack([experience.dataset[i][0] for i in range(64)])
            result[f"logits/{task}"] = digest(model(x, task))
    return result


def image_digits():
    """Split Digits (three tasks) with the images as ``1×8×8`` tensors, for conv backbones."""
    flat = split_digits(n_experiences=5)
    tensors = {}
    for stream in ("train", "test"):
        tensors[stream] = []
        for experience in getattr(flat, f"{stream}_stream")[:3]:
            items = [experience.dataset[i] for i in range(len(experience.dataset))]
            tensors[stream].append((torch.stack([it[0] for it in items]).view(-1, 1, 8, 8),
                                    torch.tensor([int(it[1]) for it in items])))
    return tensors_benchmark(train_tensors=tensors["train"], test_tensors=tensors["test"], task_labels=[0, 1, 2])


def _unprefixed(record: dict[str, str]) -> dict[str, str]:
    """A record with the state-dict names of the networks' layers without ``body.`` (the package's
    networks named them ``fc.0.weight`` before they were built by the conversion)."""
    return {key.replace("state/body.", "state/", 1): value for key, value in record.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--compare", default=None)
    parser.add_argument("--only", default=None, help="substring of the configuration names to run")
    parser.add_argument("--fused-step", action="store_true", help="train every configuration with fused_step=True")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.fused_step:
        from avalanche_fgadahat.masking.fusion import FusedStepWarning

        warnings.simplefilter("error", FusedStepWarning)  # a kernel that could not compile fails the run
    torch.set_num_threads(1)
    records = {}
    for name, backbone, strategy_class, settings in configurations():
        if args.only and args.only not in name:
            continue
        settings = {**settings, "fused_step": True} if args.fused_step else settings
        records[name] = fingerprint(backbone, strategy_class, settings)
        print(name, records[name].get("logits/2"), flush=True)
    with open(args.out, "w") as handle:
        json.dump(records, handle, indent=1, sort_keys=True)
    if args.compare:
        with open(args.compare) as handle:
            before = {name: _unprefixed(record) for name, record in json.load(handle).items()}
        records = {name: _unprefixed(record) for name, record in records.items()}
        differ = [name for name in records if records[name] != before.get(name)]
        missing = [name for name in before if name not in records and not args.only]
        print(f"{len(records)} configurations; {len(differ)} differ; {len(missing)} not run")
        for name in differ:
            keys = [k for k in records[name] if records[name][k] != before.get(name, {}).get(k)]
            print(f"  DIFFER {name}: {keys[:6]}")
        return 1 if differ or missing else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

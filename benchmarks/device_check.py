"""Training-path checks on an accelerator: the properties the CPU test suite proves, on ``--device``.

CI has no GPU, so the test suite runs on the CPU. This script re-checks, on the device a
user trains on, what can break only there (a tensor created on the wrong device, a kernel
that rounds differently, a checkpoint that cannot be moved):

* **frozen** — HAT on five Split-Digits tasks with the MLP, AlexNet and ResNet-18 backbones:
  after every later task, each earlier task's outputs are *bit-identical* to those right after
  its own training (HAT's guarantee, Eq. 2 of Serra et al. 2018), while the shared weights
  that task 0 left free did move.
* **importance** — AdaHAT and FG-AdaHAT with each of the 23 importance types train two
  tasks: every parameter, buffer and accumulated importance stays on the device and finite,
  and every importance row has a non-zero maximum.
* **cpu-agreement** — HAT, AdaHAT and FG-AdaHAT trained from the same seed on the same
  batches on the CPU and on the device (two tasks, one epoch each): every float parameter and
  buffer within 1e-3 of the CPU's (different kernels round differently, so not bit-equal; a
  formula that differs between devices shows as a gap of the order of the weights).
* **checkpoint** — a strategy trained on the device, saved with the package's
  ``save_checkpoint`` and loaded onto the CPU with ``map_location="cpu"``: the outputs on every
  trained task equal the device's to float tolerance, and training continues there.

Each check prints one line; the table goes to ``--out``. The exit status is 1 if any failed.

    python benchmarks/device_check.py --device cuda --out docs/benchmarks/device_check_cuda.md
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable

import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin

from avalanche_fgadahat import AdaHAT, FGAdaHAT, HAT, set_seed
from avalanche_fgadahat.checkpoint import maybe_load_checkpoint, save_checkpoint
from avalanche_fgadahat.data import split_digits
from avalanche_fgadahat.importance import REFERENCE_IMPORTANCE_TYPES
from avalanche_fgadahat.models import HATAlexNet, HATMLP, HATResNet18
from _common import base_parser, emit, header

warnings.filterwarnings("ignore")

STRATEGIES = {"HAT": HAT, "AdaHAT": AdaHAT, "FGAdaHAT": FGAdaHAT}


class Reshaped8x8:
    """Feeds the 64 digit features to a conv backbone as 1×8×8 images."""

    @staticmethod
    def wrap(model):
        inner = model.forward_features
        model.forward_features = lambda x, masks, task: inner(x.view(-1, 1, 8, 8), masks, task)
        return model


BACKBONES: dict[str, Callable[[], torch.nn.Module]] = {
    "mlp": lambda: HATMLP(64, (32, 32)),
    "alexnet": lambda: Reshaped8x8.wrap(HATAlexNet((1, 8, 8), conv_channels=(4, 6), kernel_sizes=(3, 2), fc_sizes=(16,),
                                                   conv_dropout=0.0, fc_dropout=0.0)),
    "resnet": lambda: Reshaped8x8.wrap(HATResNet18((1, 8, 8), widths=(4, 4, 8, 8), small_input_stem=True)),
}


def _quiet() -> EvaluationPlugin:
    return EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])


def _test_inputs(bench, device) -> list[torch.Tensor]:
    return [torch.stack([exp.dataset[i][0] for i in range(len(exp.dataset))]).to(device) for exp in bench.test_stream]


def _outputs(model, inputs: list[torch.Tensor], tasks) -> dict[int, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        return {t: model(inputs[t], t) for t in tasks}


def _tensors_on(model, device: torch.device) -> tuple[bool, bool]:
    """(all parameters and buffers on ``device``, all of them finite)."""
    tensors = [*model.parameters(), *model.buffers()]
    on_device = all(t.device.type == device.type for t in tensors)
    finite = all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())
    return on_device, bool(finite)


def check_frozen(device: torch.device, kind: str) -> tuple[bool, str]:
    set_seed(0)
    bench = split_digits(5)
    model = BACKBONES[kind]()
    strategy = HAT(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2), train_mb_size=64,
                   train_epochs=2, eval_mb_size=512, evaluator=_quiet(), device=device)
    inputs = _test_inputs(bench, device)
    first_weight = model.param_layouts[0].weight
    reference, changed = {}, []
    for t, exp in enumerate(bench.train_stream):
        strategy.train(exp)
        if t == 0:
            after_first = first_weight.detach().clone()
        now = _outputs(model, inputs, range(t + 1))
        reference[t] = now[t]
        changed += [(old, t) for old in range(t) if not torch.equal(now[old], reference[old])]
    moved = not torch.equal(first_weight.detach(), after_first)
    ok = not changed and moved
    return ok, f"earlier tasks changed: {changed or 'none'}; shared weights moved: {moved}"


def check_importance(device: torch.device, importance_type: str | None) -> tuple[bool, str]:
    set_seed(0)
    bench = split_digits(5)
    model = HATMLP(64, (16, 8))
    common = dict(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2), train_mb_size=64,
                  train_epochs=1, eval_mb_size=256, evaluator=_quiet(), device=device)
    strategy = AdaHAT(**common) if importance_type is None else FGAdaHAT(importance_type=importance_type, **common)
    started = time.perf_counter()
    for exp in bench.train_stream[:2]:
        strategy.train(exp)
    seconds = time.perf_counter() - started
    on_device, finite = _tensors_on(model, device)
    rows_ok = True
    if importance_type is not None:
        for state in model.unit_state.values():
            for row in state.task_importances[:2]:
                rows_ok &= bool(torch.isfinite(row).all()) and float(row.max()) > 0
    ok = on_device and finite and rows_ok and model.trained_tasks() == [0, 1]
    return ok, f"on device: {on_device}; finite: {finite}; importance rows non-zero: {rows_ok}; 2 tasks in {seconds * 1000:.0f} ms"


def _train_two_tasks(name: str, device: torch.device) -> tuple[dict[str, torch.Tensor], list[float]]:
    set_seed(0)
    bench = split_digits(5)
    model = HATMLP(64, (32, 32))
    strategy = STRATEGIES[name](model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2), train_mb_size=32,
                                train_epochs=1, eval_mb_size=512, evaluator=_quiet(), device=device)
    for exp in bench.train_stream[:2]:
        strategy.train(exp)
    results = strategy.eval(bench.test_stream[:2])
    accuracies = [results[f"Top1_Acc_Exp/eval_phase/test_stream/Task{j:03d}/Exp{j:03d}"] for j in range(2)]
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if v.is_floating_point()}
    return state, accuracies


def check_cpu_agreement(device: torch.device, name: str, tolerance: float = 1e-3) -> tuple[bool, str]:
    """Same seed, same batches (the loader shuffles on the CPU generator), two tasks of one epoch:
    every float parameter and buffer (weights, embeddings, masks, importances) within
    ``tolerance`` of the CPU's. Different kernels round differently, so not bit-equal; a
    formula that differs between devices shows as a gap of the order of the weights."""
    (on_device, acc_device), (on_cpu, acc_cpu) = _train_two_tasks(name, device), _train_two_tasks(name, torch.device("cpu"))
    gaps = {k: float((on_device[k] - on_cpu[k]).abs().max()) for k in on_cpu if on_cpu[k].numel()}
    worst = max(gaps, key=gaps.get)
    accuracy = ", ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(acc_device, acc_cpu))
    return gaps[worst] <= tolerance, (f"largest state gap {gaps[worst]:.1e} in `{worst}` (≤ {tolerance:g}) over {len(gaps)} "
                                      f"tensors; accuracy device/cpu: {accuracy}")


def check_checkpoint_to_cpu(device: torch.device, name: str) -> tuple[bool, str]:
    def make(on):
        set_seed(0)
        model = HATMLP(64, (32, 32))
        return STRATEGIES[name](model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2), train_mb_size=64,
                                train_epochs=1, eval_mb_size=512, evaluator=_quiet(), device=on)

    bench = split_digits(5)
    trained = make(device)
    for exp in bench.train_stream[:2]:
        trained.train(exp)
    inputs = _test_inputs(bench, device)
    expected = _outputs(trained.model, inputs, range(2))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "run.ckpt")
        save_checkpoint(trained, path)
        loaded, start = maybe_load_checkpoint(make(torch.device("cpu")), path, map_location="cpu")
    on_cpu, _ = _tensors_on(loaded.model, torch.device("cpu"))
    got = _outputs(loaded.model, [x.cpu() for x in inputs], range(2))
    gap = max(float((got[t] - expected[t].cpu()).abs().max()) for t in range(2))
    loaded.device = torch.device("cpu")
    loaded.train(bench.train_stream[2])
    ok = start == 2 and on_cpu and gap <= 1e-4 and loaded.model.trained_tasks() == [0, 1, 2]
    return ok, f"resumes at experience {start}; all on cpu: {on_cpu}; largest output gap {gap:.1e}; trained task 2 on cpu"


def checks(device: torch.device) -> list[tuple[str, Callable[[], tuple[bool, str]]]]:
    planned = [(f"frozen/{kind}", lambda kind=kind: check_frozen(device, kind)) for kind in BACKBONES]
    planned.append(("importance/AdaHAT", lambda: check_importance(device, None)))
    planned += [(f"importance/{t}", lambda t=t: check_importance(device, t)) for t in REFERENCE_IMPORTANCE_TYPES]
    if device.type != "cpu":
        planned += [(f"cpu-agreement/{n}", lambda n=n: check_cpu_agreement(device, n)) for n in STRATEGIES]
    planned += [(f"checkpoint-to-cpu/{n}", lambda n=n: check_checkpoint_to_cpu(device, n)) for n in STRATEGIES]
    return planned


def main() -> int:
    parser = base_parser(__doc__, ["digits"])
    parser.add_argument("--only", default=None, help="run the checks whose name contains this text")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows, failed = [], 0
    for name, run in checks(device):
        if args.only and args.only not in name:
            continue
        try:
            ok, detail = run()
        except Exception as error:  # a check that crashes is a failed check, with its reason
            ok, detail = False, f"{type(error).__name__}: {error}"
            traceback.print_exc()
        failed += not ok
        line = f"| {name} | {'pass' if ok else '**FAIL**'} | {detail} |"
        print(line, flush=True)
        rows.append(line)
    lines = header(device, "wall-clock seconds", "check")
    lines += ["| check | result | detail |", "|---|---|---|", *rows, "", f"{len(rows) - failed} of {len(rows)} checks passed."]
    emit("\n".join(lines) + "\n", args.out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

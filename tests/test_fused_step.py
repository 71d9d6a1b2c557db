"""The opt-in fused step (``fused_step=True``; ``adjustment/gradient_step.py``,
``importance/accumulator.py``, ``masking/fusion.py``) gives the eager step's numbers bit for bit.

The case: ``HATMLP(64, (32, 16))`` on the first two tasks of Split Digits, Adam, batch 64, one
epoch each (five steps per task; the second task trains under the first one's masks, so HAT
freezes units and AdaHAT/FG-AdaHAT compute soft rates from ``S`` and the importance). Each
method trains once eagerly and once fused from the same seed; every parameter and buffer of the
model (weights, heads, task embeddings, the task masks, ``M``, ``S``, FG-AdaHAT's importances)
and every tensor of Adam's state must be equal (``torch.equal``), and the compiled kernels must
have run at every step (no eager fallback). On the CPU, and on CUDA where there is a device (none
was lent to the task that wrote this: the GPU identity is unverified). One torch thread; compile
time is paid once per kernel and network in this process (about 30 s for the whole module on
this project's busy 2-core machine with inductor's on-disk cache empty, 12 s with it filled).

Also: the eager fallback when ``torch.compile`` fails is loud (``FusedStepWarning``) and gives
the same numbers; importing the package compiles nothing; a compiled ``σ`` is not the gate's
(why the gate stays eager: at most two float32 ulps apart, measured here).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from hat_test_support import quiet

from avalanche_fgadahat import HAT, AdaHAT, FGAdaHAT, HATPlugin, set_seed
from avalanche_fgadahat.adjustment import gradient_step
from avalanche_fgadahat.importance import accumulator
from avalanche_fgadahat.masking.fusion import FusedKernel, FusedStepWarning
from avalanche_fgadahat.masking.subnormals import SubnormalCounter
from avalanche_fgadahat.models import HATMLP

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "avalanche_fgadahat"
TASKS = 2

#: case → (strategy, settings, the kernel that must run at every step, whether FG-AdaHAT accumulates)
CASES = {
    "hat": (HAT, {}, "CONSTANT_RATES_KERNEL", False),
    "hat_const_alpha": (HAT, {"adjustment_mode": "hat_const_alpha", "alpha": 0.3}, "CONSTANT_RATES_KERNEL", False),
    "hat_random": (HAT, {"adjustment_mode": "hat_random"}, "COMPENSATION_KERNEL", False),
    "adahat": (AdaHAT, {}, "SOFT_RATES_KERNEL", False),
    "fgadahat_icu": (FGAdaHAT, {"importance_type": "icu"}, "SOFT_RATES_KERNEL", True),
    "fgadahat_ig_unweighted": (FGAdaHAT, {"importance_type": "ig", "step_multiply_training_mask": False},
                               "SOFT_RATES_KERNEL", True),
}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: the devices the identity is checked on (CUDA where there is one: not on this project's CPU machine)
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]


def _train(digits5, case: str, fused: bool, device: str = "cpu", **extra):
    """``(model state, optimizer state, steps, final network capacity)`` after :data:`TASKS` tasks."""
    strategy_class, settings, _, _ = CASES[case]
    settings = {**settings, **extra}
    set_seed(0)
    model = HATMLP(64, (32, 16))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    strategy = strategy_class(model=model, optimizer=optimizer, train_mb_size=64, train_epochs=1,
                              evaluator=quiet(), fused_step=fused, device=device, **settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", FusedStepWarning)
        for experience in digits5.train_stream[:TASKS]:
            strategy.train(experience)
    steps = strategy.clock.train_iterations
    return model.state_dict(), optimizer.state_dict()["state"], steps, strategy.hat_plugin.network_capacity()


def _assert_equal_states(eager, fused) -> None:
    model_e, optim_e = eager[:2]
    model_f, optim_f = fused[:2]
    assert model_e.keys() == model_f.keys()
    changed = [key for key in model_e if not torch.equal(model_e[key], model_f[key])]
    assert not changed, f"model entries not bit-identical: {changed}"
    assert optim_e.keys() == optim_f.keys()
    for index, state in optim_e.items():
        assert state.keys() == optim_f[index].keys()
        changed = [name for name, value in state.items() if not torch.equal(value, optim_f[index][name])]
        assert not changed, f"optimizer state of parameter {index} not bit-identical: {changed}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(CASES))
def test_fused_step_equals_the_eager_step_bit_for_bit(digits5, case, device):
    _, settings, kernel_name, accumulates = CASES[case]
    kernel = getattr(gradient_step, kernel_name)
    calls = kernel.compiled_calls, accumulator.FUSED_ACCUMULATION.compiled_calls
    eager = _train(digits5, case, fused=False, device=device)
    assert (kernel.compiled_calls, accumulator.FUSED_ACCUMULATION.compiled_calls) == calls  # eager: no kernel
    fused = _train(digits5, case, fused=True, device=device)
    steps = fused[2]
    assert steps == eager[2] >= 2 * TASKS
    # every step of the fused run went through the compiled kernels (no silent eager fallback)
    assert kernel.failure is None and kernel.compiled_calls - calls[0] == steps
    assert accumulator.FUSED_ACCUMULATION.compiled_calls - calls[1] == (steps if accumulates else 0)
    _assert_equal_states(eager, fused)
    # not a vacuous comparison: the second task trained under non-trivial rates, and moved the weights
    assert 0.0 < fused[3] < 1.0 and fused[3] == eager[3]
    state = fused[0]
    assert all(state[f"unit_state.{k}.task_masks"][:TASKS].sum(dim=1).gt(0).all() for k in ("fc0", "fc1"))
    if accumulates:
        assert all(state[f"unit_state.{k}.summed_importance"].gt(0).any() for k in ("fc0", "fc1"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ["hat", "adahat", "fgadahat_icu"])
def test_fused_step_equals_the_eager_step_with_the_other_guard_setting(digits5, case, device):
    """The kernels take ``guards`` as a compile-time constant: with the guards off on the CPU
    (``"never"``) and on on CUDA (``"always"``; the default ``"cpu"`` turns them off there, which
    the test above covers) the fused step is the eager step bit for bit too."""
    mode = "never" if device == "cpu" else "always"
    _, _, kernel_name, accumulates = CASES[case]
    kernel = getattr(gradient_step, kernel_name)
    eager = _train(digits5, case, fused=False, device=device, subnormal_guards=mode)
    calls = kernel.compiled_calls, accumulator.FUSED_ACCUMULATION.compiled_calls
    fused = _train(digits5, case, fused=True, device=device, subnormal_guards=mode)
    steps = fused[2]
    assert kernel.failure is None and kernel.compiled_calls - calls[0] == steps
    assert accumulator.FUSED_ACCUMULATION.compiled_calls - calls[1] == (steps if accumulates else 0)
    _assert_equal_states(eager, fused)
    assert 0.0 < fused[3] < 1.0 and fused[3] == eager[3]


def test_failed_compilation_warns_once_and_runs_eagerly_with_the_same_numbers(digits5, monkeypatch):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler on this machine")

    monkeypatch.setattr(torch, "compile", no_compiler)
    for name in ("CONSTANT_RATES_KERNEL", "SOFT_RATES_KERNEL", "COMPENSATION_KERNEL"):
        kernel = getattr(gradient_step, name)
        for attribute, value in (("_compiled", None), ("failure", None), ("compiled_calls", 0)):
            monkeypatch.setattr(kernel, attribute, value)
    eager = _train(digits5, "hat", fused=False)
    with pytest.warns(FusedStepWarning, match="no C\\+\\+ compiler on this machine") as record:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No loggers")
            set_seed(0)
            model = HATMLP(64, (32, 16))
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
            strategy = HAT(model=model, optimizer=optimizer, train_mb_size=64, evaluator=quiet(), fused_step=True)
            for experience in digits5.train_stream[:TASKS]:
                strategy.train(experience)
    assert sum(issubclass(w.category, FusedStepWarning) for w in record) == 1  # once, not per step
    kernel = gradient_step.CONSTANT_RATES_KERNEL
    assert kernel.compiled_calls == 0 and "no C++ compiler" in kernel.failure
    fused = (model.state_dict(), optimizer.state_dict()["state"])
    _assert_equal_states(eager, fused)


def test_kernel_falls_back_to_its_own_function_and_reset_compiles_again(monkeypatch):
    def add_one(x: torch.Tensor) -> torch.Tensor:
        return x + 1

    kernel = FusedKernel(add_one, "add one")
    monkeypatch.setattr(torch, "compile", lambda *a, **k: (_ for _ in ()).throw(OSError("cc1: not found")))
    with pytest.warns(FusedStepWarning, match=r"add one kernel \(OSError: cc1: not found\)"):
        assert torch.equal(kernel(torch.zeros(3)), torch.ones(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(kernel(torch.ones(2)), torch.full((2,), 2.0))  # no second warning
    kernel.reset()
    assert kernel.failure is None and kernel.compiled_calls == 0


def test_under_a_dispatch_mode_a_kernel_runs_eagerly_and_keeps_its_compiled_form():
    """``torch.compile`` does not run under a ``TorchDispatchMode``: such a call runs eagerly (the
    mode sees the ops), without a warning or a fallback; the next call outside runs compiled."""
    def double(x: torch.Tensor) -> torch.Tensor:
        return x * 2.0

    kernel = FusedKernel(double, "double")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with SubnormalCounter() as counter:
            assert torch.equal(kernel(torch.ones(3)), torch.full((3,), 2.0))
        assert counter.ops >= 1 and kernel.failure is None and kernel.compiled_calls == 0
        assert torch.equal(kernel(torch.ones(3)), torch.full((3,), 2.0))
    assert kernel.compiled_calls == 1


def test_fused_step_is_off_by_default_and_refuses_a_non_bool():
    assert HATPlugin().config.fused_step is False
    assert HATPlugin(fused_step=True).fused_step is True
    with pytest.raises(ValueError, match="fused_step must be True or False, got 'yes'"):
        HATPlugin(fused_step="yes")
    model = HATMLP(64, (4,))
    with pytest.raises(ValueError, match="fused_step must be True or False, got 1"):
        FGAdaHAT(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), fused_step=1)


def test_no_module_imports_the_compiler_and_importing_the_package_compiles_nothing():
    """``torch.compile`` runs on a kernel's first call only: no library module imports
    ``torch._dynamo``/``torch._inductor`` at import time (``masking/fusion.py`` reads inductor's
    option list inside the compiling call), and importing every module of the fused step in a
    fresh interpreter calls ``torch.compile`` zero times."""
    def import_time_nodes(tree):  # module-level statements, through if/try blocks, not into functions
        pending = list(tree.body)
        while pending:
            node = pending.pop()
            yield node
            if isinstance(node, (ast.If, ast.Try)):
                pending += [*node.body, *node.orelse, *getattr(node, "finalbody", []),
                            *(n for h in getattr(node, "handlers", []) for n in h.body)]

    for path in PACKAGE_ROOT.rglob("*.py"):
        if "experiments" in path.parts:
            continue
        for node in import_time_nodes(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith(("torch._dynamo", "torch._inductor")) for n in names), path
    script = textwrap.dedent(
        """
        import json, torch
        calls = []
        torch.compile = lambda *args, **kwargs: calls.append(args)
        import avalanche_fgadahat
        from avalanche_fgadahat.adjustment import gradient_step
        from avalanche_fgadahat.importance import accumulator
        kernels = [gradient_step.CONSTANT_RATES_KERNEL, gradient_step.SOFT_RATES_KERNEL,
                   gradient_step.COMPENSATION_KERNEL, accumulator.FUSED_ACCUMULATION]
        print(json.dumps({"calls": len(calls), "compiled": [k._compiled is not None for k in kernels]}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"calls": 0, "compiled": [False] * 4}


def test_a_compiled_sigmoid_is_not_the_gates_bit_for_bit_which_is_why_the_gate_stays_eager():
    """Eager ``torch.sigmoid`` on the CPU computes the elements that do not fill a vector register
    with the scalar ``std::exp``; inductor's compiled code computes them vectorised. The two agree
    within two float32 ulps (measured here over 40 sizes); the fused step keeps ``σ`` out."""
    sizes = range(1, 41)
    generator = torch.Generator().manual_seed(0)
    xs = [torch.randn(n, generator=generator) * 20 for n in sizes]
    compiled = torch.compile(lambda ts: [torch.sigmoid(t) for t in ts], dynamic=False, fullgraph=True)(xs)
    worst = 0.0
    for x, c in zip(xs, compiled):
        e = torch.sigmoid(x)
        ulp = torch.nextafter(e, torch.full_like(e, 2.0)) - e
        worst = max(worst, float(((e - c).abs() / ulp).max()))
    assert worst <= 2.0


def test_a_user_expanded_gradient_takes_the_eager_path_instead_of_crashing(digits5):
    """The fused kernels write each gradient in place; a gradient a user set to an expanded tensor
    (its elements share memory) cannot be written so: that step runs eagerly, where the flush
    replaces it, with no ``FusedStepWarning`` and the eager run's numbers."""
    from avalanche.core import SupervisedPlugin
    from avalanche.training import Naive

    class ExpandBiasGradient(SupervisedPlugin):
        def after_backward(self, strategy, **kwargs):
            bias = strategy.model.body.fc[0].bias
            bias.grad = bias.grad.mean().expand_as(bias)

    states = []
    for fused in (False, True):
        set_seed(0)
        model = HATMLP(64, (16,))
        strategy = Naive(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2), train_mb_size=64,
                         train_epochs=1, evaluator=quiet(), plugins=[ExpandBiasGradient(), HATPlugin(fused_step=fused)])
        with warnings.catch_warnings():
            warnings.simplefilter("error", FusedStepWarning)
            for experience in digits5.train_stream[:2]:
                strategy.train(experience)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])

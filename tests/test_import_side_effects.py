"""The package's import boundary: no import-time side effects, no cycles, harness apart.

* Importing ``avalanche_fgadahat`` (fresh subprocess) leaves ``torch.optim``'s attributes,
  ``dill.settings``, the warning filters and torch's global switches exactly as they were,
  and does not load the research harness ``avalanche_fgadahat.experiments``.
* The checkpoint repair happens where checkpoints are written and read: a save → load round
  trip through ``avalanche_fgadahat.checkpoint`` works on a small strategy and leaves
  ``torch.optim`` and dill as it found them; Avalanche's own functions work after
  ``prepare_checkpointing()``.
* Static checks with ``ast``: no library module imports ``avalanche_fgadahat.experiments``,
  and no import cycle among the package's modules (``if TYPE_CHECKING:`` imports ignored).

Setup of the round trip as ``tests/test_reliability.py``: ``split_digits``, ``HATMLP(64, ...)``,
``HAT`` with SGD and momentum.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

PACKAGE = "avalanche_fgadahat"
HARNESS = f"{PACKAGE}.experiments"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# Snapshots of what an import could change in other libraries, as JSON-able values.
SNAPSHOT = textwrap.dedent(
    '''
    import sys, warnings
    import dill, torch, torch.optim

    def snapshot():
        optim = sys.modules["torch.optim"]
        return {
            "torch.optim": {name: f"{type(value).__name__}:{id(value)}" for name, value in vars(optim).items()},
            "dill.settings": {key: repr(value) for key, value in dill.settings.items()},
            "warnings.filters": [repr(f) for f in warnings.filters],
            "torch": [str(torch.get_default_dtype()), torch.are_deterministic_algorithms_enabled(),
                      torch.is_grad_enabled(), torch.get_num_threads()],
        }
    '''
)

IMPORT_SCRIPT = SNAPSHOT + textwrap.dedent(
    '''
    import json
    before = snapshot()
    import avalanche_fgadahat
    after = snapshot()
    harness = sorted(m for m in sys.modules if m == "avalanche_fgadahat.experiments"
                     or m.startswith("avalanche_fgadahat.experiments."))
    print(json.dumps({"before": before, "after": after, "harness": harness}))
    '''
)

ROUND_TRIP_SCRIPT = SNAPSHOT + textwrap.dedent(
    '''
    import json, os
    warnings.simplefilter("ignore")
    workdir = sys.argv[1]
    unrepaired = not hasattr(torch.optim, "sgd")  # this torch deletes its submodule attributes
    from avalanche.checkpointing import maybe_load_checkpoint as avalanche_load
    from avalanche.checkpointing import save_checkpoint as avalanche_save
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche_fgadahat import HAT, set_seed
    from avalanche_fgadahat.checkpoint import maybe_load_checkpoint, prepare_checkpointing, save_checkpoint
    from avalanche_fgadahat.data import split_digits
    from avalanche_fgadahat.models import HATMLP

    bench = split_digits(2)

    def build(seed):
        set_seed(seed)
        model = HATMLP(64, (16,))
        return HAT(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                   train_mb_size=32, train_epochs=1, eval_mb_size=512,
                   evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]))

    def accuracies(strategy):
        history = strategy.evaluator.get_all_metrics()
        return [history[f"Top1_Acc_Exp/eval_phase/test_stream/Task{j:03d}/Exp{j:03d}"][1] for j in range(2)]

    out = {"unrepaired": unrepaired}
    initial = snapshot()
    trained = build(0)
    trained.train(bench.train_stream[0])
    trained.eval(bench.test_stream)
    ckpt = os.path.join(workdir, "run.ckpt")
    save_checkpoint(trained, ckpt)
    out["after_save"] = snapshot() == initial
    fresh = build(123)
    loaded, start = maybe_load_checkpoint(fresh, ckpt)
    out["after_load"] = snapshot() == initial
    out["start"] = start
    out["same_object"] = loaded is fresh
    out["trained_tasks"] = loaded.model.trained_tasks()
    out["same_weights"] = all(torch.equal(a, b) for a, b in zip(trained.model.state_dict().values(),
                                                                 loaded.model.state_dict().values()))
    out["same_accuracies"] = accuracies(loaded) == accuracies(trained)
    loaded.train(bench.train_stream[1])  # the loaded strategy trains on
    out["trained_after_resume"] = loaded.model.trained_tasks()
    try:  # Avalanche's own function, without the repair
        avalanche_save(trained, os.path.join(workdir, "raw.ckpt"))
        out["avalanche_unprepared"] = "saved"
    except Exception as error:
        out["avalanche_unprepared"] = type(error).__name__
    out["prepared"] = prepare_checkpointing()
    avalanche_save(trained, os.path.join(workdir, "avalanche.ckpt"))
    _, out["avalanche_start"] = avalanche_load(build(7), os.path.join(workdir, "avalanche.ckpt"))
    out["dill_after_prepare"] = snapshot()["dill.settings"] == initial["dill.settings"]
    print(json.dumps(out))
    '''
)


def _run(script: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_package_changes_no_other_library():
    out = _run(IMPORT_SCRIPT)
    before, after = out["before"], out["after"]
    assert after["torch.optim"] == before["torch.optim"]
    assert after["dill.settings"] == before["dill.settings"]
    assert after["warnings.filters"] == before["warnings.filters"]
    assert after["torch"] == before["torch"]
    assert out["harness"] == []  # the research harness is not loaded by the library


def test_checkpoint_round_trip_repairs_only_during_the_call(tmp_path):
    out = _run(ROUND_TRIP_SCRIPT, str(tmp_path))
    assert out["after_save"] and out["after_load"]  # torch.optim and dill as they were
    assert out["start"] == 1 and out["same_object"]
    assert out["trained_tasks"] == [0] and out["same_weights"] and out["same_accuracies"]
    assert out["trained_after_resume"] == [0, 1]
    if out["unrepaired"]:  # on this torch: the repair is what makes the save work
        assert out["avalanche_unprepared"] != "saved"
        assert "torch.optim.sgd" in out["prepared"]
    assert out["avalanche_start"] == 1 and out["dill_after_prepare"]


# ---------------------------------------------------------------- static import graph
def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, *, deferred: bool) -> set[str]:
    """Package modules ``module`` imports (see :func:`_imports_in`)."""
    path = MODULES[module]
    return _imports_in(path.read_text(), module, path.name == "__init__.py", MODULES, deferred=deferred)


def _imports_in(source: str, module: str, is_package: bool, modules, *, deferred: bool) -> set[str]:
    """The ``modules`` that ``source`` (module ``module``) imports: ``from pkg import name``
    counts as ``pkg.name`` when that is a module, else as ``pkg``. ``if TYPE_CHECKING:``
    blocks are skipped; imports inside functions (run when called, not at import time) only
    with ``deferred``. Dotted strings passed to ``importlib.import_module`` count as imports."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()

    def add(name: str) -> None:
        while name and name not in modules:  # a name inside a module: the module
            name = name.rpartition(".")[0]
        if name:
            found.add(name)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit_node(other)
                continue
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and not deferred:
                continue
            visit_node(child)

    def visit_node(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.split(".")[0] == PACKAGE:
                for alias in node.names:
                    add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and node.args[0].value.split(".")[0] == PACKAGE):
            add(node.args[0].value)
        visit(node)

    visit(ast.parse(source))
    found.discard(module)
    return found


def _in_harness(module: str) -> bool:
    return module == HARNESS or module.startswith(HARNESS + ".")


def test_no_library_module_imports_the_harness():
    offenders = {
        module: sorted(m for m in _imports(module, deferred=True) if _in_harness(m))
        for module in MODULES
        if not _in_harness(module)
    }
    offenders = {module: found for module, found in offenders.items() if found}
    assert not offenders, f"library modules importing the research harness: {offenders}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_at_import_time():
    graph = {module: _imports(module, deferred=False) for module in MODULES}
    assert _cycles(graph) == []


def test_no_import_cycle_through_deferred_imports():
    graph = {module: _imports(module, deferred=True) for module in MODULES}
    assert _cycles(graph) == [], "import cycles (counting imports inside functions)"


def test_the_graph_sees_imports():
    """The parser and the cycle finder are not vacuous (a synthetic ``avalanche_fgadahat``)."""
    modules = {f"{PACKAGE}{suffix}" for suffix in ("", ".a", ".b", ".sub", ".sub.c", ".experiments")}
    source = textwrap.dedent(
        """
        from typing import TYPE_CHECKING
        import avalanche_fgadahat.sub.c
        from . import b
        from .sub import name_in_sub
        if TYPE_CHECKING:
            from .experiments import Hidden
        else:
            import avalanche_fgadahat
        def later():
            from .experiments import run
        def by_name():
            importlib.import_module("avalanche_fgadahat.experiments")
        """
    )
    expected = {PACKAGE, f"{PACKAGE}.sub.c", f"{PACKAGE}.b", f"{PACKAGE}.sub"}
    assert _imports_in(source, f"{PACKAGE}.a", False, modules, deferred=False) == expected
    assert _imports_in(source, f"{PACKAGE}.a", False, modules, deferred=True) == expected | {HARNESS}
    # relative names resolve against the module's package: ``.experiments`` of ``sub`` is no harness
    assert _imports_in("from .experiments import run", f"{PACKAGE}.sub.c", False, modules,
                       deferred=False) == {f"{PACKAGE}.sub"}
    assert _imports_in("from ..experiments import run", f"{PACKAGE}.sub.c", False, modules,
                       deferred=False) == {HARNESS}
    assert _imports_in("from . import c", f"{PACKAGE}.sub", True, modules, deferred=False) == {f"{PACKAGE}.sub.c"}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]

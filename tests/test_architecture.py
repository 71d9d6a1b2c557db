"""The package's layers (``docs/architecture.md``): each module imports only its own layer and
the layers below it, and no library module is over the size a maintainer can hold in mind.

Layers, lowest first: ``_validation``/``determinism``/``rollback``/``data`` → ``masking`` →
``models``/``task_inference`` → ``diagnostics`` → ``adjustment`` → ``importance`` → ``config`` → ``plugins`` →
``strategies`` → ``metrics``/``figures``/``checkpoint``; the package ``__init__`` and the research
harness ``experiments`` sit on top. Imports under ``if TYPE_CHECKING:`` are ignored.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "avalanche_fgadahat"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

LAYERS = [
    ("_validation", "determinism", "rollback", "data"),
    ("masking",),
    ("models", "task_inference"),
    ("diagnostics",),
    ("adjustment",),
    ("importance",),
    ("config",),
    ("plugins",),
    ("strategies",),
    ("metrics", "figures", "checkpoint"),
    ("__init__", "experiments"),
]
MAX_LINES = 350


def _layer(module: str) -> int:
    """Layer index of a dotted module name inside the package."""
    top = module.split(".")[1] if "." in module else "__init__"
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module} is in no layer of LAYERS: place it in docs/architecture.md and here")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)
        found[name] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """Package modules imported at run time by module ``name`` (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith(PACKAGE):
                found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(PACKAGE))
    return found


def test_every_module_imports_only_its_layer_and_below():
    violations = []
    for name, path in _modules().items():
        if name == PACKAGE:
            continue
        own = _layer(name)
        for target in _imports(name, path):
            if target != PACKAGE and _layer(target) > own:
                violations.append(f"{name} (layer {own}) imports {target} (layer {_layer(target)})")
    assert not violations, "\n".join(violations)


def test_the_layer_check_sees_a_violation():
    """The checker itself: an upward import is reported (a checker that sees nothing passes anything)."""
    assert _layer(f"{PACKAGE}.models.base") < _layer(f"{PACKAGE}.plugins.hat")
    imports = _imports(f"{PACKAGE}.plugins.hat", ROOT / "plugins" / "hat.py")
    assert f"{PACKAGE}.adjustment" in imports and f"{PACKAGE}.config" in imports


@pytest.mark.parametrize("name", sorted(_modules()))
def test_no_module_is_over_the_size_limit(name):
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by concept (docs/architecture.md)"

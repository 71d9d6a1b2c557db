"""Every public class, function and method of the library has a docstring (the API
reference, ``docs/api``, is built from them; ``scripts/api_docs.sh`` builds it with
warnings as errors). The experiments harness is checked for module and class docstrings."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import avalanche_fgadahat


def _public_members(module):
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            yield name, obj


def test_every_public_object_of_the_library_has_a_docstring():
    missing = []
    for info in pkgutil.walk_packages(avalanche_fgadahat.__path__, "avalanche_fgadahat."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        harness = ".experiments" in info.name
        if not (module.__doc__ or "").strip():
            missing.append(info.name)
        for name, obj in _public_members(module):
            if not (obj.__doc__ or "").strip():
                missing.append(f"{info.name}.{name}")
            if harness or not inspect.isclass(obj):
                continue
            for attribute, member in vars(obj).items():
                function = member.fget if isinstance(member, property) else member
                if attribute.startswith("_") or not inspect.isfunction(function):
                    continue
                if not (function.__doc__ or "").strip():
                    missing.append(f"{info.name}.{name}.{attribute}")
    assert not missing, "no docstring: " + ", ".join(missing)

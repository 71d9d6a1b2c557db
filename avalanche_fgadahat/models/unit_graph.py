"""Reading the unit-group graph from a traced network (for :func:`~.conversion.to_hat`).

Which unit groups feed each masked layer, in column order, followed back through the
operations that keep units in place (:data:`~.conversion_rules.TRANSPARENT_MODULES`, …),
residual sums (the groups of all summands must agree) and concatenations along the unit
dimension; and the ``(in_key, in_repeat, in_segments)`` of each layer's ``ParamLayout``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
from torch import nn

from .conversion_rules import (
    ADDITION_METHODS,
    ADDITIONS,
    PER_TASK_LAYERS,
    TRANSPARENT_FUNCTIONS,
    TRANSPARENT_METHODS,
    TRANSPARENT_MODULES,
    ConversionError,
)
from .converted import record_activation


def is_transparent(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` keeps the units (number and order) of its first input."""
    if node.op == "call_module":
        return isinstance(modules[node.target], TRANSPARENT_MODULES)
    if node.op == "call_function":
        return node.target in TRANSPARENT_FUNCTIONS
    return node.op == "call_method" and node.target in TRANSPARENT_METHODS


def is_addition(node: fx.Node) -> bool:
    """Whether ``node`` is a residual sum (``+``, ``+=``, ``torch.add``, ``Tensor.add``)."""
    return (node.op == "call_function" and node.target in ADDITIONS) or (
        node.op == "call_method" and node.target in ADDITION_METHODS)


def only_user(node: fx.Node) -> fx.Node | None:
    """The single node using ``node``'s output, or ``None``."""
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def sources(node: Any, gates: dict[fx.Node, str], modules: dict[str, nn.Module], layer: str) -> tuple[str, ...]:
    """Unit groups reaching ``node`` along its unit dimension, in order (``()``: the input)."""
    if not isinstance(node, fx.Node) or node.op in ("placeholder", "get_attr"):
        return ()
    if node.op == "call_function" and node.target is record_activation:
        return sources(node.args[2], gates, modules, layer)
    if node in gates:
        return (gates[node],)
    if is_transparent(node, modules):
        return sources(node.args[0], gates, modules, layer)
    if is_addition(node):
        found = {sources(a, gates, modules, layer) for a in node.args if isinstance(a, fx.Node)} - {()}
        if len(found) > 1:
            raise ConversionError(
                f"layer {layer!r} is fed by a sum of unit groups {sorted(', '.join(k) for k in found)} that no masked layer feeds "
                "directly; HAT cannot tell which group a unit belongs to: sum right after a layer's output")
        return found.pop() if found else ()
    if node.op == "call_function" and node.target in (torch.cat, torch.concat):
        tensors = node.args[0]
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        parts = [sources(t, gates, modules, layer) for t in tensors]
        if dim != 1 or any(not part for part in parts):
            raise ConversionError(
                f"layer {layer!r} is fed by a concatenation along dim {dim}"
                + (" of the raw input" if any(not p for p in parts) else "")
                + "; to_hat supports concatenations of unit groups along the unit dimension (dim=1)")
        return tuple(key for part in parts for key in part)
    if node.op == "call_module" and isinstance(modules.get(node.target), PER_TASK_LAYERS):
        return sources(node.args[0], gates, modules, layer)
    what = node.target if node.op != "call_function" else getattr(node.target, "__name__", node.target)
    raise ConversionError(f"layer {layer!r} is fed through {node.op} {what!r}, which to_hat does not know "
                          "how units pass; use standard modules (activations, pooling, flatten), or "
                          "subclass HATBackbone and declare the layout (ParamLayout)")


def layout_inputs(node: fx.Node, gates, modules, sizes) -> tuple[str | None, int, tuple[tuple[str, int], ...]]:
    """``(in_key, in_repeat, in_segments)`` of a masked layer node."""
    keys = sources(node.args[0], gates, modules, node.target)
    if not keys:
        return None, 1, ()
    width = modules[node.target].weight.shape[1]
    units = sum(sizes[key] for key in keys)
    if width % units:
        raise ConversionError(f"layer {node.target!r} has {width} inputs, not a multiple of the {units} "
                              f"units of {', '.join(keys)} that feed it")
    if len(keys) == 1:
        return keys[0], width // units, ()
    return None, 1, tuple((key, width // units) for key in keys)

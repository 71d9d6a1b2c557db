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
    SCALAR_FUNCTIONS,
    SCALAR_METHODS,
    TRANSPARENT_FUNCTIONS,
    TRANSPARENT_METHODS,
    TRANSPARENT_MODULES,
    ZERO_BREAKING_FUNCTIONS,
    ZERO_BREAKING_METHODS,
    ZERO_BREAKING_MODULES,
    ConversionError,
)
from .gates import record_activation
from .per_task_norm import PerTaskNorm

#: operations that change a tensor's layout (a gate cannot be moved across them)
_RESHAPES = ({"flatten", "view", "reshape"}, {torch.flatten, torch.reshape}, (nn.Flatten,))


def _node_args(node: fx.Node) -> list[fx.Node]:
    return [a for a in node.args if isinstance(a, fx.Node)]


def is_scalar_op(node: fx.Node) -> bool:
    """``node`` is an element-wise operation of one tensor with constants that keeps 0 at 0."""
    scalar = (node.op == "call_function" and node.target in SCALAR_FUNCTIONS) or (
        node.op == "call_method" and node.target in SCALAR_METHODS)
    return scalar and len(_node_args(node)) == 1 and not any(isinstance(v, fx.Node) for v in node.kwargs.values())


def is_transparent(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` keeps the units (number and order) of its (one tensor) input."""
    if node.op == "call_module":
        return isinstance(modules[node.target], TRANSPARENT_MODULES)
    if node.op == "call_function":
        return node.target in TRANSPARENT_FUNCTIONS or is_scalar_op(node)
    return node.op == "call_method" and (node.target in TRANSPARENT_METHODS or is_scalar_op(node))


def unit_input(node: fx.Node) -> Any:
    """The input whose units a transparent ``node`` passes on (the tensor of a scalar operation)."""
    return _node_args(node)[0] if is_scalar_op(node) else node.args[0]


def is_per_task(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """``node`` calls a per-task layer (BatchNorm, or one made per task already)."""
    return node.op == "call_module" and isinstance(modules.get(node.target), PER_TASK_LAYERS + (PerTaskNorm,))


def breaks_zero(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """``node`` turns a unit's 0 into a non-zero value (:data:`~.conversion_rules.ZERO_BREAKING_MODULES`,
    a BatchNorm, a constant added)."""
    if node.op == "call_module":
        return isinstance(modules[node.target], ZERO_BREAKING_MODULES) or is_per_task(node, modules)
    if node.op == "call_function" and node.target in ZERO_BREAKING_FUNCTIONS:
        return True
    if node.op == "call_method" and node.target in ZERO_BREAKING_METHODS:
        return True
    return is_addition(node) and len(_node_args(node)) == 1


def is_reshape(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """``node`` changes the layout (flatten, view, reshape)."""
    methods, functions, module_types = _RESHAPES
    return (node.op == "call_method" and node.target in methods) or (
        node.op == "call_function" and node.target in functions) or (
        node.op == "call_module" and isinstance(modules[node.target], module_types))


def gate_point(anchor: fx.Node, modules: dict[str, nn.Module]) -> fx.Node:
    """Where a unit group's gate goes: after ``anchor``, or after the last operation that breaks
    zero (:func:`breaks_zero`) in the element-wise chain that follows it, so a unit switched off
    reaches the next layer as exactly 0 (HAT's protection of the old tasks relies on it)."""
    node, point = anchor, anchor
    while (user := only_user(node)) is not None and not is_reshape(user, modules) and (
            is_transparent(user, modules) or is_per_task(user, modules)
            or (is_addition(user) and len(_node_args(user)) == 1)):
        node = user
        if breaks_zero(user, modules):
            point = user
    return point


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
        return _unbroken(node, sources(unit_input(node), gates, modules, layer), modules, layer)
    if is_addition(node):
        found = {sources(a, gates, modules, layer) for a in node.args if isinstance(a, fx.Node)} - {()}
        if len(found) > 1:
            raise ConversionError(
                f"layer {layer!r} is fed by a sum of unit groups {sorted(', '.join(k) for k in found)} that no masked layer feeds "
                "directly; HAT cannot tell which group a unit belongs to: sum right after a layer's output")
        return _unbroken(node, found.pop() if found else (), modules, layer)
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
    if is_per_task(node, modules):
        return _unbroken(node, sources(node.args[0], gates, modules, layer), modules, layer)
    what = node.target if node.op != "call_function" else getattr(node.target, "__name__", node.target)
    if node.op == "call_module":
        what = f"{what} ({type(modules[node.target]).__name__})"
    raise ConversionError(f"layer {layer!r} is fed through {node.op} {what!r}, which to_hat does not know "
                          "how units pass; use standard modules (activations, pooling, flatten), or "
                          "subclass HATBackbone and declare the layout (ParamLayout)")


def _unbroken(node: fx.Node, found: tuple[str, ...], modules: dict[str, nn.Module], layer: str) -> tuple[str, ...]:
    """``found``, unless ``node`` turns the gated units' 0 into another value on the way to ``layer``
    (where the gate could not be moved after it: behind a flatten or reshape)."""
    if found and breaks_zero(node, modules):
        what = node.target if node.op != "call_function" else getattr(node.target, "__name__", node.target)
        raise ConversionError(
            f"layer {layer!r} reads unit group(s) {', '.join(found)} through {what!r}, which turns a unit switched "
            "off (0) into a non-zero value after a flatten or reshape; the old tasks would read weights HAT no "
            "longer protects: apply it before the flatten")
    return found


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

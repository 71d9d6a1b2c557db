"""Rewriting a traced network into its masked body (the graph step of :func:`~.conversion.to_hat`).

:func:`build_masked_body` takes the ``torch.fx`` graph of a network (its head, if any, a leaf)
and returns the HAT body: the same layer objects, a gate after each unit group, a per-task
BatchNorm in place of each BatchNorm, the activations recorded for the training step, and the
:class:`~avalanche_fgadahat.masking.ParamLayout` of every masked layer (which unit groups feed
it: :mod:`.unit_graph`). The rules it applies are in :mod:`.conversion_rules`; the operations it
inserts are the functions of :mod:`.gates`.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch.fx as fx
from torch import nn

from ..masking.layout import ParamLayout
from .conversion_rules import MASKABLE_LAYERS, PER_TASK_LAYERS, ConversionError, nothing_to_mask
from .converted import BodyTracer
from .gates import apply_gate, masked_conv, record_activation
from .per_task_norm import PerTaskNorm
from .unit_graph import gate_point, is_addition, is_transparent, layout_inputs, only_user

#: layers with per-task state: replaced by a :class:`PerTaskNorm` (a ``PerTaskNorm`` is kept)
_PER_TASK = PER_TASK_LAYERS + (PerTaskNorm,)
_FOLDABLE_CONVS = (nn.Conv1d, nn.Conv2d)


@dataclass(frozen=True)
class MaskedBody:
    """The masked body of a network: ``body(x, masks, task, record) → features``, the layouts of
    its masked layers (named as in the network: ``fc.0``; in the HAT model they are
    ``body.fc.0``) and ``{unit group: units}`` in forward order."""

    body: fx.GraphModule
    layouts: list[ParamLayout]
    unit_sizes: dict[str, int]


def default_unit_name(layer: str) -> str:
    """The unit group of a masked layer, named after its qualified name (``features.0`` → ``features_0``)."""
    return layer.replace(".", "_")


def build_masked_body(model: nn.Module, graph: fx.Graph, *, head_node: fx.Node | None = None,
                      unit_names: Mapping[str, str] | None = None, fold_conv_masks: bool = True) -> MaskedBody:
    """Rewrite ``graph`` (traced from ``model``) into the masked body (see module doc).

    :param head_node: the head's call: the body ends at its input (``None``: at the output).
    :param unit_names: ``{masked layer: unit group name}`` (default :func:`default_unit_name`); the
        layers meeting at one residual sum take the name of the first one called.
    :param fold_conv_masks: gate a convolution followed directly by its gate with
        :func:`~.gates.masked_conv` (the mask folded into the kernel in training).
    :raises ConversionError: a layer called twice, a parameter used by a functional call, no
        masked layer, or layers of different widths meeting at one sum.
    """
    modules = dict(model.named_modules())
    masked, calls = [], {}
    for node in graph.nodes:
        if node is head_node:
            break
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
            if calls[node.target] > 1 and isinstance(modules[node.target], MASKABLE_LAYERS + _PER_TASK):
                raise ConversionError(f"layer {node.target!r} is called twice in the forward (shared weights); "
                                      "HAT needs one mask per use: give each use its own layer")
            if isinstance(modules[node.target], MASKABLE_LAYERS):
                masked.append(node)
        elif node.op == "get_attr" and isinstance(operator.attrgetter(node.target)(model), nn.Parameter):
            users = ", ".join(str(u.target) for u in node.users)
            raise ConversionError(f"parameter {node.target!r} is used by a functional call ({users}); HAT masks "
                                  "layers: use an nn.Linear/nn.Conv2d module, or subclass HATBackbone")
    if not masked:
        raise nothing_to_mask(model)
    anchors = _unit_groups(masked, modules)
    names = dict(unit_names or {})
    keys = {anchor: names.get(members[0].target, default_unit_name(members[0].target))
            for anchor, members in anchors.items()}
    sizes = {}
    for anchor, members in anchors.items():
        widths = {modules[m.target].weight.shape[0] for m in members}
        if len(widths) != 1:
            raise ConversionError(f"layers {[m.target for m in members]} meet at one sum with different widths {widths}")
        sizes[keys[anchor]] = widths.pop()
    x, masks_in, task_in, record_in = _add_placeholders(graph)
    gates = _insert_gates(graph, anchors, keys, modules, masks_in, record_in)
    owner = {id(m): keys[a] for a, ms in anchors.items() for m in ms}
    layouts = [ParamLayout(node.target, modules[node.target], owner[id(node)], *found)
               for node, found in [(n, layout_inputs(n, gates, modules, sizes)) for n in masked]]
    if fold_conv_masks:
        _fold_conv_gates(graph, anchors, gates, modules, masks_in)
    body_modules = _body_modules(graph, modules, head_node, task_in)
    _set_output(graph, head_node, keep={x, masks_in, task_in, record_in})
    graph._tracer_cls = BodyTracer  # unpickling rebuilds the body from its code with this tracer
    body = fx.GraphModule(body_modules, graph, class_name=f"HAT{type(model).__name__}Body")
    _reuse_containers_(body, model)
    return MaskedBody(body, layouts, sizes)


def _unit_groups(masked: list[fx.Node], modules: dict[str, nn.Module]) -> dict[fx.Node, list[fx.Node]]:
    """``{node after which the group's gate goes: its masked layers}``, in forward order: after the
    per-task layers that follow a layer and, where its output is summed, after the sum."""
    anchors: dict[fx.Node, list[fx.Node]] = {}
    for node in masked:
        end = node
        while (user := only_user(end)) is not None and user.op == "call_module" and isinstance(
                modules[user.target], _PER_TASK):
            end = user
        while (user := only_user(end)) is not None and is_addition(user):
            end = user
        anchors.setdefault(end, []).append(node)
    return anchors


def _add_placeholders(graph: fx.Graph) -> tuple[fx.Node, fx.Node, fx.Node, fx.Node]:
    """The body's arguments: ``(x, masks, task, record)`` (the network's own first argument is ``x``)."""
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    with graph.inserting_after(inputs[-1]):
        masks_in = graph.placeholder("masks")
    with graph.inserting_after(masks_in):
        task_in = graph.placeholder("task")
    with graph.inserting_after(task_in):
        record_in = graph.placeholder("record")
    return inputs[0], masks_in, task_in, record_in


def _insert_gates(graph, anchors, keys, modules, masks_in, record_in) -> dict[fx.Node, str]:
    """A gate after each anchor (or after the operations that follow it and turn 0 into another
    value: :func:`~.unit_graph.gate_point`) and a recording after the gate (or the activation
    right after it)."""
    gates = {}
    for anchor, key in keys.items():
        point = gate_point(anchor, modules)
        with graph.inserting_after(point):
            extra = modules[anchors[anchor][0].target].weight.dim() - 2
            gate = graph.call_function(apply_gate, (point, masks_in, key, extra))
        point.replace_all_uses_with(gate, delete_user_cb=lambda user, gate=gate: user is not gate)
        gates[gate] = key
        after = only_user(gate)
        point = after if after is not None and is_transparent(after, modules) and after.op != "call_method" else gate
        with graph.inserting_after(point):
            recorded = graph.call_function(record_activation, (record_in, key, point))
        point.replace_all_uses_with(recorded, delete_user_cb=lambda user, r=recorded: user is not r)
    return gates


def _fold_conv_gates(graph, anchors, gates, modules, masks_in) -> None:
    """Replace ``apply_gate(conv(x))`` by ``masked_conv(conv, x)`` for a conv gated directly."""
    for gate, key in gates.items():
        anchor = gate.args[0]
        if anchors.get(anchor) != [anchor] or not isinstance(modules[anchor.target], _FOLDABLE_CONVS):
            continue
        with graph.inserting_before(gate):
            conv = graph.get_attr(anchor.target)
            folded = graph.call_function(masked_conv, (conv, anchor.args[0], masks_in, key))
        gate.replace_all_uses_with(folded)
        graph.erase_node(gate)
        graph.erase_node(anchor)


def _body_modules(graph, modules, head_node, task_in) -> dict[str, Any]:
    """The body's layers by qualified name; each BatchNorm replaced by a :class:`PerTaskNorm`,
    which is called with the task label."""
    body_modules: dict[str, Any] = {}
    head = None if head_node is None else modules[head_node.target]
    for node in graph.nodes:
        if node.op == "call_module" and modules[node.target] is not head:
            module = modules[node.target]
            if isinstance(module, _PER_TASK):
                module = module if isinstance(module, PerTaskNorm) else PerTaskNorm(module)
                node.args = (node.args[0], task_in)
            body_modules[node.target] = module
        elif node.op == "get_attr" and node.target in modules:
            body_modules[node.target] = modules[node.target]
    return body_modules


def _set_output(graph: fx.Graph, head_node: fx.Node | None, keep: set[fx.Node]) -> None:
    """The body returns the head's input (the features, gated and recorded); what only the head
    and the nodes after it used is removed, and the network's other arguments with it."""
    if head_node is not None:
        for node in reversed(list(graph.nodes)):
            if node.op == "output":
                graph.erase_node(node)
        graph.output(head_node.args[0])
    for node in reversed(list(graph.nodes)):
        if node.op not in ("placeholder", "output") and not node.users:
            graph.erase_node(node)
    for node in [n for n in graph.nodes if n.op == "placeholder" and n not in keep]:
        if node.users:
            raise ConversionError(f"the forward uses its argument {node.target!r} outside the head; HAT conversion "
                                  "supports forwards whose task labels only select the head")
        graph.erase_node(node)


def _reuse_containers_(body: fx.GraphModule, model: nn.Module) -> None:
    """Put the network's own containers (``nn.ModuleList``, ``nn.Sequential``, ...) in the body
    where they hold exactly the body's layers, so ``body.features[0]`` works as on the network."""
    for name, generic in list(body.named_children()):
        own = getattr(model, name, None)
        if not isinstance(own, nn.Module) or own is generic:
            continue
        leaves = [(path, m) for path, m in own.named_modules() if path and not any(True for _ in m.children())]
        try:
            same = all(generic.get_submodule(path) is module for path, module in leaves)
        except AttributeError:
            same = False
        body_leaves = [path for path, m in generic.named_modules() if path and not any(True for _ in m.children())]
        if same and leaves and len(body_leaves) <= len(leaves):
            setattr(body, name, own)

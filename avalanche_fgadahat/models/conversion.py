"""Convert the user's own network into a HAT network: :func:`to_hat`.

The network's computation is traced with ``torch.fx`` (its head a leaf), and rewritten:

1. every :data:`~.conversion_rules.MASKABLE_LAYERS` layer (``nn.Linear``, ``nn.Conv1d``,
   ``nn.Conv2d``) that is not the head gets a per-unit HAT gate ``h · m`` (HAT Eq. 1–2) after
   the BatchNorm that follows it, or, when its output is summed with others (a residual
   addition), after the sum; the layers meeting at one sum share one unit group (as
   :class:`~.resnet.HATResNet18` masks a block's output);
2. every BatchNorm becomes per task (:class:`~.per_task_norm.PerTaskNorm`), or is refused;
3. which unit group feeds each masked layer (for the neuron→parameter broadcast
   ``min(M_l[i], M_{l−1}[j])``) is read from the graph, through the operations of
   :data:`~.conversion_rules.TRANSPARENT_MODULES` (activations, dropout, pooling, flatten,
   reshape) and concatenations of unit groups along the unit dimension (the layer then reads
   several groups side by side, ``ParamLayout.in_segments``): the input of a layer after a
   conv→flatten covers ``in_features / channels`` positions per channel.

What cannot be converted raises before anything trains, naming the layer: the layers of
:data:`~.conversion_rules.REFUSED_LAYERS`, tied weights, a layer called twice, parameters used
by functional calls, data-dependent control flow (``torch.fx`` cannot trace it), a layer fed by
a sum of unit groups no masked layer feeds directly, or by a concatenation along another
dimension or with the raw input. The parameters stay the same
objects, so an optimizer built from ``model.parameters()`` keeps working.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch.fx as fx
from avalanche.models import IncrementalClassifier, MultiHeadClassifier
from torch import nn

from .._validation import check_choice
from .base import HATBackbone
from .conversion_rules import MASKABLE_LAYERS, PER_TASK_LAYERS, ConversionError, nothing_to_mask, refused_reason
from .converted import ConvertedHATModel
from .masked_body import MaskedBody, build_masked_body
from .per_task_norm import PerTaskNorm

BATCH_NORM_MODES = ("per_task", "refuse")
HEAD_TYPES = (MultiHeadClassifier, IncrementalClassifier, nn.Linear)


class _Tracer(fx.Tracer):
    """``torch.fx`` tracer that keeps the head whole (Avalanche heads branch on task labels)."""

    def __init__(self, head: nn.Module | None = None) -> None:
        super().__init__()
        self.head = head

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return (module is self.head or isinstance(module, HEAD_TYPES[:2] + (PerTaskNorm,))
                or super().is_leaf_module(module, qualified_name))


def _trace(model: nn.Module, head: nn.Module | None) -> fx.Graph:
    try:
        return _Tracer(head).trace(model)
    except Exception as error:  # fx raises TraceError, TypeError, ... on dynamic control flow
        raise ConversionError(
            f"torch.fx could not trace {type(model).__name__}.forward ({type(error).__name__}: {error}). "
            "Data-dependent control flow (if/for on tensor values) cannot be converted automatically: "
            "write the forward without it, or subclass HATBackbone (docs/architecture.md)"
        ) from error


def _check_layers(model: nn.Module, batch_norm: str) -> None:
    """Refuse unsupported layers and tied weights, naming them (before anything is changed)."""
    for name, module in model.named_modules():
        reason = refused_reason(module)
        if reason is not None:
            raise ConversionError(f"layer {name!r} ({type(module).__name__}) cannot be converted to HAT: {reason}")
        if isinstance(module, PER_TASK_LAYERS) and batch_norm == "refuse":
            raise ConversionError(
                f"layer {name!r} ({type(module).__name__}): batch_norm='refuse' was asked; use "
                "batch_norm='per_task' (one BatchNorm per task, as HATResNet18) or remove it"
            )
    owners: dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in owners:
            raise ConversionError(
                f"parameter {name!r} is the same tensor as {owners[id(param)]!r} (tied weights): HAT "
                "stores one mask per layer and would freeze the shared tensor for both; untie them"
            )
        owners[id(param)] = name


def _find_head(model: nn.Module, head: str | None) -> tuple[str, nn.Module]:
    if head is not None:
        try:
            module = model.get_submodule(head)
        except AttributeError:
            raise ValueError(f"head={head!r} is not a submodule of {type(model).__name__}") from None
        if not isinstance(module, HEAD_TYPES):
            raise ValueError(f"head={head!r} is a {type(module).__name__}; a head must be one of "
                             + ", ".join(t.__name__ for t in HEAD_TYPES))
        return head, module
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, HEAD_TYPES[:2])]
    found = [(n, m) for n, m in found if not any(n.startswith(outer + ".") for outer, _ in found)]
    if len(found) > 1:
        raise ValueError(f"{type(model).__name__} has several Avalanche heads ({', '.join(n for n, _ in found)}); "
                         "name the one to use with head=")
    if found:
        return found[0]
    graph = _trace(model, None)
    last = None
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(model.get_submodule(node.target), MASKABLE_LAYERS):
            last = node
    if last is None:
        raise nothing_to_mask(model)
    if not isinstance(model.get_submodule(last.target), nn.Linear):
        raise ValueError(f"{type(model).__name__} ends in no nn.Linear head: name its head with head=")
    return last.target, model.get_submodule(last.target)


def refuse_wrapper(model: nn.Module) -> None:
    """``ConversionError`` (a ``TypeError``) naming a wrapper such as ``DataParallel``
    (``.module``) or ``torch.compile``'s ``OptimizedModule`` (``._orig_mod``): Avalanche's loops
    pass task labels only to a ``MultiTaskModule``, so a wrapped network could not pick its masks."""
    inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
    if isinstance(inner, nn.Module):
        raise ConversionError(
            f"model is a {type(model).__name__} wrapping a {type(inner).__name__}: Avalanche calls a model "
            "that is not a MultiTaskModule without task labels, so HAT could not pick its masks. Pass the "
            "network itself (a plain one is converted to HAT) and choose its device with the strategy's "
            "device= argument (HAT-family strategies train on one device)"
        )


def to_hat(model: nn.Module, *, head: str | None = None, task_incremental_heads: bool = False,
           batch_norm: str = "per_task") -> HATBackbone:
    """The HAT network of ``model``: a :class:`~.converted.ConvertedHATModel` sharing its parameters.

    :param model: any ``nn.Module`` whose forward ``torch.fx`` can trace: Avalanche's
        ``SimpleMLP``, ``MTSimpleMLP``, ``SimpleCNN``, ``MTSlimResNet18``, torchvision ResNets,
        an ``nn.Sequential``. A :class:`~.base.HATBackbone` is returned unchanged.
    :param head: qualified name of the classifier head (default: the model's Avalanche
        ``MultiHeadClassifier``/``IncrementalClassifier``, else its last ``nn.Linear``). The
        head is not masked.
    :param task_incremental_heads: give a single-head model Avalanche's ``MultiHeadClassifier``
        (one head per task label, new parameters); otherwise its head is kept.
    :param batch_norm: ``per_task`` (one BatchNorm per task label) or ``refuse``.
    :returns: the converted model: train it with the HAT-family strategies or plugins; its
        body's parameters are ``model``'s own objects.
    :raises ConversionError: a layer or a computation that cannot be converted (the message
        names it); nothing of ``model`` is changed then.
    """
    if isinstance(model, HATBackbone):
        return model
    refuse_wrapper(model)
    check_choice("batch_norm", batch_norm, BATCH_NORM_MODES)
    _check_layers(model, batch_norm)
    head_name, head_module = _find_head(model, head)
    graph = _trace(model, head_module)
    modules = dict(model.named_modules())
    head_nodes = [n for n in graph.nodes if n.op == "call_module" and modules[n.target] is head_module]
    if len(head_nodes) != 1:
        raise ConversionError(f"the head {head_name!r} is called {len(head_nodes)} times in the forward; expected once")
    return _build(model, graph, head_nodes[0], head_module, task_incremental_heads)


def _build(model, graph, head_node, head_module, task_incremental_heads) -> ConvertedHATModel:
    """The masked body of ``model`` (ending at the head's input) and its head."""
    masked = build_masked_body(model, graph, head_node=head_node)
    feature_size, head = _head(head_module, task_incremental_heads)
    return ConvertedHATModel(masked.body, masked.layouts, masked.unit_sizes, head=head, feature_size=feature_size,
                             multihead=isinstance(head, MultiHeadClassifier), source=type(model).__name__)


def masked_body_of(network: nn.Module, *, unit_names: Mapping[str, str] | None = None,
                   fold_conv_masks: bool = True) -> MaskedBody:
    """The masked body of a network without a head (its output: the features), as
    :func:`to_hat` builds it: how ``HATMLP``, ``HATAlexNet`` and ``HATResNet18`` are made.

    :param unit_names: ``{masked layer: unit group name}`` (default: the layer's qualified name
        with ``_`` for ``.``).
    :param fold_conv_masks: see :func:`~.masked_body.build_masked_body`.
    :raises ConversionError: as :func:`to_hat`.
    """
    _check_layers(network, "per_task")
    return build_masked_body(network, _trace(network, None), unit_names=unit_names, fold_conv_masks=fold_conv_masks)


def _head(head: nn.Module, task_incremental_heads: bool) -> tuple[int, nn.Module]:
    """``(feature size, head)``; a plain head becomes a ``MultiHeadClassifier`` on request."""
    if isinstance(head, MultiHeadClassifier):
        return head.in_features, head
    if isinstance(head, IncrementalClassifier):
        return head.classifier.in_features, head
    if task_incremental_heads:
        return head.in_features, MultiHeadClassifier(head.in_features)  # Avalanche's heads: grown per task
    return head.in_features, head

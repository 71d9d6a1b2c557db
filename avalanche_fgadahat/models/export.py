"""Export one trained task of a HAT network as a plain torch module: :func:`export_task`.

A trained task's network is the backbone with that task's stored binary mask ``m^t`` and its
own head. :func:`export_task` traces it with ``torch.fx`` (the stored masks as constants, eval
mode: per-task BatchNorm reduced to the task's own), then folds each mask into the layer it
gates, since a layer is linear in its weight and bias per output unit:

* ``linear(x) · m = linear_{W·m, b·m}(x)`` and ``conv(x) · m = conv_{W·m, b·m}(x)`` (row / output
  channel ``i`` of ``W`` and ``b`` scaled by ``m_i``);
* ``BN(x) · m = BN_{γ·m, β·m}(x)`` for an affine BatchNorm in eval mode.

A mask that gates anything else (a residual sum) stays one multiplication by a constant buffer.
The result is a ``torch.fx.GraphModule`` holding deep copies of that task's layers only (no task
embeddings, no HAT buffers, no other task's heads or BatchNorms): a deployable per-task network
whose outputs equal the HAT model's for that task (bit for bit: the stored masks are 0/1).
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.fx as fx
from avalanche.models import MultiHeadClassifier
from torch import nn

from .base import HATBackbone

_FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


class TaskHead(nn.Module):
    """One task's head of a ``MultiHeadClassifier``, with its active-unit masking (Avalanche's
    ``forward_single_task``: outputs of classes the task never saw are set to ``mask_value``).

    :param head: the multi-head classifier.
    :param task: the task label.
    """

    def __init__(self, head: MultiHeadClassifier, task: int) -> None:
        super().__init__()
        self.classifier = head.classifiers[str(task)]
        units = head._buffers.get(f"active_units_T{task}") if head.masking else None
        self.register_buffer("active_units", None if units is None else units.clone())
        self.mask_value = head.mask_value

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, classes of the task's head)``."""
        out = self.classifier(features)
        if self.active_units is not None:
            active = torch.zeros(out.shape[-1], dtype=torch.bool, device=out.device)
            active[: self.active_units.shape[0]] = self.active_units.bool()
            out[..., torch.logical_not(active)] = self.mask_value
        return out


class _TaskNetwork(nn.Module):
    """The HAT model restricted to one task: stored masks, the task's head, eval mode."""

    def __init__(self, model: HATBackbone, task: int) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.masks = {k: m.detach().clone() for k, m in model.stored_masks(task).items()}
        head = model.classifier
        self.head = TaskHead(head, task) if isinstance(head, MultiHeadClassifier) else head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.model.forward_features(x, self.masks, self.task))


class _ExportTracer(fx.Tracer):
    """Traces into the HAT model (its gates become multiplications by constant masks); the
    head is kept whole (Avalanche's heads test shapes at run time)."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return qualified_name == "head" or super().is_leaf_module(module, qualified_name)


def export_task(model: HATBackbone, task: int) -> fx.GraphModule:
    """A plain torch module computing ``model(x, task)`` with ``task``'s mask folded in.

    :param model: a HAT network (``HATMLP``, ``HATAlexNet``, ``HATResNet18`` or a ``to_hat`` one).
    :param task: a trained task label (its mask is stored).
    :returns: an ``fx.GraphModule`` in eval mode, ``module(x) → logits (B, classes of the task)``.
    :raises KeyError: ``task`` has no stored mask (the message lists the trained tasks).
    """
    if not model.is_trained(task):
        raise KeyError(f"task {task} has no stored mask; trained tasks: {model.trained_tasks()}")
    copied = copy.deepcopy(model).eval()
    copied.training_step = None  # no recording, binary masks
    network = _TaskNetwork(copied, task).eval()
    graph = _ExportTracer().trace(network)
    exported = fx.GraphModule(network, graph, class_name=f"{type(model).__name__}Task{task}")
    _fold_masks_(exported)
    exported.graph.eliminate_dead_code()
    exported.delete_all_unused_submodules()
    exported.recompile()
    return exported.eval()


def _constant(module: fx.GraphModule, node: object) -> torch.Tensor | None:
    """The constant tensor ``node`` stands for (a mask), or ``None``."""
    if isinstance(node, fx.Node) and node.op == "get_attr":
        value = operator.attrgetter(node.target)(module)
        return value if isinstance(value, torch.Tensor) else None
    return None


@torch.no_grad()
def _fold_masks_(module: fx.GraphModule) -> None:
    """Fold every ``layer(x) · m`` with a constant per-unit ``m`` into the layer's parameters."""
    for node in list(module.graph.nodes):
        if node.op != "call_function" or node.target not in (operator.mul, torch.mul):
            continue
        source, mask = node.args[0], _constant(module, node.args[1])
        if mask is None or not isinstance(source, fx.Node) or source.op != "call_module" or len(source.users) != 1:
            continue
        layer = module.get_submodule(source.target)
        units = mask.reshape(-1)
        if isinstance(layer, _FOLDABLE) and units.numel() == layer.weight.shape[0]:
            layer.weight.mul_(units.view(-1, *([1] * (layer.weight.dim() - 1))))
            if layer.bias is not None:
                layer.bias.mul_(units)
        elif isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.affine and units.numel() == layer.num_features:
            layer.weight.mul_(units)
            layer.bias.mul_(units)
        else:
            continue
        node.replace_all_uses_with(source)
        module.graph.erase_node(node)

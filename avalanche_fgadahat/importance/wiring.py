"""Which weights feed and which weights read each unit group (for weight-based importances).

FG-AdaHAT's weight-based importances reduce, per unit of a unit group ``l``, either its
*input weights* (the rows it receives) or its *output weights* (the columns that read
it). With the :class:`~avalanche_fgadahat.masking.ParamLayout` graph of a backbone:

* input weights of ``l``: every layout with ``out_key == l``, each reduced over all dims
  but 0 (linear ``(n_l, n_in)`` and conv ``(n_l, C_in, kh, kw)`` alike). In ResNet-18 the
  output group of a block with a projection shortcut is fed by ``conv2`` **and** the
  1×1 ``shortcut`` conv (both masked here), so both contribute; an identity shortcut has
  no weights and contributes nothing.
* output weights of ``l``: every layout with ``in_key == l``, viewed per input unit with
  :meth:`ParamLayout.weight_by_input_unit` and reduced over dims 0 and 2 (so a
  conv→linear flatten sums the ``H·W`` columns of each channel). In ResNet-18 the output
  group of a block is read by the next block's ``conv1`` and, when it has one, its
  ``shortcut``; both contribute (the identity path has no weights).
* the unit group that no layout reads (the last one) is read by the head of the task
  being trained — CLArena's ``next_layer`` — ``model.classifier.classifiers[str(t)]
  .classifier`` with one head per task, ``model.classifier.classifier`` with a shared
  head. After ResNet's global average pool each channel is one head input.

CLArena has only the first of these consumers (the next entry of its layer list), no
flattening conv nets and unmasked shortcuts; see ``docs/deviations.md``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..masking.layout import ParamLayout
from ..models.base import HATBackbone

WeightTransform = Callable[[nn.Parameter], torch.Tensor]


def input_layouts(model: HATBackbone, key: str) -> list[ParamLayout]:
    """Layouts whose outputs are the units of ``key``."""
    return [layout for layout in model.param_layouts if layout.out_key == key]


def output_layouts(model: HATBackbone, key: str) -> list[ParamLayout]:
    """Layouts whose inputs are the units of ``key``."""
    return [layout for layout in model.param_layouts if any(group == key for group, _ in layout.input_groups)]


def terminal_unit_group(model: HATBackbone) -> str:
    """The unit group no masked layer reads (the one that feeds the head)."""
    read = {group for layout in model.param_layouts for group, _ in layout.input_groups}
    terminal = [key for key in model.unit_sizes if key not in read]
    if len(terminal) != 1:
        raise ValueError(
            f"model {type(model).__name__} has unit groups {terminal} that no masked layer "
            "reads; output-weight importances need exactly one such group (the one feeding the head)"
        )
    return terminal[0]


def head_linear(model: HATBackbone, task: int) -> nn.Linear:
    """The head read by the last unit group while ``task`` trains."""
    classifier = model.classifier
    if model.multihead:
        name = str(int(task))
        if name not in classifier.classifiers:
            raise ValueError(
                f"the model has no head for task {task} (heads: {sorted(classifier.classifiers)}); "
                "Avalanche creates it when the task's experience is adapted"
            )
        head = classifier.classifiers[name].classifier
    else:
        head = classifier if isinstance(classifier, nn.Linear) else classifier.classifier  # a kept plain head
    if not isinstance(head, nn.Linear):
        raise TypeError(f"the head is a {type(head).__name__}; output-weight importances need nn.Linear")
    return head


def sum_input_weights(model: HATBackbone, key: str, transform: WeightTransform) -> torch.Tensor:
    """``Σ_{feeding layouts} Σ_{dims≠0} transform(W)`` — one value per unit of ``key``."""
    total = None
    for layout in input_layouts(model, key):
        value = transform(layout.weight).flatten(1).sum(1)
        total = value if total is None else total + value
    if total is None:
        raise ValueError(f"unit group {key!r} has no input weights in param_layouts")
    return total


def sum_output_weights(
    model: HATBackbone, key: str, task: int, transform: WeightTransform
) -> torch.Tensor:
    """``Σ_{reading layers} Σ_{out, positions} transform(W)`` per unit of ``key`` (see module doc)."""
    consumers = output_layouts(model, key)
    total = None
    for layout in consumers:
        if layout.in_segments:  # the columns of this group within a concatenation
            weight = transform(layout.weight)
            value = sum(weight[:, columns].reshape(weight.shape[0], model.unit_sizes[key], -1).sum((0, 2))
                        for columns in layout.input_columns(key, model.unit_sizes))
        else:
            value = layout.weight_by_input_unit(transform(layout.weight)).sum((0, 2))
        total = value if total is None else total + value
    if not consumers:
        head = head_linear(model, task)
        units = model.unit_sizes[key]
        if head.in_features % units:
            raise ValueError(
                f"the head reads {head.in_features} features, not a multiple of the "
                f"{units} units of the last unit group {key!r}"
            )
        total = transform(head.weight).reshape(head.out_features, units, -1).sum((0, 2))
    return total

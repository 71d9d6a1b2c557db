"""The masked-layer check of a :class:`~.base.HATBackbone`: every layer with parameters is
covered by a mask (a ``ParamLayout``), is a head, or is a per-task BatchNorm; anything else
would train unprotected by HAT, so it is refused when the model is built."""

from __future__ import annotations

from torch import nn


def check_supported_layers(model: nn.Module) -> None:
    """Check the layouts against the unit groups and every parameter-bearing layer.

    :raises ValueError: a layout gating an unknown unit group, or of the wrong width.
    :raises TypeError: a layer with parameters that no mask covers (named).
    """
    covered = {id(layout.module) for layout in model.param_layouts}
    for layout in model.param_layouts:
        if layout.out_key not in model.unit_sizes:
            raise ValueError(f"layout {layout.name!r} gates unknown unit group {layout.out_key!r}")
        if layout.num_outputs != model.unit_sizes[layout.out_key]:
            raise ValueError(f"layout {layout.name!r} has {layout.num_outputs} outputs, unit group has {model.unit_sizes[layout.out_key]}")
    allowed_other = (nn.BatchNorm1d, nn.BatchNorm2d)
    for name, module in model.named_modules():
        if name.startswith(("classifier", "task_embedding", "unit_state")):
            continue
        own_params = [p for p in module.parameters(recurse=False) if p is not model.task_embeddings]
        if not own_params or id(module) in covered:
            continue
        if isinstance(module, allowed_other) and getattr(module, "_hat_per_task", False):
            continue
        raise TypeError(
            f"layer {name!r} ({type(module).__name__}) has parameters but no HAT mask; "
            "supported masked layers are nn.Linear, nn.Conv1d and nn.Conv2d registered in the model's "
            "param_layouts (per-task BatchNorm via PerTaskBatchNorm2d)"
        )

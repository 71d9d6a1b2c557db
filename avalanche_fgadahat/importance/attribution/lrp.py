"""Layer-wise relevance propagation (epsilon rule) of the layer outputs.

``lrp_abs``: the relevance ``R(a_l)`` of each layer output, propagated back from
``R(f) = f_y(x)`` with the epsilon rule ``R_j = Σ_k a_j w_jk / (z_k + ε·sign(z_k)) · R_k`` (ε = 10⁻⁹) —
Captum ``LayerLRP`` (Bach et al., "On pixel-wise explanations for non-linear classifier
decisions by layer-wise relevance propagation", PLoS ONE 2015). One ``LayerLRP`` call
gives every layer (2 forwards + 1 backward on the batch); the reference called it once
per layer. Captum needs a module tree (the ``"modules"`` forward of
:class:`~avalanche_fgadahat.importance.forward_wrapper.TaskForward`) and cannot propagate
functional residual additions, so ResNet-18 is refused with a clear error. The model's
train/eval mode is restored afterwards (CLArena left it in eval mode).

Captum is imported inside the function.
"""

from __future__ import annotations

import torch

from ..forward_wrapper import attribution_mode
from ..registry import StepContext, register_importance
from ._engine import AttributionStep, reduce_per_unit


@register_importance(
    "lrp_abs",
    short_name="LRP",
    formula="mean |LRP relevance of a_l| (Captum LayerLRP, epsilon rule; backbones without residual additions)",
    extra_passes="2 forwards + 1 backward on B rows, all layers in one LayerLRP call (reference: 1 call per layer)",
)
def lrp_abs(ctx: StepContext) -> dict[str, torch.Tensor]:
    """Layer-wise relevance propagation via one Captum ``LayerLRP`` call for all layers.

    The model's train/eval mode is restored afterwards (CLArena left it in eval mode).
    """
    from captum.attr import LayerLRP

    step = AttributionStep(ctx, nonlinearity="modules")
    step.forward.check_lrp_supported()
    keys = list(step.layers)
    parts: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
    with attribution_mode(step.model):
        lrp = LayerLRP(step.forward, [step.layers[key] for key in keys])
        for start, end in step.row_chunks(step.batch):
            x = step.x[start:end].clone()
            relevances = lrp.attribute(x, target=step.y[start:end])
            for key, relevance in zip(keys, relevances):
                parts[key].append(relevance.detach())
    return {key: reduce_per_unit(torch.cat(value)) for key, value in parts.items()}

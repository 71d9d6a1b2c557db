"""Feature ablation: how much the target logit drops when one unit is zeroed.

``feature_ablation_abs``: ``u_l[i] = mean_b |f_y(x_b) − f_y(x_b | a_l[:, i] = 0)|``, the whole
channel zeroed for a conv unit — Captum ``LayerFeatureAblation`` with one feature per unit
(``layer_mask`` grouping every position of a channel) and the default zero baseline (Zeiler
& Fergus, "Visualizing and understanding convolutional networks", ECCV 2014, occlusion).

No backward: one forward of the batch for ``f_y(x)``, then one mega-batch in which row
``(l, i, b)`` runs example ``b`` with unit ``i`` of layer ``l`` zeroed — every unit of every
layer at once (the reference: per layer, 2 forwards on B + n_l·B rows).
"""

from __future__ import annotations

import torch

from ..forward_wrapper import attribution_mode
from ..registry import StepContext, register_importance
from ._engine import AttributionStep, layer_pass, target_logits


@register_importance(
    "feature_ablation_abs",
    short_name="FA",
    formula="mean over the batch of |f_y(x) − f_y(x with a_l[:, i] := 0)| (whole channel for convs)",
    extra_passes="no backward; 1 forward on B rows + 1 forward on (Σ_l n_l)·B rows (every unit of every layer in one mega-batch; reference: per layer 2 forwards on B + n_l·B)",
)
@torch.no_grad()
def feature_ablation_abs(ctx: StepContext) -> dict[str, torch.Tensor]:
    """Vectorised unit ablation: row ``(l, i, b)`` of the mega-batch zeroes unit ``i`` of layer ``l``."""
    step = AttributionStep(ctx)
    batch, keys = step.batch, list(step.layers)
    device = step.x.device
    sizes = torch.tensor([step.model.unit_sizes[key] for key in keys], device=device)
    offsets = torch.cumsum(sizes * batch, 0) - sizes * batch
    total_rows = int((sizes * batch).sum())
    totals = {key: torch.zeros(step.model.unit_sizes[key], device=device, dtype=step.x.dtype) for key in keys}
    with attribution_mode(step.model):
        reference = torch.cat(
            [target_logits(step.forward(step.x[s:e]), step.y[s:e]) for s, e in step.row_chunks(batch)]
        )
        for start, end in step.row_chunks(total_rows):
            rows = torch.arange(start, end, device=device)
            layer_of = torch.searchsorted(offsets, rows, right=True) - 1
            within = rows - offsets[layer_of]
            unit, example = within // batch, within % batch
            patches, locals_ = {}, {}
            for index, key in enumerate(keys):
                local = (layer_of == index).nonzero().squeeze(1)
                if local.numel() == 0:
                    continue
                locals_[key] = local
                patches[key] = lambda out, _local=local, _unit=unit[local]: out.index_put(
                    (_local, _unit), torch.zeros((), dtype=out.dtype, device=out.device)
                )
            logits, _ = layer_pass(step.forward, step.x[example], step.layers, patches)
            change = (reference[example] - target_logits(logits, step.y[example])).abs()
            for key, local in locals_.items():
                totals[key].index_add_(0, unit[local], change[local])
    return {key: value / batch for key, value in totals.items()}

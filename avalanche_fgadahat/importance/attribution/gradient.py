"""Gradient × activation and Grad-CAM: the layer gradient at the input itself.

With ``g_l = ∂f_y/∂a_l`` at the step's inputs ``x``:

* ``gradient_x_activation_abs``: ``g_l(x) ⊙ a_l(x)`` — Captum ``LayerGradientXActivation``
  (Shrikumar et al., 2016, "Not just a black box");
* ``gradcam_abs``: ``mean_{h,w}(g_l) ⊙ a_l`` per channel — Captum ``LayerGradCam`` with
  ``attr_dim_summation=False`` (Selvaraju et al., ICCV 2017). CLArena summed over channels,
  which leaves one number per layer; here it is kept per channel. On a linear layer each
  unit is a 1×1 map, so Grad-CAM equals G×A there.

Both read all layers from one forward/backward per chunk of the batch.
"""

from __future__ import annotations

import torch

from ..forward_wrapper import attribution_mode
from ..registry import StepContext, register_importance
from ._engine import AttributionStep, Chunk, reduce_per_unit


def _gradient_and_activation(ctx: StepContext) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``(g_l, a_l)`` for all layers from one forward/backward per chunk of the batch."""
    step = AttributionStep(ctx)
    parts: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {key: [] for key in step.layers}
    mega_batch = (Chunk(start, end, step.x[start:end], step.y[start:end]) for start, end in step.row_chunks(step.batch))
    with attribution_mode(step.model):
        for _, outputs, grads in step.gradient_passes(mega_batch):
            for key, grad in grads.items():
                parts[key].append((grad.detach(), outputs[key]))
    return {
        key: (torch.cat([g for g, _ in value]), torch.cat([a for _, a in value]))
        for key, value in parts.items()
    }


@register_importance(
    "gradient_x_activation_abs",
    short_name="G×A",
    formula="mean |∂f_y/∂a_l ⊙ a_l| (Captum LayerGradientXActivation)",
    extra_passes="1 forward + 1 backward on B rows, all layers together (reference: 1 per layer)",
)
def gradient_x_activation_abs(ctx: StepContext) -> dict[str, torch.Tensor]:
    """Gradient × activation at every layer output (one pass for all layers)."""
    return {key: reduce_per_unit(grad * act) for key, (grad, act) in _gradient_and_activation(ctx).items()}


def _gradcam_map(grad: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """Per-channel Grad-CAM term ``mean_{h,w}(g) ⊙ a`` (a linear unit is a 1×1 map: ``g ⊙ a``)."""
    if grad.dim() > 2:
        grad = grad.mean(dim=tuple(range(2, grad.dim())), keepdim=True)
    return grad * act


@register_importance(
    "gradcam_abs",
    short_name="Grad-CAM",
    formula="mean |mean_{h,w}(∂f_y/∂a_l) ⊙ a_l| per channel (Captum LayerGradCam, attr_dim_summation=False); = G×A on linear layers",
    extra_passes="1 forward + 1 backward on B rows, all layers together (reference: 1 per layer)",
)
def gradcam_abs(ctx: StepContext) -> dict[str, torch.Tensor]:
    """Grad-CAM kept per channel (CLArena's channel-summed Grad-CAM is one number per layer)."""
    return {key: reduce_per_unit(_gradcam_map(grad, act)) for key, (grad, act) in _gradient_and_activation(ctx).items()}

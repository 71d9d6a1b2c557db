"""The reference's way of computing the attribution importances, for the tests and the benchmark.

CLArena calls Captum once per masked layer per training step; :func:`reference_importance`
does the same — one ``attribute`` call per layer, each reduced per unit — on the same
forward (:class:`~avalanche_fgadahat.importance.forward_wrapper.TaskForward`, eval mode),
targets, baselines and step counts as the package's batched functions, so that
``tests/test_importance_attribution.py`` can check those against it and
``benchmarks/attribution_cost.py`` can time both. Import it as
``from captum_reference import reference_importance`` (``tests`` is on pytest's
``pythonpath``; the benchmark adds it to ``sys.path``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from avalanche_fgadahat.importance.attribution import (
    ATTRIBUTION_TYPES,
    deepliftshap_baselines,
    layer_pass,
    reduce_per_unit,
)
from avalanche_fgadahat.importance.attribution._engine import AttributionStep
from avalanche_fgadahat.importance.forward_wrapper import attribution_mode
from avalanche_fgadahat.importance.registry import StepContext


def _channel_groups(output: torch.Tensor) -> torch.Tensor:
    """A Captum ``layer_mask`` grouping every position of a channel (one unit = one feature)."""
    shape = (1, output.shape[1]) + (1,) * (output.dim() - 2)
    return torch.arange(output.shape[1], device=output.device).view(shape).expand(1, *output.shape[1:])


def reference_importance(
    name: str,
    ctx: StepContext,
    *,
    numpy_seed: int | None = None,
    deepliftshap_baseline_set: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The reference's way: one Captum ``attribute`` call per layer, each reduced per unit.

    Same forward (:class:`TaskForward`, eval mode), same targets, baselines and step
    counts as the fast functions, with CLArena's bugs fixed the same way (Grad-CAM per
    channel, valid DeepLIFT-SHAP baselines, mode restored after LRP). Feature ablation uses
    Captum's ``LayerFeatureAblation`` with one feature per unit (channel for convs).

    :param numpy_seed: re-seed ``numpy`` before every layer's GradientSHAP call, so that
        every layer sees the draws the fast function shares between layers.
    :param deepliftshap_baseline_set: the DeepLIFT-SHAP baselines (default: drawn by
        :func:`deepliftshap_baselines`).
    """
    import captum.attr as ca

    if name not in ATTRIBUTION_TYPES:
        raise ValueError(f"name={name!r} is not an attribution importance; accepted: {', '.join(ATTRIBUTION_TYPES)}")
    nonlinearity = "modules" if name in ("deeplift_abs", "deepliftshap_abs", "lrp_abs") else "plain"
    step = AttributionStep(ctx, nonlinearity=nonlinearity)
    settings, x, y, wrapper = step.settings, step.x.clone(), step.y, step.forward
    if name == "lrp_abs":
        wrapper.check_lrp_supported()
    if name == "deepliftshap_abs" and deepliftshap_baseline_set is None:
        deepliftshap_baseline_set = deepliftshap_baselines(x, settings.deepliftshap_baselines)
    calls: dict[str, Callable[[nn.Module], torch.Tensor]] = {
        "gradient_x_activation_abs": lambda layer: ca.LayerGradientXActivation(wrapper, layer).attribute(x, target=y),
        "conductance_abs": lambda layer: ca.LayerConductance(wrapper, layer).attribute(
            x, baselines=None, target=y, n_steps=settings.conductance_steps
        ),
        "internal_influence_abs": lambda layer: ca.InternalInfluence(wrapper, layer).attribute(
            x, baselines=None, target=y, n_steps=settings.internal_influence_steps
        ),
        "gradcam_abs": lambda layer: ca.LayerGradCam(wrapper, layer).attribute(x, target=y, attr_dim_summation=False),
        "deeplift_abs": lambda layer: ca.LayerDeepLift(wrapper, layer).attribute(x, baselines=None, target=y),
        "deepliftshap_abs": lambda layer: ca.LayerDeepLiftShap(wrapper, layer).attribute(
            x, baselines=deepliftshap_baseline_set, target=y
        ),
        "gradientshap_abs": lambda layer: ca.LayerGradientShap(wrapper, layer).attribute(
            x, baselines=torch.zeros_like(x), target=y, n_samples=settings.gradientshap_samples, stdevs=0.0
        ),
        "integrated_gradients_abs": lambda layer: ca.LayerIntegratedGradients(wrapper, layer).attribute(
            x, baselines=None, target=y, n_steps=settings.integrated_gradients_steps
        ),
        "feature_ablation_abs": lambda layer: _reference_ablation(ca, wrapper, layer, x, y),
        "lrp_abs": lambda layer: ca.LayerLRP(wrapper, layer).attribute(x, target=y),
    }
    result = {}
    with attribution_mode(step.model):
        for key, layer in step.layers.items():
            if numpy_seed is not None:
                np.random.seed(numpy_seed)
            result[key] = reduce_per_unit(calls[name](layer))
    return result


def _reference_ablation(ca, wrapper: nn.Module, layer: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        _, outputs = layer_pass(wrapper, x[:1], {"layer": layer})
    return ca.LayerFeatureAblation(wrapper, layer).attribute(
        x, target=y, layer_mask=_channel_groups(outputs["layer"])
    )

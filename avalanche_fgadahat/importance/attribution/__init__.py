"""FG-AdaHAT's attribution importances: Captum's layer methods and feature ablation, batched.

Each type maps a training step (:class:`~avalanche_fgadahat.importance.registry.StepContext`,
read after ``optimizer.step()``) to a raw per-unit importance ``u_l``: the attribution of the
**target-class logit** ``f_y(x)`` to the output ``a_l`` of the weighted layer of unit group
``l`` (the ``nn.Linear``/``nn.Conv2d`` output, before mask and ReLU, as CLArena's
``get_layer_by_name``), reduced by ``u_l[i] = mean |attr[:, i, ...]|`` over every dim but 1
(batch and spatial positions). The forward is the step's own: post-step weights, the step's
detached soft masks ``σ(s·e)``, the task's head
(:class:`~avalanche_fgadahat.importance.forward_wrapper.TaskForward`), run in eval mode
(deterministic, BatchNorm statistics untouched) and restored afterwards.

With ``g_l = ∂f_y/∂a_l`` and ``x̄`` a baseline input (zeros unless said otherwise):

==============================  =====================================================================
``gradient_x_activation_abs``   ``g_l(x) ⊙ a_l(x)``
``conductance_abs``             ``Σ_k (a_l(x_{k+1}) − a_l(x_k)) ⊙ g_l(x_k)``, ``x_k = x̄ + α_k (x − x̄)``,
                                ``α`` = Gauss–Legendre nodes (n+1 of them, Captum ``LayerConductance``)
``internal_influence_abs``      ``Σ_k w_k g_l(x_k)`` (n = 5 Gauss–Legendre nodes/weights, Captum ``InternalInfluence``)
``gradcam_abs``                 ``mean_{h,w}(g_l) ⊙ a_l`` per channel (``attr_dim_summation=False``);
                                on a linear layer each unit is a 1×1 map, so it equals G×A
``deeplift_abs``                ``(a_l(x) − a_l(x̄)) ⊙ m_l``, ``m_l`` = DeepLIFT Rescale multipliers
``deepliftshap_abs``            DeepLIFT averaged over a distribution of K baselines
                                (:func:`~.deeplift.deepliftshap_baselines`)
``gradientshap_abs``            ``mean_s (a_l(x) − a_l(x̄)) ⊙ g_l(c_s x + (1 − c_s) x̄)``, ``c_s ~ U(0, 1)``
``integrated_gradients_abs``    ``(a_l(x) − a_l(x̄)) ⊙ Σ_k w_k ∂f_y/∂a_l`` at ``a_l = a_l(x̄) + α_k (a_l(x) − a_l(x̄))``
``feature_ablation_abs``        ``f_y(x) − f_y(x | a_l[:, i] = 0)`` (whole channel for convs)
``lrp_abs``                     Captum ``LayerLRP`` (epsilon rule) relevance of ``a_l``
==============================  =====================================================================

One module per method family, on a shared engine:

* :mod:`~.settings` — :class:`~.settings.AttributionSettings` (step counts, samples,
  ``max_rows``), passed as ``StepContext.attribution_settings``;
* :mod:`~._engine` — the step's inputs, forward and layers, chunking, and the one
  mega-batch forward/backward loop every gradient method runs through;
* :mod:`~.gradient` (G×A, Grad-CAM), :mod:`~.path` (conductance, internal influence,
  GradientSHAP, layer IG), :mod:`~.ablation` (feature ablation), :mod:`~.deeplift`
  (DeepLIFT, DeepLIFT-SHAP), :mod:`~.lrp` (LRP).

Speed (the reference runs one Captum call per layer per step): every method except
layer IG and ablation reads all layers from **one** forward/backward, since the attribution
of ``a_l`` does not depend on which other layers are hooked; interpolation steps, samples and
baselines are stacked into one mega-batch, processed in chunks of at most
``AttributionSettings.max_rows`` rows (Captum's ``internal_batch_size``); layer IG patches each
layer in its own rows of the same mega-batch; ablation puts every (layer, unit) of every
layer in one mega-batch. The per-layer Captum way (one ``attribute`` call per layer) lives
in the tests (``tests/captum_reference.py``), which check these values against it.

Captum is imported lazily inside the functions that need it.
"""

from __future__ import annotations

from ..registry import IMPORTANCE_TYPES, REFERENCE_IMPORTANCE_TYPES
from ._engine import Patch, layer_pass, reduce_per_unit
from .settings import DEFAULT_SETTINGS, AttributionSettings

# isort: off
# The import order below is the registration order of IMPORTANCE_TYPES, which reports and
# tables follow: keep it.
from .gradient import gradcam_abs, gradient_x_activation_abs
from .path import conductance_abs, gradientshap_abs, integrated_gradients_abs, internal_influence_abs
from .ablation import feature_ablation_abs
from .deeplift import deeplift_abs, deeplift_maps, deepliftshap_abs, deepliftshap_baselines, deepliftshap_maps
from .lrp import lrp_abs

# isort: on


def _reference_order(name: str) -> int:
    return REFERENCE_IMPORTANCE_TYPES.index(name) if name in REFERENCE_IMPORTANCE_TYPES else len(REFERENCE_IMPORTANCE_TYPES)


#: The attribution importance types, in the reference's order: every type registered by a
#: module of this package (derived from the registrations, not listed by hand).
ATTRIBUTION_TYPES: tuple[str, ...] = tuple(
    sorted(
        (name for name, itype in IMPORTANCE_TYPES.items() if itype.function.__module__.startswith(f"{__name__}.")),
        key=_reference_order,
    )
)

__all__ = [
    "ATTRIBUTION_TYPES",
    "DEFAULT_SETTINGS",
    "AttributionSettings",
    "Patch",
    "conductance_abs",
    "deeplift_abs",
    "deeplift_maps",
    "deepliftshap_abs",
    "deepliftshap_baselines",
    "deepliftshap_maps",
    "feature_ablation_abs",
    "gradcam_abs",
    "gradient_x_activation_abs",
    "gradientshap_abs",
    "integrated_gradients_abs",
    "internal_influence_abs",
    "layer_pass",
    "lrp_abs",
    "reduce_per_unit",
]

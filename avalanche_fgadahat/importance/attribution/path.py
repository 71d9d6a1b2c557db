"""Path methods: layer gradients integrated, or sampled, along paths from a baseline to ``x``.

With ``g_l = ∂f_y/∂a_l``, the zero baseline ``x̄ = 0`` and the Gauss–Legendre nodes ``α_k``
and weights ``w_k`` of ``[0, 1]`` (Captum's default ``method="gausslegendre"``):

* ``conductance_abs``: ``Σ_k (a_l(x_{k+1}) − a_l(x_k)) ⊙ g_l(x_k)``, ``x_k = x̄ + α_k (x − x̄)``
  over n + 1 nodes — Captum ``LayerConductance`` (Dhamdhere et al., "How important is a
  neuron?", ICLR 2019);
* ``internal_influence_abs``: ``Σ_k w_k g_l(x_k)`` over n nodes — Captum ``InternalInfluence``
  (Leino et al., "Influence-directed explanations for deep convolutional networks", 2018);
* ``gradientshap_abs``: ``mean_s (a_l(x) − a_l(x̄)) ⊙ g_l(c_s x + (1 − c_s) x̄)``,
  ``c_s ~ U(0, 1)`` — Captum ``LayerGradientShap`` with ``stdevs=0`` (Lundberg & Lee, "A unified
  approach to interpreting model predictions", NeurIPS 2017): the path integral of IG with
  the step drawn at random;
* ``integrated_gradients_abs``: ``(a_l(x) − a_l(x̄)) ⊙ Σ_k w_k ∂f_y/∂a_l`` at
  ``a_l = a_l(x̄) + α_k (a_l(x) − a_l(x̄))`` — Captum ``LayerIntegratedGradients``
  (Sundararajan et al., "Axiomatic attribution for deep networks", ICML 2017); the path is
  in the layer's output, not the input.

The steps or samples are stacked into one mega-batch
(:meth:`~._engine.AttributionStep.gradient_passes`): conductance, internal influence and
GradientSHAP read all layers from the same rows; layer IG patches each layer in its own rows.
"""

from __future__ import annotations

import numpy as np
import torch

from ..forward_wrapper import attribution_mode
from ..registry import StepContext, register_importance
from ._engine import AttributionStep, Chunk, add_to, gauss_legendre, interpolate, reduce_per_unit


def _input_path(step: AttributionStep, alphas: list[float]):
    """The mega-batch ``cat_k [α_k x]`` in chunks of whole steps (chunk ``start:end`` = steps)."""
    zero = torch.zeros_like(step.x)
    for first, last in step.step_chunks(len(alphas)):
        yield Chunk(first, last, interpolate(step.x, zero, alphas[first:last]), step.y.repeat(last - first))


@register_importance(
    "conductance_abs",
    short_name="Conductance",
    formula="mean |Σ_k (a_l(x_{k+1}) − a_l(x_k)) ⊙ ∂f_y/∂a_l(x_k)|, x_k on the path 0 → x (Captum LayerConductance, n = 50)",
    extra_passes="1 forward + 1 backward on (n+1)·B rows (n = 50), all layers together (reference: 1 per layer)",
)
def conductance_abs(ctx: StepContext) -> dict[str, torch.Tensor]:
    """Layer conductance, all layers from the same interpolated mega-batch."""
    step = AttributionStep(ctx)
    n, batch = step.settings.conductance_steps, step.batch
    _, alphas = gauss_legendre(n + 1)
    totals: dict[str, torch.Tensor] = {}
    previous: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    with attribution_mode(step.model):
        for chunk, outputs, grads in step.gradient_passes(_input_path(step, alphas)):
            steps = chunk.end - chunk.start
            for key, grad in grads.items():
                act = outputs[key].reshape(steps, batch, *grad.shape[1:])
                grad = grad.reshape(act.shape)
                if key in previous:  # the pair (last step of the previous chunk, first of this one)
                    prev_act, prev_grad = previous[key]
                    act = torch.cat([prev_act[None], act])
                    grad = torch.cat([prev_grad[None], grad])
                add_to(totals, key, ((act[1:] - act[:-1]) * grad[:-1]).sum(0))
                previous[key] = (act[-1], grad[-1])
    return {key: reduce_per_unit(value) for key, value in totals.items()}


@register_importance(
    "internal_influence_abs",
    short_name="II",
    formula="mean |Σ_k w_k ∂f_y/∂a_l(x_k)|, x_k on the path 0 → x (Captum InternalInfluence, n = 5)",
    extra_passes="1 forward + 1 backward on n·B rows (n = 5), all layers together (reference: 1 per layer)",
)
def internal_influence_abs(ctx: StepContext) -> dict[str, torch.Tensor]:
    """Internal influence (path-integrated layer gradient), all layers in one mega-batch."""
    step = AttributionStep(ctx)
    n, batch = step.settings.internal_influence_steps, step.batch
    step_sizes, alphas = gauss_legendre(n)
    weights = torch.tensor(step_sizes)  # default dtype, as Captum's InternalInfluence
    totals: dict[str, torch.Tensor] = {}
    with attribution_mode(step.model):
        for chunk, _, grads in step.gradient_passes(_input_path(step, alphas)):
            steps = chunk.end - chunk.start
            w = weights[chunk.start:chunk.end].to(chunk.inputs.device)
            for key, grad in grads.items():
                grad = grad.reshape(steps, batch, *grad.shape[1:])
                add_to(totals, key, (grad * w.view(-1, *([1] * (grad.dim() - 1)))).sum(0))
    return {key: reduce_per_unit(value) for key, value in totals.items()}


@register_importance(
    "gradientshap_abs",
    short_name="GS",
    formula="mean |E_c[(a_l(x) − a_l(0)) ⊙ ∂f_y/∂a_l(c·x)]|, c ~ U(0,1), 5 samples (Captum LayerGradientShap, zero baselines)",
    extra_passes="1 forward + 1 backward on s·B rows (s = 5) + 1 forward on 2B rows, all layers share the draws (reference: all of it per layer)",
)
def gradientshap_abs(ctx: StepContext) -> dict[str, torch.Tensor]:
    """GradientSHAP with zero baselines; one set of random draws shared by all layers.

    The draws follow Captum's (``numpy`` global RNG: baseline indices, then the
    coefficients ``c``), so with the same numpy state the values equal Captum's.
    """
    step = AttributionStep(ctx)
    samples, batch = step.settings.gradientshap_samples, step.batch
    baselines = torch.zeros_like(step.x)  # the reference's zeros_like(input) distribution
    rows = samples * batch
    baseline_index = torch.as_tensor(np.random.choice(baselines.shape[0], rows), device=step.x.device)
    coefficient = torch.tensor(np.random.uniform(0.0, 1.0, rows), device=step.x.device, dtype=step.x.dtype)
    example = torch.arange(batch, device=step.x.device).repeat_interleave(samples)

    def mega_batch():
        for start, end in step.row_chunks(rows):
            idx, c = example[start:end], coefficient[start:end]
            c = c.view(-1, *([1] * (step.x.dim() - 1)))
            scaled = c * step.x[idx] + (1.0 - c) * baselines[baseline_index[start:end]]
            yield Chunk(start, end, scaled, step.y[idx], extra=idx)

    totals: dict[str, torch.Tensor] = {}
    with attribution_mode(step.model):
        values = step.layer_values(torch.cat([step.x, baselines]))
        for chunk, _, grads in step.gradient_passes(mega_batch()):
            idx = chunk.extra
            for key, grad in grads.items():
                value = values[key]
                diff = value[:batch][idx] - value[batch:][baseline_index[chunk.start:chunk.end]]
                total = totals.setdefault(key, torch.zeros_like(value[:batch]))
                total.index_add_(0, idx, diff * grad)
    return {key: reduce_per_unit(value * (1 / samples)) for key, value in totals.items()}


@register_importance(
    "integrated_gradients_abs",
    short_name="Layer IG",
    formula="mean |(a_l(x) − a_l(0)) ⊙ Σ_k w_k ∂f_y/∂a_l at a_l(0) + α_k (a_l(x) − a_l(0))| (Captum LayerIntegratedGradients, n = 50)",
    extra_passes="1 forward on 2B rows + 1 forward + 1 backward on L·n·B rows (n = 50; each layer patched in its own rows of one mega-batch; reference: L calls)",
)
def integrated_gradients_abs(ctx: StepContext) -> dict[str, torch.Tensor]:
    """Layer IG: the layer output is interpolated, so each layer needs its own rows.

    Row ``(l, k, b)`` of the mega-batch runs example ``b`` with layer ``l``'s output replaced
    by the leaf ``a_l(x̄) + α_k (a_l(x) − a_l(x̄))``; the gradient is taken at those leaves.
    """
    step = AttributionStep(ctx)
    n, batch = step.settings.integrated_gradients_steps, step.batch
    step_sizes, alphas = gauss_legendre(n)
    weights = torch.tensor(step_sizes, dtype=torch.float32, device=step.x.device)  # Captum: .float()
    alpha = torch.tensor(alphas, dtype=torch.float64, device=step.x.device)
    keys = list(step.layers)
    per_layer = n * batch

    def mega_batch(inputs: dict[str, torch.Tensor], bases: dict[str, torch.Tensor]):
        for start, end in step.row_chunks(len(keys) * per_layer):
            rows = torch.arange(start, end, device=step.x.device)
            layer_of, within = rows // per_layer, rows % per_layer
            k_of, example = within // batch, within % batch
            patches, leaves, locals_ = {}, {}, {}
            for index, key in enumerate(keys):
                local = (layer_of == index).nonzero().squeeze(1)
                if local.numel() == 0:
                    continue
                e, k = example[local], k_of[local]
                a = alpha[k].to(inputs[key].dtype).view(-1, *([1] * (inputs[key].dim() - 1)))
                leaf = (bases[key][e] + a * (inputs[key][e] - bases[key][e])).requires_grad_()
                leaves[key], locals_[key] = leaf, local
                patches[key] = lambda out, _local=local, _leaf=leaf: out.index_put((_local,), _leaf)
            yield Chunk(start, end, step.x[example], step.y[example], patches, leaves, (example, k_of, locals_))

    totals: dict[str, torch.Tensor] = {}
    with attribution_mode(step.model):
        values = step.layer_values(torch.cat([step.x, torch.zeros_like(step.x)]))
        inputs = {key: values[key][:batch] for key in keys}
        bases = {key: values[key][batch:] for key in keys}
        for chunk, _, grads in step.gradient_passes(mega_batch(inputs, bases)):
            example, k_of, locals_ = chunk.extra
            for key, grad in grads.items():
                local = locals_[key]
                w = weights[k_of[local]].view(-1, *([1] * (grad.dim() - 1)))
                total = totals.setdefault(key, torch.zeros_like(inputs[key]))
                total.index_add_(0, example[local], grad * w)
    return {key: reduce_per_unit(totals[key] * (inputs[key] - bases[key])) for key in keys}

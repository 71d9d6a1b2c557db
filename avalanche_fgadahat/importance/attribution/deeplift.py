"""DeepLIFT and DeepLIFT-SHAP (Rescale rule), batched over all layers.

DeepLIFT (Shrikumar et al., "Learning important features through propagating activation
differences", ICML 2017) explains ``f_y(x) − f_y(x̄)`` by differences from a reference input
``x̄``. With ``m_l`` the multipliers of ``a_l`` — the chain rule with every elementwise
nonlinearity's derivative replaced by the Rescale ratio ``Δy / Δz`` (reference-to-input
differences of its output and input; the plain gradient where ``|Δz| < 10⁻¹⁰``):

* ``deeplift_abs``: ``(a_l(x) − a_l(x̄)) ⊙ m_l`` with ``x̄ = 0`` — Captum ``LayerDeepLift``;
* ``deepliftshap_abs``: DeepLIFT averaged over a distribution of K baselines
  (:func:`deepliftshap_baselines`) — Captum ``LayerDeepLiftShap`` (Lundberg & Lee,
  NeurIPS 2017). CLArena passed ``baselines=None``, which crashes; here the baselines are
  the zero input plus K − 1 examples of the batch.

Inputs and references run as one batch ``cat([inputs, references])`` through the
``"rescale"`` forward (:func:`~avalanche_fgadahat.importance.deeplift_rescale.rescale_elementwise`),
so one backward per chunk gives the multipliers of every layer: each (input, baseline) pair
is two rows of the mega-batch of :meth:`~._engine.AttributionStep.gradient_passes`.
"""

from __future__ import annotations

import torch

from ..forward_wrapper import attribution_mode
from ..registry import StepContext, register_importance
from ._engine import AttributionStep, Chunk, chunks, reduce_per_unit


def deepliftshap_baselines(x: torch.Tensor, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DeepLIFT-SHAP's baseline distribution: the zero input and ``count − 1`` batch examples.

    The examples are a random subset of the batch (``torch.randperm``; with fewer examples
    than ``count − 1`` all of them are used). Captum averages every input's DeepLIFT
    attributions over all of these baselines, so order does not matter. An input that is
    among its own baselines gets zero attribution from that pair, as in any SHAP estimate
    whose background contains the point.
    """
    if count < 2:
        raise ValueError(f"deepliftshap_baselines must be >= 2 (zero input + batch examples), got {count}")
    order = torch.randperm(x.shape[0], generator=generator)[: count - 1].to(x.device)
    return torch.cat([torch.zeros_like(x[:1]), x[order]])


def _deeplift_pairs(
    step: AttributionStep, inputs_index: torch.Tensor, references: torch.Tensor, reference_index: torch.Tensor
) -> dict[str, torch.Tensor]:
    """DeepLIFT attributions of pairs ``(x[inputs_index[r]], references[reference_index[r]])``."""
    step.forward.check_deeplift_supported()
    rows = inputs_index.shape[0]
    max_pairs = None if step.settings.max_rows is None else max(1, step.settings.max_rows // 2)

    def mega_batch():
        for start, end in chunks(rows, max_pairs):
            idx, ref = inputs_index[start:end], reference_index[start:end]
            yield Chunk(start, end, torch.cat([step.x[idx], references[ref]]), step.y[idx].repeat(2))

    parts: dict[str, list[torch.Tensor]] = {key: [] for key in step.layers}
    for chunk, outputs, grads in step.gradient_passes(mega_batch()):
        half = chunk.end - chunk.start
        for key, grad in grads.items():
            act = outputs[key]
            parts[key].append((act[:half] - act[half:]) * grad[:half])
    return {key: torch.cat(value) for key, value in parts.items()}


@register_importance(
    "deeplift_abs",
    short_name="DL",
    formula="mean |(a_l(x) − a_l(0)) ⊙ m_l|, m_l = DeepLIFT Rescale multipliers (Captum LayerDeepLift, zero baseline)",
    extra_passes="1 forward + 1 backward on 2B rows (inputs and zero references), all layers together (reference: 1 per layer)",
)
def deeplift_abs(ctx: StepContext) -> dict[str, torch.Tensor]:
    """DeepLIFT (Rescale) against the zero input, all layers from one modified backward."""
    return {key: reduce_per_unit(value) for key, value in deeplift_maps(ctx).items()}


def deeplift_maps(ctx: StepContext) -> dict[str, torch.Tensor]:
    """Unreduced DeepLIFT attributions ``(a_l(x) − a_l(0)) ⊙ m_l``, shape of each layer output."""
    step = AttributionStep(ctx, nonlinearity="rescale")
    index = torch.arange(step.batch, device=step.x.device)
    with attribution_mode(step.model):
        return _deeplift_pairs(step, index, torch.zeros_like(step.x), index)


@register_importance(
    "deepliftshap_abs",
    short_name="DeepLIFT-SHAP",
    formula="mean |mean_k DeepLIFT(x; baseline_k)|, baselines = zero input + K−1 batch examples, K = 8 (Captum LayerDeepLiftShap)",
    extra_passes="1 forward + 1 backward on 2·K·B rows (K = 8), all layers together (reference: 1 per layer)",
)
def deepliftshap_abs(ctx: StepContext) -> dict[str, torch.Tensor]:
    """DeepLIFT-SHAP over :func:`deepliftshap_baselines` (CLArena passed ``None``: a crash)."""
    return {key: reduce_per_unit(value) for key, value in deepliftshap_maps(ctx).items()}


def deepliftshap_maps(ctx: StepContext, baselines: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Unreduced DeepLIFT-SHAP attributions: DeepLIFT averaged over ``baselines``
    (default :func:`deepliftshap_baselines` of the batch)."""
    step = AttributionStep(ctx, nonlinearity="rescale")
    if baselines is None:
        baselines = deepliftshap_baselines(step.x, step.settings.deepliftshap_baselines)
    count, batch = baselines.shape[0], step.batch
    device = step.x.device
    inputs_index = torch.arange(batch, device=device).repeat_interleave(count)
    reference_index = torch.arange(count, device=device).repeat(batch)
    with attribution_mode(step.model):
        attributions = _deeplift_pairs(step, inputs_index, baselines, reference_index)
    return {
        key: value.reshape(batch, count, *value.shape[1:]).mean(1) for key, value in attributions.items()
    }

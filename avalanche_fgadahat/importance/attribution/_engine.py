"""The shared engine of the attribution importances: one step's pieces and the mega-batch loop.

Every attribution is taken of the **target-class logit** ``f_y(x)`` at the output ``a_l`` of
the weighted layer of each unit group
(:func:`~avalanche_fgadahat.importance.forward_wrapper.attribution_layers`) in the step's
forward (:class:`~avalanche_fgadahat.importance.forward_wrapper.TaskForward`), and reduced
per unit by :func:`reduce_per_unit`: ``u_l[i] = mean |attr[:, i, ...]|`` over every dim but 1.

The attribution of ``a_l`` does not depend on which other layers are hooked, so one forward
with every layer hooked (:func:`layer_pass`) and one backward of ``Σ_rows f_y`` give
``g_l = ∂f_y/∂a_l`` for all layers at once (each row's target logit depends on its own row
only). The methods that interpolate or sample stack their steps, samples, baselines or
patched layers into one **mega-batch** and run it through :meth:`AttributionStep.gradient_passes`
in chunks of at most ``AttributionSettings.max_rows`` rows (Captum's
``internal_batch_size``); each method only builds its chunks and accumulates the yielded
gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ...models.base import HATBackbone
from ..forward_wrapper import TaskForward, attribution_layers, attribution_mode
from ..registry import StepContext
from .settings import AttributionSettings

#: The attribution forward uses the step's masks with values at or below this set to 0
#: (``docs/deviations.md`` H16): the units the gate raised to ``masking.gate.KEPT_MASK_MINIMUM``
#: (1e-15; their ``σ`` is smaller) count as off. A mask value enters every attribution of its
#: unit as a factor (gradients, ablation, paths; LRP through the mask product, deviation A6),
#: and LRP multiplies the masks of consecutive layers: above 1e-15, two masks give more than
#: 1e-30, so their products with relevances or gradients down to 1e-8 stay normal. A unit at or
#: below 1e-15 changes the forward by at most ``1e-15 · |a · w|`` (1e-7 of float32's
#: resolution), and its own attribution is at most 1e-15 of the unmasked one.
ATTRIBUTION_MASK_FLOOR = 1e-15

#: Replaces a layer's output inside a forward (see :func:`layer_pass`).
Patch = Callable[[torch.Tensor], torch.Tensor]


def reduce_per_unit(attribution: torch.Tensor) -> torch.Tensor:
    """``mean |attribution|`` over every dim but 1 — CLArena's reduction to one value per unit."""
    dims = [d for d in range(attribution.dim()) if d != 1]
    return attribution.abs().mean(dim=dims).detach()


def settings_of(ctx: StepContext) -> AttributionSettings:
    """``ctx.attribution_settings``, checked."""
    settings = ctx.attribution_settings
    if not isinstance(settings, AttributionSettings):
        raise ValueError(
            f"StepContext.attribution_settings must be an AttributionSettings, got {type(settings).__name__}"
        )
    return settings


def _inputs(ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
    x = ctx.inputs.detach()
    y = ctx.targets.detach().long()
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"inputs ({x.shape[0]} rows) and targets ({y.shape[0]} rows) differ in batch size")
    return x, y


def chunks(total: int, size: int | None) -> Iterator[tuple[int, int]]:
    """``[start, end)`` ranges of at most ``size`` items covering ``range(total)`` (``None``: one)."""
    size = total if size is None else max(1, size)
    for start in range(0, total, size):
        yield start, min(start + size, total)


def target_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``f_y`` of every row: ``logits[r, targets[r]]``."""
    return logits.gather(1, targets.view(-1, 1)).squeeze(1)


def layer_pass(
    forward: nn.Module,
    x: torch.Tensor,
    layers: Mapping[str, nn.Module],
    patches: Mapping[str, Patch] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward of ``forward(x)`` returning the logits and every layer's output.

    ``patches[key]`` (optional) replaces the output of layer ``key`` before the rest of the
    network sees it; the returned output is the patched one.
    """
    outputs: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(key: str):
        def hook(module, args, output):
            if key in outputs:
                raise RuntimeError(f"layer of unit group {key!r} is called twice in one forward")
            if patches is not None and key in patches:
                output = patches[key](output)
            outputs[key] = output
            return output

        return hook

    for key, layer in layers.items():
        handles.append(layer.register_forward_hook(make_hook(key)))
    try:
        logits = forward(x)
    finally:
        for handle in handles:
            handle.remove()
    return logits, outputs


def _gradients(logits: torch.Tensor, targets: torch.Tensor, tensors: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """``∂ Σ_rows f_y / ∂ tensors`` — each row's target logit depends on its own row only."""
    return torch.autograd.grad(target_logits(logits, targets).sum(), tensors)


def gauss_legendre(n: int) -> tuple[list[float], list[float]]:
    """Captum's ``gausslegendre`` step sizes and alphas for ``n`` steps."""
    points, weights = np.polynomial.legendre.leggauss(n)
    return (0.5 * weights).tolist(), (0.5 * (1 + points)).tolist()


def interpolate(x: torch.Tensor, baseline: torch.Tensor, alphas: list[float]) -> torch.Tensor:
    """``cat_k [x̄ + α_k (x − x̄)]`` (step-major), as Captum builds its scaled inputs."""
    return torch.cat([baseline + alpha * (x - baseline) for alpha in alphas])


@dataclass
class Chunk:
    """One forward/backward of a mega-batch (rows ``start:end`` of it, in the method's unit).

    :param inputs: the rows fed to the forward.
    :param targets: their target classes.
    :param patches: layer outputs to replace (:func:`layer_pass`).
    :param leaves: differentiate with respect to these tensors (the patched values) instead
        of the layer outputs.
    :param extra: whatever the method needs to accumulate this chunk.
    """

    start: int
    end: int
    inputs: torch.Tensor
    targets: torch.Tensor
    patches: Mapping[str, Patch] | None = None
    leaves: Mapping[str, torch.Tensor] | None = None
    extra: Any = None


class AttributionStep:
    """The pieces of one step every attribution needs: inputs ``x``, targets ``y``, the
    settings, the layers ``a_l`` is read at and the step's forward.

    :param nonlinearity: how :class:`~avalanche_fgadahat.importance.forward_wrapper.TaskForward`
        presents the relus (``"plain"``, ``"modules"`` for Captum's DeepLIFT/LRP,
        ``"rescale"`` for the batched DeepLIFT).
    """

    def __init__(self, ctx: StepContext, nonlinearity: str = "plain") -> None:
        self.model: HATBackbone = ctx.model
        self.x, self.y = _inputs(ctx)
        self.settings = settings_of(ctx)
        self.layers = attribution_layers(self.model)
        masks = {key: torch.nn.functional.hardshrink(mask.detach(), ATTRIBUTION_MASK_FLOOR) if ctx.subnormal_guards
                 else mask.detach() for key, mask in ctx.masks.items()}
        with attribution_mode(self.model):  # the trace forward must not touch BN or recordings
            self.forward = TaskForward(
                self.model, ctx.task, masks, nonlinearity=nonlinearity,
                example=self.x if nonlinearity != "plain" else None,
            )

    @property
    def batch(self) -> int:
        """The number of examples ``B`` of the step."""
        return self.x.shape[0]

    def row_chunks(self, rows: int) -> Iterator[tuple[int, int]]:
        """Chunks of at most ``max_rows`` rows."""
        return chunks(rows, self.settings.max_rows)

    def step_chunks(self, steps: int) -> Iterator[tuple[int, int]]:
        """Chunks of whole interpolation steps (each step holds the full batch)."""
        per = None if self.settings.max_rows is None else max(1, self.settings.max_rows // self.batch)
        return chunks(steps, per)

    @torch.no_grad()
    def layer_values(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every layer's output for ``x`` (chunked, no graph)."""
        pieces: dict[str, list[torch.Tensor]] = {key: [] for key in self.layers}
        for start, end in self.row_chunks(x.shape[0]):
            _, outputs = layer_pass(self.forward, x[start:end], self.layers)
            for key, value in outputs.items():
                pieces[key].append(value)
        return {key: torch.cat(value) for key, value in pieces.items()}

    def gradient_passes(
        self, mega_batch: Iterable[Chunk]
    ) -> Iterator[tuple[Chunk, dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
        """The mega-batch loop: per chunk, one forward with every layer hooked (and patched)
        and one backward of ``Σ_rows f_y``.

        Yields ``(chunk, outputs, grads)``: every layer's (patched) output, detached, and
        ``∂ Σ f_y / ∂`` the layer outputs, or ``/ ∂ chunk.leaves`` where given, in the order the
        forward reaches them. Run it inside
        :func:`~avalanche_fgadahat.importance.forward_wrapper.attribution_mode`.
        """
        for chunk in mega_batch:
            with torch.enable_grad():
                logits, outputs = layer_pass(self.forward, chunk.inputs, self.layers, chunk.patches)
                wrt = outputs if chunk.leaves is None else chunk.leaves
                keys = list(wrt)
                grads = _gradients(logits, chunk.targets, [wrt[k] for k in keys])
            yield chunk, {key: value.detach() for key, value in outputs.items()}, dict(zip(keys, grads))


def add_to(totals: dict[str, torch.Tensor], key: str, term: torch.Tensor) -> None:
    """``totals[key] += term`` (the first term is stored as is)."""
    totals[key] = term if key not in totals else totals[key] + term

"""AdaHATPlugin: adaptive soft gradient adjustment (Wang et al., ECML-PKDD 2024).

AdaHAT replaces HAT's hard rate ``1 − min(M_l[i], M_{l−1}[j])`` by a soft one driven by
the summative mask ``S`` (how many earlier tasks use a unit) and the current task's
mask sparsity ``R_l`` (the regulariser's per-layer value on the current batch):

* ``adahat``:        ``r_l = α / (ε + R_l)``, ``a = r_l / (Agg_min S + r_l)``   (AdaHAT Eq. 7–8)
* ``adahat_no_sum``: ``a = r_l / (t + r_l)``, t the 1-based position of the task (ablation)
* ``adahat_no_reg``: ``r = α / ε``,          ``a = r / (Agg_min S + r)``       (ablation)

Parameters no earlier task used have ``S = 0`` and rate 1; as α → 0 the rate of used
parameters goes to 0 (HAT), as α → ∞ to 1 (fine-tuning). HAT's modes stay available.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .._validation import check_number
from ..models.base import HATBackbone
from .diagnostics import LearningDiagnostics
from .hat import HATPlugin
from .rules import RateRule


def _inverse_intensity(plugin: "AdaHATPlugin", key: str) -> torch.Tensor:
    """``1 / r_l = (ε + R_l) / α``, computed for all layers at once, once per step."""
    sparsity = plugin.layer_sparsity
    if plugin._intensity_source is not sparsity:
        values = (plugin.epsilon + torch.stack(list(sparsity.values()))) / plugin.adjustment_intensity
        plugin._inverse_intensities = dict(zip(sparsity, values.unbind()))
        plugin._intensity_source = sparsity
    return plugin._inverse_intensities[key]


def soft_rate(measure: torch.Tensor, inverse_r) -> torch.Tensor:
    """``r / (P + r)`` written as ``1 / (1 + P · (1/r))``: one temporary of the parameter's
    size, updated in place, and exactly 1 where ``P`` is 0."""
    return torch.mul(measure, inverse_r).add_(1.0).reciprocal_()


def soft_rate_divisors(measures: list[torch.Tensor], inverse_rs: list[torch.Tensor]) -> list[torch.Tensor]:
    """``1 + P · (1/r)`` for a list of parameters (the reciprocal of :func:`soft_rate`)."""
    divisors = torch._foreach_mul(measures, inverse_rs)
    torch._foreach_add_(divisors, 1.0)
    return divisors


def adahat_rate(plugin: "AdaHATPlugin", measure: torch.Tensor, key: str) -> torch.Tensor:
    """``r_l / (P + r_l)`` with ``r_l = α / (ε + R_l)`` (FG-AdaHAT's rate too, with ε = b_R)."""
    return soft_rate(measure, _inverse_intensity(plugin, key))


def adahat_adjust_(
    plugin: "AdaHATPlugin", grads: list[torch.Tensor], measures: list[torch.Tensor], keys: list[str]
) -> None:
    """``grad ← grad / (1 + P·(1/r_l))``, i.e. ``grad · adahat_rate``, for a list of parameters:
    three passes over the parameters (multiply, add, divide) and one temporary per parameter."""
    torch._foreach_div_(grads, soft_rate_divisors(measures, [_inverse_intensity(plugin, key) for key in keys]))


def _adahat_no_sum(plugin: "AdaHATPlugin", measure: torch.Tensor, key: str) -> torch.Tensor:
    return (_inverse_intensity(plugin, key) * plugin.task_position).add_(1.0).reciprocal_()


def _adahat_no_reg(plugin: "AdaHATPlugin", measure: torch.Tensor, key: str) -> torch.Tensor:
    return soft_rate(measure, plugin.epsilon / plugin.adjustment_intensity)


class AdaHATPlugin(HATPlugin):
    """AdaHAT on any Avalanche ``SupervisedTemplate``.

    :param adjustment_mode: ``adahat`` (default), ``adahat_no_sum``, ``adahat_no_reg``, or
        one of HAT's modes (``hat``, ``hat_random``, ``hat_const_alpha``, ``hat_const_1``;
        ``hat_const_alpha`` uses ``adjustment_intensity`` as its α).
    :param adjustment_intensity: α (> 0), 1e-6 in the AdaHAT paper configs.
    :param epsilon: ε (> 0), 0.1 in the paper configs.

    The other arguments are :class:`HATPlugin` 's, with the same defaults.
    """

    ADJUSTMENT_MODES: Mapping[str, RateRule] = {
        **HATPlugin.ADJUSTMENT_MODES,
        "adahat": RateRule("summative", adahat_rate, per_step=True, adjust_=adahat_adjust_),
        "adahat_no_sum": RateRule("summative", _adahat_no_sum, per_step=True),
        "adahat_no_reg": RateRule("summative", _adahat_no_reg),
    }

    def __init__(
        self,
        adjustment_mode: str = "adahat",
        adjustment_intensity: float = 1e-6,
        epsilon: float = 0.1,
        s_max: float = 400.0,
        clamp_threshold: float = 50.0,
        mask_sparsity_reg_factor: float = 0.1,
        mask_sparsity_reg_mode: str = "original",
        task_embedding_init_mode: str = "N01",
        embedding_clamp: float | None = None,
        check_finite_loss: bool = True,
        diagnostics: LearningDiagnostics | None = LearningDiagnostics(),
    ) -> None:
        self.adjustment_intensity = float(
            check_number("adjustment_intensity", adjustment_intensity, minimum=0.0, strict_minimum=True)
        )
        self.epsilon = float(check_number("epsilon", epsilon, minimum=0.0, strict_minimum=True))
        super().__init__(
            adjustment_mode=adjustment_mode,
            s_max=s_max,
            clamp_threshold=clamp_threshold,
            mask_sparsity_reg_factor=mask_sparsity_reg_factor,
            mask_sparsity_reg_mode=mask_sparsity_reg_mode,
            task_embedding_init_mode=task_embedding_init_mode,
            alpha=min(self.adjustment_intensity, 1.0),
            embedding_clamp=embedding_clamp,
            check_finite_loss=check_finite_loss,
            diagnostics=diagnostics,
        )
        self.task_position = 1
        self._intensity_source: dict[str, torch.Tensor] | None = None
        self._inverse_intensities: dict[str, torch.Tensor] = {}

    def __setstate__(self, state: dict) -> None:
        state.setdefault("_intensity_source", None)
        state.setdefault("_inverse_intensities", {})
        super().__setstate__(state)

    def _prepare_rates(self, model: HATBackbone) -> None:
        self.task_position = len(model.trained_tasks()) + 1
        super()._prepare_rates(model)

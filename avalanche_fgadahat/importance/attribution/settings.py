"""Hyperparameters of the attribution importances (step counts, samples, rows per pass).

A user sets them by passing an :class:`AttributionSettings` as
``StepContext.attribution_settings`` (:class:`~avalanche_fgadahat.importance.registry.StepContext`);
the defaults, :data:`DEFAULT_SETTINGS`, are the reference's (CLArena's Captum calls). This
module imports no model and no Captum, so configurations can import it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..._validation import check_number


@dataclass(frozen=True)
class AttributionSettings:
    """Hyperparameters of the attribution importances (defaults = the reference's).

    :param conductance_steps: ``n_steps`` of conductance (Captum default, as CLArena: 50).
    :param internal_influence_steps: ``n_steps`` of internal influence (CLArena: 5).
    :param integrated_gradients_steps: ``n_steps`` of layer IG (Captum default: 50).
    :param gradientshap_samples: ``n_samples`` of GradientSHAP (Captum default: 5).
    :param deepliftshap_baselines: K, the size of DeepLIFT-SHAP's baseline distribution
        (the zero input plus K − 1 examples of the batch; see
        :func:`~avalanche_fgadahat.importance.attribution.deeplift.deepliftshap_baselines`).
    :param max_rows: at most this many rows per forward pass (``None``: one pass).
    """

    conductance_steps: int = 50
    internal_influence_steps: int = 5
    integrated_gradients_steps: int = 50
    gradientshap_samples: int = 5
    deepliftshap_baselines: int = 8
    max_rows: int | None = 1024

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "max_rows" and value is None:
                continue
            minimum = 2 if item.name == "deepliftshap_baselines" else 1
            check_number(item.name, value, minimum=minimum, integer=True)


#: The reference's settings; the default of ``StepContext.attribution_settings``.
DEFAULT_SETTINGS = AttributionSettings()

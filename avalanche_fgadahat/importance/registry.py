"""Registry of FG-AdaHAT's neuron-wise importance types.

An importance type maps one training step (:class:`StepContext`) to a raw per-unit
importance ``u_l`` (a detached 1-D tensor of ``n_l`` values per unit group). FG-AdaHAT
then min-max normalises, multiplies by the soft mask and accumulates it (see
``plugins/fgadahat.py``). Register with :func:`register_importance`; the plugin looks
types up by name in :data:`IMPORTANCE_TYPES`, never through an if/elif chain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..models.base import HATBackbone

if TYPE_CHECKING:
    from .attribution.settings import AttributionSettings


def _default_attribution_settings() -> AttributionSettings:
    # imported on first use: a module-level import would be circular (the attribution
    # package imports this module to register its types)
    from .attribution.settings import DEFAULT_SETTINGS

    return DEFAULT_SETTINGS


@dataclass
class StepContext:
    """What one training step produced, as FG-AdaHAT's importances read it.

    Read after ``optimizer.step()`` (CLArena's point): ``model`` holds the updated
    weights and ``.grad`` the step's adjusted gradients; ``inputs``, ``targets``,
    ``masks`` (soft training masks σ(s·e), detached) and ``activations`` (post-mask,
    post-ReLU, detached) come from the step's forward pass, before the update.

    ``attribution_settings`` holds the hyperparameters of the attribution importances
    (step counts, samples, rows per pass); the default is
    :data:`~avalanche_fgadahat.importance.attribution.settings.DEFAULT_SETTINGS`, the
    reference's. The in-pass importances ignore it.

    ``subnormal_guards``: whether the step runs H16's flushes (``docs/deviations.md``; the
    plugin's ``subnormal_guards`` setting for the model's device): the accumulator's floors,
    the in-pass products' and the attribution passes' mask floor.
    """

    model: HATBackbone
    task: int
    inputs: torch.Tensor
    targets: torch.Tensor
    masks: dict[str, torch.Tensor]
    activations: dict[str, torch.Tensor]
    gate_scale: float
    attribution_settings: AttributionSettings = field(default_factory=_default_attribution_settings)
    subnormal_guards: bool = True


ImportanceFunction = Callable[[StepContext], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class ImportanceType:
    """One importance measure.

    :param name: the reference's name (the ``importance_type`` argument value).
    :param function: ``StepContext → {unit_key: u_l}``.
    :param short_name: the paper's label (ICU, IG, ...) or a short alias.
    :param formula: the definition, for the docs table.
    :param extra_passes: extra forward/backward work per step beyond the training step.
    :param needs_activations: whether the model must record activations in training.
    """

    name: str
    function: ImportanceFunction
    short_name: str
    formula: str
    extra_passes: str = "none"
    needs_activations: bool = False


IMPORTANCE_TYPES: dict[str, ImportanceType] = {}

#: The 23 ``importance_type`` names of the reference (CLArena ``FGAdaHAT``), in its order.
#: ``in_pass.py`` registers the 13 computed from the training step's own tensors
#: (``in_pass.IN_PASS_TYPES``), the ``attribution`` package the 10 that need extra
#: forward/backward passes (Captum, ablation; ``attribution.ATTRIBUTION_TYPES``).
REFERENCE_IMPORTANCE_TYPES: tuple[str, ...] = (
    "input_weight_abs_sum",
    "output_weight_abs_sum",
    "input_weight_gradient_abs_sum",
    "output_weight_gradient_abs_sum",
    "activation_abs",
    "input_weight_abs_sum_x_activation_abs",
    "output_weight_abs_sum_x_activation_abs",
    "gradient_x_activation_abs",
    "input_weight_gradient_square_sum",
    "output_weight_gradient_square_sum",
    "input_weight_gradient_square_sum_x_activation_abs",
    "output_weight_gradient_square_sum_x_activation_abs",
    "conductance_abs",
    "internal_influence_abs",
    "gradcam_abs",
    "deeplift_abs",
    "deepliftshap_abs",
    "gradientshap_abs",
    "integrated_gradients_abs",
    "feature_ablation_abs",
    "lrp_abs",
    "cbp_adaptation",
    "cbp_adaptive_contribution",
)


def register_importance(
    name: str,
    *,
    short_name: str,
    formula: str,
    extra_passes: str = "none",
    needs_activations: bool = False,
) -> Callable[[ImportanceFunction], ImportanceFunction]:
    """Decorator adding an importance function to :data:`IMPORTANCE_TYPES`."""

    def decorate(function: ImportanceFunction) -> ImportanceFunction:
        if name in IMPORTANCE_TYPES:
            raise ValueError(f"importance type {name!r} registered twice")
        IMPORTANCE_TYPES[name] = ImportanceType(
            name, function, short_name, formula, extra_passes, needs_activations
        )
        return function

    return decorate


def typable_short_name(label: str) -> str:
    """A paper label as typed on a command line: lower case, ``×`` as ``x``, spaces as ``-``
    (``G×A`` → ``gxa``, ``Layer IG`` → ``layer-ig``)."""
    return label.lower().replace("×", "x").replace(" ", "-")


def short_name_of(itype: ImportanceType) -> str | None:
    """The typable short name that names ``itype`` alone, or ``None`` when several registered
    types share it (then only the full name selects it)."""
    short = typable_short_name(itype.short_name)
    shared = sum(typable_short_name(t.short_name) == short for t in IMPORTANCE_TYPES.values())
    return short if shared == 1 else None


def find_importance_type(query: object) -> ImportanceType | None:
    """The registered type named ``query`` (surrounding spaces ignored): its full name (any
    case), or its typable short name (any case, e.g. ``icu``, ``IG``, ``gxa``) when that names
    one type alone; else ``None``."""
    if not isinstance(query, str):
        return None
    query = query.strip()
    if query in IMPORTANCE_TYPES:
        return IMPORTANCE_TYPES[query]
    by_name = [t for t in IMPORTANCE_TYPES.values() if t.name.lower() == query.lower()]
    if len(by_name) == 1:
        return by_name[0]
    wanted = typable_short_name(query)
    matches = [t for t in IMPORTANCE_TYPES.values() if short_name_of(t) == wanted]
    return matches[0] if len(matches) == 1 else None


def types_sharing_short_name(query: str) -> list[str]:
    """Full names of the registered types whose short name is ``query`` when several share it."""
    wanted = typable_short_name(query.strip())
    shared = [t.name for t in IMPORTANCE_TYPES.values() if typable_short_name(t.short_name) == wanted]
    return shared if len(shared) > 1 else []

"""FG-AdaHAT's neuron-wise importances, their summing strategies and schedulers.

Importing this package fills :data:`IMPORTANCE_TYPES`: ``in_pass`` registers the types
computed from the training step's own tensors (:data:`IN_PASS_TYPES`), ``attribution`` the
Captum/ablation-based ones (:data:`ATTRIBUTION_TYPES`).
"""

from __future__ import annotations

# isort: off
# in_pass before attribution: the import order is the order of IMPORTANCE_TYPES
from . import in_pass, registry
from . import attribution

# isort: on
from .attribution import ATTRIBUTION_TYPES
from .attribution.settings import AttributionSettings
from .in_pass import IN_PASS_TYPES
from .normalize import min_max_normalize
from .registry import (
    IMPORTANCE_TYPES,
    REFERENCE_IMPORTANCE_TYPES,
    ImportanceType,
    StepContext,
    register_importance,
)
from ..adjustment.schedulers import IMPORTANCE_SCHEDULERS
from .summing import SUMMING_STRATEGIES, SummingStrategy

__all__ = [
    "ATTRIBUTION_TYPES",
    "AttributionSettings",
    "IMPORTANCE_SCHEDULERS",
    "IMPORTANCE_TYPES",
    "IN_PASS_TYPES",
    "REFERENCE_IMPORTANCE_TYPES",
    "SUMMING_STRATEGIES",
    "ImportanceType",
    "StepContext",
    "SummingStrategy",
    "attribution",
    "in_pass",
    "min_max_normalize",
    "register_importance",
    "registry",
]

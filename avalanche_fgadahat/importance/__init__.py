"""FG-AdaHAT's neuron-wise importances, their summing strategies and schedulers.

Importing this package fills :data:`IMPORTANCE_TYPES`: ``in_pass`` registers the types
computed from the training step's own tensors, ``attribution`` (when present) the
Captum/ablation-based ones.
"""

from __future__ import annotations

import importlib
import importlib.util

from . import in_pass, registry
from .normalize import min_max_normalize
from .registry import (
    IMPORTANCE_TYPES,
    REFERENCE_IMPORTANCE_TYPES,
    ImportanceType,
    StepContext,
    register_importance,
)
from .schedulers import IMPORTANCE_SCHEDULERS
from .summing import SUMMING_STRATEGIES, SummingStrategy

if importlib.util.find_spec(f"{__name__}.attribution") is not None:
    importlib.import_module(f"{__name__}.attribution")

__all__ = [
    "IMPORTANCE_SCHEDULERS",
    "IMPORTANCE_TYPES",
    "REFERENCE_IMPORTANCE_TYPES",
    "SUMMING_STRATEGIES",
    "ImportanceType",
    "StepContext",
    "SummingStrategy",
    "in_pass",
    "min_max_normalize",
    "register_importance",
    "registry",
]

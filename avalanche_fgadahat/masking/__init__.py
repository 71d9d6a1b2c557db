"""Mask mechanics shared by HAT, AdaHAT and FG-AdaHAT."""

from .broadcast import AGGREGATIONS, broadcast, broadcast_to_bias, broadcast_to_weight, unit_vectors
from .gate import annealed_scale, binary_mask, compensate_embedding_gradient_, soft_mask
from .layout import ParamLayout
from .regularizer import MASK_SPARSITY_REG_MODES, MaskSparsityRegularizer, mask_sparsity_regularizer

__all__ = [
    "AGGREGATIONS",
    "MASK_SPARSITY_REG_MODES",
    "MaskSparsityRegularizer",
    "ParamLayout",
    "annealed_scale",
    "binary_mask",
    "broadcast",
    "broadcast_to_bias",
    "broadcast_to_weight",
    "compensate_embedding_gradient_",
    "mask_sparsity_regularizer",
    "soft_mask",
    "unit_vectors",
]

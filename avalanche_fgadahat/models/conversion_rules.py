"""What the conversion to a HAT network does with each kind of layer and operation (registries).

* :data:`MASKABLE_LAYERS`: torch layers that get a per-unit HAT gate (HAT-CL's idea of a
  registry from torch layers to their masked form). Each masked layer's output units (rows of
  its weight) are one unit group, gated after the per-unit affine layers that follow it
  (BatchNorm) and, where its output is summed with others (a residual addition), after the sum;
* :data:`PER_TASK_LAYERS`: layers with per-task state that are replaced by a per-task copy
  (:class:`~.per_task_norm.PerTaskNorm`): BatchNorm;
* :data:`REFUSED_LAYERS`: layers HAT cannot mask, refused before anything trains, with the reason;
* :data:`TRANSPARENT_MODULES` / :data:`TRANSPARENT_FUNCTIONS` / :data:`TRANSPARENT_METHODS`:
  operations that pass units through unchanged in number and order (activations, dropout,
  pooling, flatten, reshape), through which "which masked layer feeds which" is followed;
* :data:`ADDITIONS`: the sums of a residual connection.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

class ConversionError(TypeError):
    """The network cannot be converted to HAT; the message names the layer and the way out."""


def nothing_to_mask(model: nn.Module) -> ConversionError:
    """The error for a network with no layer to mask besides its head."""
    return ConversionError(f"{type(model).__name__} has no layer HAT can mask besides its head (masked layers: "
                           "nn.Linear, nn.Conv1d, nn.Conv2d); use a network with hidden layers or one of the "
                           "package's: HATMLP, HATAlexNet, HATResNet18")


#: layers that get a HAT gate per output unit (neuron or channel)
MASKABLE_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)

#: layers replaced by one copy per task (HAT keeps each task's statistics apart)
PER_TASK_LAYERS: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d)

#: layer type → why HAT cannot mask it (the error names the layer and says this)
REFUSED_LAYERS: dict[type[nn.Module], str] = {
    nn.RNNBase: "recurrent layers reuse their weights at every time step; HAT's per-unit gates "
                "are defined for feed-forward layers",
    nn.MultiheadAttention: "attention's projections are functional calls on packed weights; "
                           "convert the model without it or mask its nn.Linear projections yourself",
    nn.Embedding: "an embedding table has no output units to gate (its rows are looked up)",
    nn.EmbeddingBag: "an embedding table has no output units to gate (its rows are looked up)",
    nn.Transformer: "attention's projections are functional calls on packed weights",
    nn.TransformerEncoderLayer: "attention's projections are functional calls on packed weights",
    nn.TransformerDecoderLayer: "attention's projections are functional calls on packed weights",
    nn.LayerNorm: "a LayerNorm mixes all units of a sample, so a unit gated off still changes the "
                  "others; use BatchNorm (made per task) or no normalisation",
    nn.GroupNorm: "a GroupNorm mixes the units of a group, so a unit gated off still changes the others",
    nn.ConvTranspose2d: "transposed convolutions are not supported (their weight is (in, out, ...))",
}

#: modules that keep the units (number and order) of their input
TRANSPARENT_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Softplus,
    nn.Hardtanh, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Hardswish,
)

#: functions that keep the units of their first argument
TRANSPARENT_FUNCTIONS: set = {
    torch.relu, F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, torch.sigmoid, torch.tanh,
    F.softplus, F.dropout, F.dropout2d, F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
    torch.flatten, torch.reshape,
}

#: tensor methods that keep the units of the tensor they are called on
TRANSPARENT_METHODS: set[str] = {
    "relu", "relu_", "sigmoid", "tanh", "view", "reshape", "flatten", "contiguous", "clone",
    "squeeze", "float", "to",
}

#: element-wise operations with a constant that keep a unit's 0 at 0 (``2 * h``, ``h / 2``, ``-h``,
#: ``abs(h)``): passed through like the transparent operations
SCALAR_FUNCTIONS: set = {operator.mul, operator.truediv, operator.neg, torch.mul, torch.div, torch.neg, torch.abs,
                         operator.abs}
SCALAR_METHODS: set[str] = {"mul", "div", "neg", "abs"}

#: transparent operations that turn a unit switched off (0) into a non-zero value (``σ(0) = 0.5``,
#: ``softplus(0) = log 2``); a HAT gate must come after them, or the next layer's weights on an
#: off unit would be unprotected and still read by the old tasks. BatchNorm after the gate, and a
#: constant added (``h + 1``), do the same.
ZERO_BREAKING_MODULES: tuple[type[nn.Module], ...] = (nn.Sigmoid, nn.Softplus, nn.AlphaDropout)
ZERO_BREAKING_FUNCTIONS: set = {torch.sigmoid, F.softplus, F.alpha_dropout}
ZERO_BREAKING_METHODS: set[str] = {"sigmoid"}

#: the sums of a residual connection (``a + b``, ``a += b``, ``torch.add``, ``a.add(b)``)
ADDITIONS: set = {operator.add, operator.iadd, torch.add}
ADDITION_METHODS: set[str] = {"add", "add_"}


def refused_reason(module: nn.Module) -> str | None:
    """Why ``module`` cannot be converted, or ``None``."""
    for kind, reason in REFUSED_LAYERS.items():
        if isinstance(module, kind):
            return reason
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups != 1:
        return (f"a grouped convolution (groups={module.groups}) connects each output channel to a "
                "subset of the input channels; HAT's neuron→parameter broadcast assumes all")
    return None

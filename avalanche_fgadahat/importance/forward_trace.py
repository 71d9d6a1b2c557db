"""Tracing one forward pass: which relus, leaf modules and functional ops it calls.

Captum's DeepLIFT and LRP walk ``nn.Module`` trees, but the HAT backbones call functional
``torch.relu`` and AlexNet reuses one max-pool module three times.
:class:`~avalanche_fgadahat.importance.forward_wrapper.TaskForward` therefore runs the forward
once through :func:`trace_forward` and builds its module tree from the result
(:class:`ForwardStructure`):

* the **relu call sites** outside leaf modules (``torch.relu``, ``F.relu``, ``Tensor.relu``),
  in call order — each gets its own ``nn.ReLU``; an in-place relu is flagged;
* the **leaf-module calls**, in order, with repeats (a parameter-free module called ``k``
  times gets ``k`` copies);
* the **functional nonlinearities** outside leaf modules (sigmoid, softmax, max-pool, ...)
  that DeepLIFT/LRP would silently treat as linear;
* the **additions of two activations** (``a + b`` of two batch-shaped tensors, i.e. residual
  connections), which Captum's LayerLRP propagates as gradients instead of relevance.

Torch function calls are intercepted with a :class:`torch.overrides.TorchFunctionMode`
(:class:`FunctionRouter`); leaf modules are followed with forward pre/post hooks, so calls
made inside a leaf module's own forward are not counted as call sites.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

#: The out-of-place relu functions routed through modules.
RELU_FUNCTIONS = {torch.relu, F.relu, torch.Tensor.relu}
#: In-place relus, which the routing refuses.
INPLACE_RELU_FUNCTIONS = {torch.relu_, F.relu_, torch.Tensor.relu_}
#: Additions, counted when both operands are activations (residual connections).
ADD_FUNCTIONS = {
    torch.add,
    torch.Tensor.add,
    torch.Tensor.add_,
    torch.Tensor.__add__,
    torch.Tensor.__radd__,
    torch.Tensor.__iadd__,
}
#: Functional nonlinearities that DeepLIFT / LRP would silently treat as linear.
FUNCTIONAL_NONLINEAR_NAMES = {
    "sigmoid", "tanh", "gelu", "silu", "elu", "selu", "celu", "leaky_relu", "softplus",
    "softmax", "log_softmax", "hardtanh", "relu6", "hardswish", "hardsigmoid", "mish",
    "logsigmoid", "softsign", "threshold", "glu", "prelu", "max_pool1d", "max_pool2d",
    "max_pool3d", "_max_pool1d", "_max_pool2d", "_max_pool3d", "max_pool1d_with_indices",
    "max_pool2d_with_indices", "max_pool3d_with_indices", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d",
}


@dataclass
class ForwardStructure:
    """What one forward pass of a
    :class:`~avalanche_fgadahat.importance.forward_wrapper.TaskForward` calls (found by
    :func:`trace_forward`)."""

    relu_sites: int = 0
    leaf_calls: list[nn.Module] = field(default_factory=list)
    functional_nonlinearities: list[str] = field(default_factory=list)
    activation_additions: int = 0
    inplace_relu: bool = False

    def call_counts(self) -> Counter:
        """How many times the forward calls each leaf module (by ``id``)."""
        return Counter(id(module) for module in self.leaf_calls)

    def distinct_leaves(self) -> list[nn.Module]:
        """The leaf modules the forward calls, each once, in first-call order."""
        seen: dict[int, nn.Module] = {}
        for module in self.leaf_calls:
            seen.setdefault(id(module), module)
        return list(seen.values())


class FunctionRouter(TorchFunctionMode):
    """Hands every torch function call of the forward to ``handler`` (mode off inside it)."""

    def __init__(self, handler: Callable) -> None:
        super().__init__()
        self.handler = handler

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return self.handler(func, args, kwargs or {})


def is_leaf_module(module: nn.Module) -> bool:
    """Whether ``module`` has no children."""
    return next(iter(module.children()), None) is None


@torch.no_grad()
def trace_forward(forward: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, x: torch.Tensor) -> ForwardStructure:
    """Run ``forward(x)`` once and record its relu call sites, leaf-module calls, functional
    nonlinearities outside leaf modules and additions of two activations (residuals)."""
    structure = ForwardStructure()
    depth = [0]
    rows = x.shape[0]

    def pre_hook(module, args):
        structure.leaf_calls.append(module)
        depth[0] += 1

    def post_hook(module, args, output):
        depth[0] -= 1

    def handler(func, args, kwargs):
        if func in RELU_FUNCTIONS and depth[0] == 0:
            if kwargs.get("inplace", False):
                structure.inplace_relu = True
            structure.relu_sites += 1
        elif func in INPLACE_RELU_FUNCTIONS and depth[0] == 0:
            structure.inplace_relu = True
        elif func in ADD_FUNCTIONS and depth[0] == 0:
            tensors = [a for a in args[:2] if isinstance(a, torch.Tensor)]
            if len(tensors) == 2 and all(t.dim() >= 2 and t.shape[0] == rows for t in tensors):
                structure.activation_additions += 1
        elif depth[0] == 0 and getattr(func, "__name__", "") in FUNCTIONAL_NONLINEAR_NAMES:
            structure.functional_nonlinearities.append(func.__name__)
        return func(*args, **kwargs)

    handles = []
    for module in model.modules():
        if is_leaf_module(module):
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(post_hook))
    try:
        with FunctionRouter(handler):
            forward(x)
    finally:
        for handle in handles:
            handle.remove()
    return structure


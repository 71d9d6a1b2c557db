"""The training step's forward for one task, as a plain ``x → logits`` module.

FG-AdaHAT's attribution importances (the ``attribution`` package) differentiate or ablate the
forward pass of the step that just ran. :class:`TaskForward` rebuilds it for the
post-step weights:

``TaskForward(x) = head_t(model.forward_features(x, masks=m, task=t))``

with ``m`` the step's (detached) soft training masks ``σ(s·e)``, ``t`` the task being
trained and ``head_t`` its Avalanche head (``model.classifier(h, task_labels=t)``, or
``model.classifier(h)`` for a shared head). Everything is bound by keyword inside the
module, so Captum never passes positional extra arguments (CLArena's bug: its Captum calls
passed ``("train", batch_idx, num_batches, task_id)`` positionally to a forward whose
signature had changed, see ``docs/deviations.md``).

Captum's DeepLIFT and LRP walk ``nn.Module`` trees: every nonlinearity must be its own
module used once, and (LRP) every leaf must have a propagation rule. The HAT backbones use
functional ``torch.relu`` and AlexNet reuses one max-pool module three times. The
``nonlinearity`` argument decides how the wrapper presents them, from one traced forward
(:func:`~.forward_trace.trace_forward`):

* ``"plain"``: the forward as written (gradient methods and ablation need nothing more);
* ``"modules"``: every ``relu`` call site is routed through its own ``nn.ReLU`` child
  and every parameter-free leaf module that the forward calls more than once through a
  per-call copy; the leaf modules the forward calls are registered as children. This is
  the module tree Captum's ``LayerDeepLift`` / ``LayerDeepLiftShap`` / ``LayerLRP`` need;
* ``"rescale"``: the same elementwise call sites compute DeepLIFT's Rescale rule directly
  in their backward (:func:`~.deeplift_rescale.rescale_elementwise`, the formula of Captum's
  DeepLIFT hook), for the batched DeepLIFT of ``attribution/deeplift.py``; max-pools keep their gradient (DeepLIFT's
  default for max-pooling, and what Captum 0.9 computes for a max-pool that follows a
  nonlinearity module — its own max-pool rule is then overwritten by the hook chain). The
  input must be ``cat([inputs, references])``.

The model itself is held as a plain attribute, not a child, so ``wrapper.modules()``
lists only the modules that take part in the forward. :func:`attribution_mode` runs the
model in eval mode for the attribution passes and restores every module's own mode
afterwards (CLArena's ``lrp_abs`` left the whole model in eval mode).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import nn

from .._validation import check_choice
from ..models.base import HATBackbone
from .deeplift_rescale import ELEMENTWISE_NONLINEAR_MODULES, rescale_elementwise
from .forward_trace import RELU_FUNCTIONS, ForwardStructure, FunctionRouter, is_leaf_module, trace_forward

NONLINEARITY_MODES = ("plain", "modules", "rescale")

#: Leaf modules that are the identity in eval mode; they are left out of the module tree.
PASS_THROUGH_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


# ---------------------------------------------------------------------------- eval mode
@contextlib.contextmanager
def attribution_mode(model: HATBackbone) -> Iterator[None]:
    """Run ``model`` in eval mode; restore every module's ``training`` flag afterwards.

    Eval mode makes the attribution passes deterministic (no dropout), keeps per-task
    BatchNorm statistics untouched by interpolated or ablated inputs, and leaves the open
    :class:`~avalanche_fgadahat.models.training_step.TrainingStep` as the training forward
    wrote it (an eval-mode forward records no mask and no activation). Every module's own
    ``training`` flag is saved and restored, not just the root's.
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


# ---------------------------------------------------------------------------- layers
def attribution_layers(model: HATBackbone) -> dict[str, nn.Module]:
    """The module whose output each unit group's attributions are taken at.

    CLArena attributes to the output of the weighted layer of the unit group (the
    ``nn.Linear`` / ``nn.Conv2d`` output, before the mask and the activation). Here that is
    the first :class:`ParamLayout` with that ``out_key``; in ResNet-18 the block's
    ``conv2`` is listed before its 1×1 shortcut, so the shortcut is never chosen.
    """
    layers: dict[str, nn.Module] = {}
    for layout in model.param_layouts:
        layers.setdefault(layout.out_key, layout.module)
    missing = [key for key in model.unit_sizes if key not in layers]
    if missing:
        raise ValueError(f"unit groups {missing} have no weighted layer in param_layouts")
    return {key: layers[key] for key in model.unit_sizes}


# ---------------------------------------------------------------------------- the wrapper
class TaskForward(nn.Module):
    """``x → logits`` of ``model`` for ``task`` under fixed ``masks`` (see module doc).

    :param model: the HAT backbone (post-step weights).
    :param task: the task label whose head is used.
    :param masks: per unit group, the masks of the step (detached here).
    :param nonlinearity: ``"plain"``, ``"modules"`` or ``"rescale"`` (module doc).
    :param example: one input batch (a single row is enough) used to trace the forward;
        required unless ``nonlinearity="plain"``.
    """

    def __init__(
        self,
        model: HATBackbone,
        task: int,
        masks: Mapping[str, torch.Tensor],
        *,
        nonlinearity: str = "plain",
        example: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        check_choice("nonlinearity", nonlinearity, NONLINEARITY_MODES)
        missing = [key for key in model.unit_sizes if key not in masks]
        if missing:
            raise ValueError(f"masks must hold every unit group of the model; missing {missing}")
        object.__setattr__(self, "backbone", model)
        self.task = int(task)
        self.masks = {key: mask.detach() for key, mask in masks.items()}
        self.nonlinearity = nonlinearity
        self.structure: ForwardStructure | None = None
        # children are registered flat (relu_i, leaf_i, copy_i): Captum's LRP treats any
        # childless child, an empty container included, as a layer that needs a rule
        self.relus: list[nn.Module] = []
        self.leaves: list[nn.Module] = []
        self._copies: dict[int, list[nn.Module]] = {}
        self._relu_counter = 0
        self._depth = 0
        if nonlinearity != "plain":
            if example is None:
                raise ValueError(f"nonlinearity={nonlinearity!r} needs an example input to trace the forward")
            self._build(example[:1])

    # -------------------------------------------------------------- structure
    def _build(self, example: torch.Tensor) -> None:
        structure = trace_forward(self._forward, self.backbone, example)
        if structure.inplace_relu:
            raise NotImplementedError(
                "the model applies an in-place relu outside a module; DeepLIFT/LRP routing "
                "supports only out-of-place torch.relu / F.relu / Tensor.relu"
            )
        self.structure = structure
        self.relus = [nn.ReLU() for _ in range(structure.relu_sites)]
        counts = structure.call_counts()
        leaves, copies = [], []
        for module in structure.distinct_leaves():
            if isinstance(module, PASS_THROUGH_MODULES):
                continue
            calls = counts[id(module)]
            if calls > 1 and next(module.parameters(), None) is None:
                clones = [copy.deepcopy(module) for _ in range(calls)]
                self._copies[id(module)] = clones
                copies.extend(clones)
            else:
                leaves.append(module)
        self.leaves = leaves
        for prefix, modules in (("relu", self.relus), ("leaf", leaves), ("copy", copies)):
            for index, module in enumerate(modules):
                self.add_module(f"{prefix}_{index}", module)

    def _overrides(self) -> dict[nn.Module, Callable]:
        """Per-call replacements of leaf ``forward`` methods for the current mode."""
        overrides: dict[nn.Module, Callable] = {}
        assert self.structure is not None
        for module in self.structure.distinct_leaves():
            clones = self._copies.get(id(module))
            if self.nonlinearity == "modules":
                if clones is not None:
                    counter = iter(clones)
                    overrides[module] = lambda *args, _it=counter, **kw: next(_it)(*args, **kw)
            elif isinstance(module, ELEMENTWISE_NONLINEAR_MODULES):
                forward = type(module).forward
                overrides[module] = lambda x, _m=module, _f=forward: rescale_elementwise(lambda t: _f(_m, t), x)
        return overrides

    def check_deeplift_supported(self) -> None:
        """Raise if this forward has nonlinearities that the Rescale rule here cannot handle."""
        assert self.structure is not None
        problems = [name for name in dict.fromkeys(self.structure.functional_nonlinearities) if "max_pool" not in name]
        for module in self.structure.distinct_leaves():
            if isinstance(module, (nn.Softmax, nn.LogSoftmax, nn.GELU, nn.SiLU, nn.Hardtanh, nn.ReLU6)):
                problems.append(type(module).__name__)
        if problems:
            raise NotImplementedError(
                f"DeepLIFT here supports relu (functional or nn.ReLU), {', '.join(m.__name__ for m in ELEMENTWISE_NONLINEAR_MODULES)} "
                f"modules and max-pool modules (by their gradient); the forward of {type(self.backbone).__name__} also uses {problems}"
            )

    def check_lrp_supported(self) -> None:
        """Raise a clear error where Captum's LayerLRP would fail or silently be wrong."""
        from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES, SUPPORTED_NON_LINEAR_LAYERS

        assert self.structure is not None
        name = type(self.backbone).__name__
        if self.structure.activation_additions:
            raise NotImplementedError(
                f"lrp_abs: {name} adds activations functionally ({self.structure.activation_additions} "
                "residual additions), which Captum's LayerLRP propagates as gradients instead of "
                "relevance (it needs captum's Addition_Module); LRP supports backbones without "
                "residual connections such as HATMLP and HATAlexNet"
            )
        if self.structure.functional_nonlinearities:
            raise NotImplementedError(
                f"lrp_abs: {name} uses functional nonlinearities {sorted(set(self.structure.functional_nonlinearities))} "
                "that Captum's LayerLRP cannot give a rule; only relu is routed through modules"
            )
        supported = tuple(SUPPORTED_LAYERS_WITH_RULES) + tuple(SUPPORTED_NON_LINEAR_LAYERS)
        unsupported = sorted({type(m).__name__ for m in self.modules() if m is not self and is_leaf_module(m) and not isinstance(m, supported)})
        if unsupported:
            raise NotImplementedError(
                f"lrp_abs: {name} calls modules {unsupported} that Captum's LayerLRP has no rule for "
                f"(supported: {sorted(t.__name__ for t in supported)})"
            )
        reused = [type(m).__name__ for m in self.leaves if self.structure.call_counts()[id(m)] > 1]
        if reused:
            raise NotImplementedError(f"lrp_abs: {name} calls the parametrised modules {reused} more than once per forward")

    # -------------------------------------------------------------- forward
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        model = self.backbone
        features = model.forward_features(x, masks=self.masks, task=self.task)
        if model.multihead:
            return model.classifier(features, task_labels=self.task)
        return model.classifier(features)

    def _route(self, func, args, kwargs):
        if func in RELU_FUNCTIONS and self._depth == 0:
            site = self._relu_counter
            self._relu_counter += 1
            if self.nonlinearity == "modules":
                return self.relus[site](args[0])
            return rescale_elementwise(torch.relu, args[0])
        return func(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, classes)`` of the bound task for inputs ``x`` (see the class doc)."""
        if self.nonlinearity == "plain":
            return self._forward(x)
        overrides = self._overrides()
        self._relu_counter, self._depth = 0, 0

        def enter(module, args):
            self._depth += 1

        def leave(module, args, output):
            self._depth -= 1

        handles = []
        for module in self.structure.distinct_leaves():
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(leave))
        for module, replacement in overrides.items():
            module.forward = replacement
        try:
            with FunctionRouter(self._route):
                logits = self._forward(x)
        finally:
            for module in overrides:
                del module.forward
            for handle in handles:
                handle.remove()
        if self._relu_counter != self.structure.relu_sites:
            raise RuntimeError(
                f"the forward called relu {self._relu_counter} times, the trace {self.structure.relu_sites}; "
                "the model's forward must not branch on the input for DeepLIFT/LRP routing"
            )
        return logits

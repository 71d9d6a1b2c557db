"""Subnormal floats: the HAT family's flush helpers, and a counter of subnormals per operation.

A float32 value is *subnormal* when it is not zero and ``|x| < 1.18e-38``
(``torch.finfo(torch.float32).tiny``). Many CPUs (Intel in particular) compute on subnormals
through a slow microcode path, so a training step that produces them can run several times
slower than the same step without them. HAT's saturated soft mask ``σ(s·e)`` at gate scales
up to ``s_max`` is such a source; the HAT family flushes its own tiny values to 0
(``docs/deviations.md`` H16): the gate (:mod:`~avalanche_fgadahat.masking.gate`) sets masks
below ``1e-30`` to exactly 0 and raises kept masks below ``1e-15`` to ``1e-15`` (so their
products with activations and gradients stay normal); every gradient of the model but the
task embeddings' is flushed below :data:`GRADIENT_FLOOR` before the rates and, for rates
other than 0 and 1, after them (:func:`flush_gradients_`); the compensated embedding
gradients likewise; FG-AdaHAT's step importances below ``1e-20`` (``importance/normalize.py``,
``importance/accumulator.py``); the attribution passes use the masks with values ``≤ 1e-15`` at 0.
The helpers here decide which elements to zero *before* a product is formed
(:func:`zero_where_product_below`), so no subnormal intermediate is ever computed, and
leave every other element bit for bit as it was.

:class:`SubnormalCounter` is a ``TorchDispatchMode``: while it is active it inspects the
output of every ATen operation dispatched from the calling thread — forward, autograd backward
(the mode reaches the autograd engine), optimizer updates, in-place updates, whatever the
number of intra-op threads — and counts the subnormal elements per operation, and per
``(autograd node, op)`` site. It changes no value and no floating-point mode. Use it around one
training iteration::

    with SubnormalCounter() as counter:
        ...one training iteration...
    counter.total, counter.by_op   # elements, and elements per ATen op name

It costs one comparison pass over every op output, so time nothing while it is active.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .._validation import check_choice

__all__ = ["GRADIENT_FLOOR", "SUBNORMAL_GUARD_MODES", "SubnormalCounter", "count_subnormal", "flush_gradients_",
           "guards_apply", "product_below", "product_threshold", "zero_where_product_below"]

#: Gradients handed to the optimizer are 0 or above this magnitude. 1e-16: an optimizer's
#: state then holds no subnormal either — Adam's ``(1 − β₂)·g²`` is at least ``1e-37`` for any
#: ``β₂ ≤ 0.99999`` — and the update a flushed gradient would have made is at most
#: ``lr · 1e-16`` (SGD) or ``lr · 1e-16 / ε`` (Adam-type: ``1e-8 · lr`` at the default ε = 1e-8,
#: a hundred-millionth of a full Adam step).
GRADIENT_FLOOR = 1e-16

#: the accepted values of the ``subnormal_guards`` setting (``config.HATConfig``): where the flushes
#: of H16 run. ``"cpu"`` (default): on CPU tensors only — CPUs are where subnormal arithmetic is
#: slow; NVIDIA GPUs compute on subnormal float32 at full speed, and there every guard would be
#: a kernel launch that buys nothing (``docs/deviations.md`` H16a). ``"always"``: on every device
#: (a GPU run then computes what a CPU run computes, up to the devices' own rounding).
#: ``"never"``: nowhere (the reference's arithmetic, subnormals included, also on a CPU).
SUBNORMAL_GUARD_MODES = ("cpu", "always", "never")


def guards_apply(mode: str, device: torch.device) -> bool:
    """Whether the H16 flushes run for tensors on ``device`` under the ``subnormal_guards``
    setting ``mode`` (one of :data:`SUBNORMAL_GUARD_MODES`).

    :raises ValueError: for another ``mode``.
    """
    if mode == "cpu":
        return device.type == "cpu"
    return check_choice("subnormal_guards", mode, SUBNORMAL_GUARD_MODES) == "always"


#: ops whose output is uninitialised memory (whatever bits it held are not a computed value)
UNINITIALISED = frozenset({"aten::empty", "aten::empty_like", "aten::empty_strided", "aten::new_empty",
                           "aten::new_empty_strided", "aten::resize_", "aten::empty_permuted"})


def count_subnormal(tensor: torch.Tensor) -> int:
    """Number of subnormal elements of a floating-point ``tensor`` (0 for other dtypes)."""
    if not tensor.is_floating_point() or tensor.numel() == 0 or tensor.is_meta:
        return 0
    tiny = torch.finfo(tensor.dtype).tiny
    return int(((tensor != 0) & (tensor.abs() < tiny)).sum())


def product_threshold(b: torch.Tensor, floor: float) -> torch.Tensor:
    """``floor / b`` computed as ``floor / min(b, floor / tiny)`` (``b ≥ 0``): never subnormal
    (``inf`` where ``b = 0``; ``tiny`` where ``b`` exceeds ``floor / tiny``). ``|a| <`` it is where
    ``|a · b| < floor`` (:func:`product_below`)."""
    return torch.div(floor, b.clamp_max(floor / torch.finfo(b.dtype).tiny))


def product_below(a: torch.Tensor, b: torch.Tensor, floor: float) -> torch.Tensor:
    """Where ``|a · b| < floor`` (``b ≥ 0``, broadcastable to ``a``; ``a`` holds no subnormal),
    decided without forming ``a · b``: ``|a| < floor / b``. The threshold is
    :func:`product_threshold`, so it is never subnormal (``inf`` where ``b = 0``); where
    ``b`` exceeds ``floor / tiny`` it is ``tiny`` and every nonzero ``a`` is kept, rightly, since
    then ``|a · b| > floor``. Give ``floor`` a margin (twice the bound wanted): the division rounds."""
    return a.abs() < product_threshold(b, floor)


def zero_where_product_below(a: torch.Tensor, b: torch.Tensor, floor: float) -> torch.Tensor:
    """``a`` with 0 wherever :func:`product_below`; other elements keep their bits. Out of place."""
    return a.masked_fill(product_below(a, b, floor), 0.0)


@torch.no_grad()
def flush_gradients_(parameters, floor: float | None = None) -> None:
    """Set every element of each parameter's ``.grad`` with ``|g| ≤ floor`` (default
    :data:`GRADIENT_FLOOR`) to 0, in place (one ``hardshrink`` pass written into the gradient: no
    new tensor, the other elements keep their bits). ``parameters``: an iterable of parameters;
    those without a floating-point dense gradient are skipped. A gradient that cannot be written in
    place (one a user set to an expanded tensor, whose elements share memory) is replaced by its
    flushed copy instead."""
    floor = GRADIENT_FLOOR if floor is None else floor
    for param in parameters:
        grad = param.grad
        if grad is not None and grad.is_floating_point() and grad.layout is torch.strided:
            try:
                torch.hardshrink(grad, floor, out=grad)
            except RuntimeError:  # e.g. internal overlap; any other error is raised again below
                param.grad = torch.nn.functional.hardshrink(grad, floor)


class SubnormalCounter(TorchDispatchMode):
    """Counts subnormal elements in the outputs of every ATen op run while active (see module doc).

    :ivar by_op: ``Counter`` of subnormal elements per ATen op name (e.g. ``aten.sigmoid.default``).
    :ivar by_site: ``Counter`` per ``(autograd node, ATen op)``: the backward node the op ran
        in (e.g. ``AddmmBackward0``: a linear layer's weight gradient), ``None`` outside the
        backward pass.
    :ivar ops: number of ops inspected.
    """

    def __init__(self) -> None:
        super().__init__()
        self.by_op: Counter[str] = Counter()
        self.by_site: Counter[tuple[str | None, str]] = Counter()
        self.ops = 0

    @property
    def total(self) -> int:
        """Subnormal elements over every inspected op output."""
        return sum(self.by_op.values())

    def count_at(self, sites) -> int:
        """Subnormal elements at the ``(autograd node, op)`` ``sites`` (keys of :attr:`by_site`)."""
        return sum(n for site, n in self.by_site.items() if site in sites)

    def reset(self) -> None:
        """Forget the counts so far."""
        self.by_op.clear()
        self.by_site.clear()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        """Run ``func`` unchanged, then count the subnormal elements it wrote: the outputs of
        an out-of-place op, the written arguments of an in-place op (``mul_``,
        ``_foreach_add_``); views (``t``, ``detach``, ``split``) write nothing and are skipped."""
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops += 1
        if func.is_view or func._schema.name in UNINITIALISED:
            return out
        if func._schema.is_mutable:
            written = [kwargs.get(a.name, args[i] if i < len(args) else None)
                       for i, a in enumerate(func._schema.arguments) if a.alias_info is not None and a.alias_info.is_write]
        else:
            written = [out]
        leaves, _ = tree_flatten(written)
        found = sum(count_subnormal(leaf) for leaf in leaves if isinstance(leaf, torch.Tensor))
        if found:
            node = torch._C._current_autograd_node()  # the backward node being run, or None
            self.by_op[str(func)] += found
            self.by_site[(None if node is None else node.name(), str(func))] += found
        return out

"""Lazy ``torch.compile`` of the fused training-step kernels, with a loud eager fallback.

With ``fused_step=True`` (:class:`~avalanche_fgadahat.config.HATConfig`) the HAT family runs the
element-wise work of a training step as a few tensor functions compiled by
``torch.compile(function, dynamic=False, fullgraph=True)``: after the backward pass the gradient
flush, the rates and the embedding-gradient compensation
(:mod:`~avalanche_fgadahat.adjustment.gradient_step`), after the update FG-AdaHAT's importance
normalisation and accumulation (:mod:`~avalanche_fgadahat.importance.accumulator`). Each such
function is a :class:`FusedKernel`.

**When compile time is paid.** Importing this module compiles nothing and imports nothing of
``torch._dynamo`` or ``torch._inductor`` itself: ``torch.compile`` is called on a kernel's first
call. The compiler then runs once per process for each set of input shapes, dtypes and devices
the kernel meets (one per network: every step of every experience of a model reuses it; a few
seconds on a CPU), and ``torch.compile`` caches the result; inductor's on-disk cache shortens
the next process's compilation. Short runs may lose more to compiling than they gain, which is
why the fused step is opt-in.

**Loud fallback.** If compiling or running the compiled function raises (no C++ compiler or
Triton, an unsupported platform, ``torch._dynamo.config.recompile_limit`` — 8 by default —
distinct input shapes in one process), the kernel warns once (:class:`FusedStepWarning`, naming
the error) and from then on, in this process, runs the same Python function eagerly: the same
numbers at eager speed. A compiled call raises before it writes anything when compilation fails.
While a ``TorchDispatchMode`` is active (``torch.compile`` does not run under one) the kernel
runs eagerly for that call, without a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

__all__ = ["EAGER_NUMERICS", "FusedKernel", "FusedStepWarning", "eager_numerics_options"]

#: inductor options that make compiled element-wise code round as eager does, used where this
#: torch has them: on a GPU Triton divides approximately (``div.full``) and contracts ``a·b + c``
#: into fused multiply-adds unless told otherwise, and flushes subnormals; on the CPU they change
#: nothing (float32 kernels)
EAGER_NUMERICS = ("eager_numerics.division_rounding", "eager_numerics.disable_ftz", "emulate_precision_casts")


def eager_numerics_options() -> dict[str, bool]:
    """``{option: True}`` for each of :data:`EAGER_NUMERICS` this torch's inductor knows (imports
    ``torch._inductor``: call it when compiling, not at import)."""
    from torch._inductor import list_options

    available = set(list_options())
    return {name: True for name in EAGER_NUMERICS if name in available}


class FusedStepWarning(RuntimeWarning):
    """A fused-step kernel could not be compiled (or its compiled form raised): it runs eagerly,
    with the same numbers, for the rest of the process."""


class FusedKernel:
    """One pure tensor function of the fused step, compiled on its first call (see module doc).

    :param function: the kernel: tensors, lists of tensors and Python constants in; tensors out,
        or in-place updates of its tensor arguments (a compilation that fails raises before the
        compiled code runs, so it has written nothing); written so that ``torch.compile`` traces
        it in one graph (``fullgraph=True``).
    :param name: what the kernel does, for the warning.

    :ivar compiled_calls: calls that ran the compiled function (0 before the first call and after
        a fallback).
    :ivar failure: ``None``, or the error that made the kernel fall back to eager.
    """

    def __init__(self, function: Callable[..., Any], name: str) -> None:
        self.function = function
        self.name = name
        self.compiled_calls = 0
        self.failure: str | None = None
        self._compiled: Callable[..., Any] | None = None

    def __call__(self, *args: Any) -> Any:
        """``function(*args)``: compiled, or eagerly after a fallback (:class:`FusedStepWarning`),
        and eagerly, without a warning, while a ``TorchDispatchMode`` (e.g.
        :class:`~avalanche_fgadahat.masking.subnormals.SubnormalCounter`) is active: ``torch.compile``
        does not run under one, and a mode that inspects the ops should see them."""
        if self.failure is None and not is_in_torch_dispatch_mode(include_infra_modes=False):
            try:
                if self._compiled is None:
                    self._compiled = torch.compile(self.function, dynamic=False, fullgraph=True,
                                                   options=eager_numerics_options())
                result = self._compiled(*args)
            except Exception as error:  # noqa: BLE001 - any compiler failure falls back, loudly
                self._fall_back(error)
            else:
                self.compiled_calls += 1
                return result
        return self.function(*args)

    def _fall_back(self, error: Exception) -> None:
        first_line = (str(error).strip().splitlines() or [""])[0]
        self.failure = f"{type(error).__name__}: {first_line}"
        self._compiled = None
        warnings.warn(
            f"fused_step=True: torch.compile could not compile the {self.name} kernel ({self.failure}); "
            "it runs eagerly for the rest of this process (same numbers, eager speed). Pass "
            "fused_step=False to silence this, or fix the compiler setup (a C++ compiler on a CPU, "
            "Triton on a GPU)",
            FusedStepWarning,
            stacklevel=3,
        )

    def reset(self) -> None:
        """Forget the compiled function and any fallback (the next call compiles again)."""
        self._compiled, self.failure, self.compiled_calls = None, None, 0

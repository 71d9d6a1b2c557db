"""Where each masked parameter sits between the masked unit groups.

A *unit group* is the set of units (neurons of a Linear layer, channels of a Conv2d)
that one HAT task embedding gates. A :class:`ParamLayout` records, for one
weight-bearing module, which unit group its outputs belong to (``out_key``) and which
unit group feeds its inputs (``in_key``; ``None`` for the first layer, whose inputs are
raw features that HAT never masks). ``in_repeat`` is the number of input positions per
input unit: 1 normally, ``H·W`` after a conv→linear flatten (channel-major order).

Residual shortcut projections get ``out_key`` = the unit group of the block output (the
mask is applied after the residual add) and ``in_key`` = the block input's unit group.

A layer fed by a concatenation of unit groups (along the unit dimension) has ``in_segments``:
``((key, repeat), ...)`` in column order, and ``in_key`` ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

SUPPORTED_MASKED_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass(frozen=True, eq=False)
class ParamLayout:
    """Position of one masked weight-bearing module in the unit-group graph."""

    name: str
    module: nn.Module
    out_key: str
    in_key: str | None
    in_repeat: int = 1
    in_segments: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.module, SUPPORTED_MASKED_MODULES):
            raise TypeError(
                f"layer {self.name!r} is a {type(self.module).__name__}; HAT masking supports "
                "only nn.Linear and nn.Conv2d (build the model from HATMLP, HATAlexNet or "
                "HATResNet18, or extend HATBackbone)"
            )
        if self.in_repeat < 1:
            raise ValueError(f"in_repeat must be >= 1, got {self.in_repeat}")
        if self.in_segments and self.in_key is not None:
            raise ValueError(f"layer {self.name!r}: give in_key or in_segments, not both")

    @property
    def input_groups(self) -> tuple[tuple[str, int], ...]:
        """``((unit group, repeat), ...)`` of the input columns, in order; ``()`` for raw inputs."""
        if self.in_segments:
            return self.in_segments
        return () if self.in_key is None else ((self.in_key, self.in_repeat),)

    def input_columns(self, key: str, units: dict[str, int]) -> list[slice]:
        """The column ranges of the weight that read unit group ``key`` (``units``: group sizes)."""
        ranges, start = [], 0
        for group, repeat in self.input_groups:
            stop = start + units[group] * repeat
            if group == key:
                ranges.append(slice(start, stop))
            start = stop
        return ranges

    @property
    def weight(self) -> nn.Parameter:
        """The layer's weight ``(out, in, *kernel)``."""
        return self.module.weight

    @property
    def bias(self) -> nn.Parameter | None:
        """The layer's bias ``(out,)``, or ``None``."""
        return self.module.bias

    @property
    def num_outputs(self) -> int:
        """Output units (channels): the rows of the weight, one mask entry each."""
        return self.module.weight.shape[0]

    @property
    def num_input_positions(self) -> int:
        """Columns of the weight: input units times ``in_repeat`` after a flatten."""
        return self.module.weight.shape[1]

    def weight_by_input_unit(self, tensor):
        """View a weight-shaped tensor as ``(out, n_in_units, rest)``.

        Reductions "per input unit" (for example the output-weight importances of
        FG-AdaHAT) become reductions over dims 0 and 2 of this view, for linear, conv
        and flattened-conv inputs alike.
        """
        out = tensor.shape[0]
        return tensor.reshape(out, self.num_input_positions // self.in_repeat, -1)

"""A CSV logger that keeps every scalar metric, custom ones included.

Avalanche's ``CSVLogger`` writes a fixed set of columns (accuracy, loss, forgetting) and
drops every other metric, e.g. the network capacity and mask usage of this package.
:class:`MetricsCSVLogger` writes one row per scalar value it receives::

    name,x,value,phase
    NetworkCapacity_MB/train_phase/train_stream/Task000,0,1.0,train

``x`` is the value's ``x_plot`` (Avalanche uses ``clock.train_iterations``); ``phase``
is ``train`` or ``eval``, the strategy's phase when the value was emitted. Dict values
become one row per key (``name/key``), as in Avalanche's ``BaseLogger``; 0-d tensors are
written as numbers. Non-scalar values (tensors with more than one element, images,
figures, strings) have no place in a numeric column and are not written: log them with
``TensorboardLogger``. Rows are flushed at the end of each callback that produced some.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from avalanche.logging import BaseLogger

COLUMNS = ("name", "x", "value", "phase")
_CALLBACK_PREFIXES = ("before_", "after_")


def _scalar(value: Any) -> float | int | None:
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return None


def _flatten(name: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield f"{name}/{key}", inner
    else:
        yield name, value


class MetricsCSVLogger(BaseLogger):
    """Write every scalar metric value to one CSV file (columns ``name,x,value,phase``).

    :param path: the CSV file; missing parent folders are created.
    :param append: keep the rows of an existing file and add to them (the header is
        written only to an empty file); the default starts a new file.
    """

    def __init__(self, path: str | PathLike[str] = "metrics.csv", *, append: bool = False) -> None:
        super().__init__()
        if not isinstance(append, bool):
            raise ValueError(f"append must be True or False, got {append!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open("a" if append else "w")

    def _open(self, mode: str) -> None:
        self._file = open(self.path, mode, newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        if self._file.tell() == 0:
            self._writer.writerow(COLUMNS)
            self._file.flush()

    def __getattr__(self, name: str):
        # The EvaluationPlugin calls ``logger.<callback>(strategy, metric_values)`` for
        # every callback the logger has, right after ``log_metrics``; the strategy tells
        # the phase, which ``log_metrics`` does not receive.
        if name.startswith(_CALLBACK_PREFIXES):
            return self._write
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _write(self, strategy, metric_values, **kwargs) -> None:
        phase = "eval" if strategy.is_eval else "train"
        rows = []
        for mval in metric_values:
            for name, value in _flatten(mval.name, mval.value):
                number = _scalar(value)
                if number is not None:
                    rows.append((name, mval.x_plot, number, phase))
        if rows:
            self._writer.writerows(rows)
            self._file.flush()

    def close(self) -> None:
        """Close the CSV file (Avalanche calls it at the end; reopened for appending on load)."""
        self._file.close()

    # Avalanche checkpoints pickle the loggers: keep the path, reopen for appending.
    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._open("a")

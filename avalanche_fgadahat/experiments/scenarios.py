"""Streams without task labels in the harness: the HAT family's task inference and the replay baselines.

On a preset without task labels (``digits_ci``, ``smnist_ci``: class-incremental; ``pdigits_di``,
``pmnist_di``: domain-incremental) the HAT family infers the task at test time
(``docs/class_incremental.md``). A HAT-family strategy names its score after ``@``
(``hat@entropy``, ``fgadahat:icu@energy``); without one it gets
:data:`~avalanche_fgadahat.task_inference.DEFAULT_TASK_SCORE`. On a preset with task labels a
score is refused (the task is given). PackNet needs task labels and is refused without them.

The replay baselines (``replay``, ``gdumb``, ``der``) keep ``mem_size`` samples (default 200);
``replay:500`` names another memory.
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Any

from .strategy_registry import ResolvedStrategy

#: the strategies with a sample memory, and the setting that sizes it
MEMORY_STRATEGIES = ("replay", "gdumb", "der")
MEMORY_SETTING = "mem_size"


def split_score(name: str) -> tuple[str, str | None]:
    """``"hat@entropy"`` → ``("hat", "entropy")``; ``("hat", None)`` without a score."""
    base, at, score = name.partition("@")
    return base, (score if at else None)


def split_memory(name: str) -> tuple[str, int | None]:
    """``"replay:500"`` → ``("replay", 500)``; other names unchanged, ``None``."""
    base, colon, size = name.partition(":")
    if base not in MEMORY_STRATEGIES or not colon:
        return name, None
    try:
        value = int(size)
    except ValueError:
        raise ValueError(f"strategy {name!r}: the memory after ':' must be a whole number of samples, "
                         f"e.g. {base}:500") from None
    if value < 1:
        raise ValueError(f"strategy {name!r}: the memory must hold at least 1 sample")
    return base, value


def with_memory(resolved: ResolvedStrategy, size: int | None) -> ResolvedStrategy:
    """``resolved`` with ``mem_size`` = ``size`` and the label ``<base>:<size>`` (unchanged for ``None``)."""
    if size is None:
        return resolved
    settings = {**resolved.settings, MEMORY_SETTING: size}
    return replace(resolved, label=f"{resolved.base}:{size}", settings=MappingProxyType(settings))


def with_task_inference(resolved: ResolvedStrategy, score: str | None, task_labels: bool | None) -> ResolvedStrategy:
    """``resolved`` for a preset with or without task labels (see module doc); ``task_labels=None``:
    a run's label resolved again (on a Ray worker, for tuning): its score, if any, is applied as is.

    :raises ValueError: a score on a preset with task labels, a score on a baseline, an unknown
        score, or PackNet without task labels.
    """
    from .._validation import check_choice
    from ..task_inference import DEFAULT_TASK_SCORE, TASK_SCORES

    hat_family = resolved.spec.family == "hat"
    if task_labels is None and score is None:
        return resolved
    if score is not None and not hat_family:
        raise ValueError(f"strategy {resolved.label}@{score}: only the HAT family infers tasks; name the "
                         f"baseline without '@'")
    if task_labels is True:
        if score is not None:
            raise ValueError(f"strategy {resolved.label}@{score}: this preset gives task labels, so no task is "
                             "inferred; name it without '@', or use a preset without task labels (digits_ci, "
                             "smnist_ci, pdigits_di, pmnist_di)")
        return resolved
    if resolved.spec.model == "packnet":
        raise ValueError(f"strategy {resolved.label}: PackNet selects each task's weights by its task label; "
                         "this preset has none")
    if not hat_family:
        return resolved
    score = check_choice("task inference score (after '@')", score or DEFAULT_TASK_SCORE, TASK_SCORES)
    settings: dict[str, Any] = {**resolved.settings, "task_inference": score}
    return replace(resolved, label=f"{resolved.label}@{score}", settings=MappingProxyType(settings))

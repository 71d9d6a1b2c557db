"""Argument validation shared by every public constructor.

Every error names the argument, the value received and what is accepted, so that a
researcher who mistypes a config entry learns the fix from the message alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def check_choice(name: str, value: Any, accepted: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``accepted``; raise ``ValueError`` otherwise."""
    accepted = list(accepted)
    if value not in accepted:
        raise ValueError(
            f"{name}={value!r} is not supported; accepted values are: "
            + ", ".join(repr(a) for a in accepted)
        )
    return value


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_minimum: bool = False,
    integer: bool = False,
) -> float:
    """Check that ``value`` is a finite number inside the given bounds."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if integer and not isinstance(value, int):
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if minimum is not None:
        if strict_minimum and not value > minimum:
            raise ValueError(f"{name} must be > {minimum}, got {value!r}")
        if not strict_minimum and not value >= minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if maximum is not None and not value <= maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
    return value


def check_flag(name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool; raise ``ValueError`` otherwise (``1``/``"yes"`` are refused)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_flags(**flags: Any) -> list[str]:
    """Names of the flags set to True; ``ValueError`` on a non-bool or when none is set."""
    for name, value in flags.items():
        check_flag(name, value)
    chosen = [name for name, value in flags.items() if value]
    if not chosen:
        raise ValueError(
            "no metric selected: set at least one of " + ", ".join(f"{n}=True" for n in flags)
        )
    return chosen

"""Validation of the boolean switches of the ``*_metrics`` helpers."""

from __future__ import annotations


def check_flags(**flags: object) -> list[str]:
    """Names of the flags set to True; ``ValueError`` on a non-bool or when none is set."""
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    chosen = [name for name, value in flags.items() if value]
    if not chosen:
        raise ValueError(
            "no metric selected: set at least one of " + ", ".join(f"{n}=True" for n in flags)
        )
    return chosen

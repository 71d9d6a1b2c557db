"""Resolve the ``importance_type`` a user gives (full name or short name) to its registered type."""

from __future__ import annotations

from .registry import (
    IMPORTANCE_TYPES,
    REFERENCE_IMPORTANCE_TYPES,
    ImportanceType,
    find_importance_type,
    short_name_of,
    types_sharing_short_name,
)


def resolve_importance_type(name: object) -> ImportanceType:
    """The registered importance type ``name``: a full name of
    :data:`~avalanche_fgadahat.importance.IMPORTANCE_TYPES`, or a short name (``icu``, ``ig``,
    ``gxa``, any case) that names one type alone.

    :raises ValueError: for an unknown name (listing the accepted full and short names) or a
        short name shared by several types (listing them).
    """
    found = find_importance_type(name)
    if found is not None:
        return found
    accepted = [n for n in REFERENCE_IMPORTANCE_TYPES if n in IMPORTANCE_TYPES]
    accepted += [n for n in IMPORTANCE_TYPES if n not in REFERENCE_IMPORTANCE_TYPES]
    shared = types_sharing_short_name(name) if isinstance(name, str) else []
    if shared:
        raise ValueError(
            f"importance_type={name!r} is the short name of several types ({', '.join(shared)}); "
            "use the full name"
        )
    shorts = [short for short in (short_name_of(IMPORTANCE_TYPES[n]) for n in accepted) if short]
    raise ValueError(
        f"importance_type={name!r} is not supported; accepted values are: "
        + ", ".join(repr(n) for n in accepted)
        + "; or their short names (any case): "
        + ", ".join(shorts)
    )

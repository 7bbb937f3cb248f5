"""Validation shared by the settings dataclasses and the notebooks' parameters: each check raises
a ValueError whose message names the setting, what is wrong and what would be valid."""

from __future__ import annotations

import difflib
import re
from dataclasses import fields

_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


SCIENTIFIC = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def as_number(value):
    """A string in scientific notation as the float it means (YAML 1.1 reads 1e-3, without a dot,
    as a string); anything else as it is."""
    return float(value) if isinstance(value, str) and SCIENTIFIC.fullmatch(value.strip()) else value


def check_fields(obj) -> None:
    """Coerce ints to floats where a dataclass declares a float; reject values of the wrong type."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        kind = _TYPES.get(str(f.type))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            setattr(obj, f.name, float(value))
        elif kind is float and isinstance(value, str) and SCIENTIFIC.fullmatch(value.strip()):
            setattr(obj, f.name, float(value))
        elif kind is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise ValueError(f"{f.name} must be of type {kind.__name__}, got {value!r}")
        if kind is float and getattr(obj, f.name) != getattr(obj, f.name):  # NaN passes every range check
            raise ValueError(f"{f.name} must be a number, got nan")


def check_positive(obj, names) -> None:
    """Each of `names` (int fields of `obj`) must be 1 or more."""
    for name in names:
        if getattr(obj, name) < 1:
            raise ValueError(f"{name} must be a positive integer, got {getattr(obj, name)}")


def check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(allowed)}")


def reject_unknown(keys, valid: set[str], what: str) -> None:
    """Refuse names outside `valid`, suggesting the closest valid name for each."""
    unknown = sorted(set(keys) - valid)
    if unknown:
        hints = [
            f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, valid, 1)) else repr(k)
            for k in unknown
        ]
        raise ValueError(f"unknown {what}(s): {', '.join(hints)}. Valid: {', '.join(sorted(valid))}")

"""Validation of what users give: settings (shared by the dataclasses and the notebooks'
parameters) and the files and folders the commands read and write. Each check raises a
ValueError (FileNotFoundError for a missing file) whose message names the setting or path, what
is wrong and the fix."""

from __future__ import annotations

import difflib
import tempfile
from dataclasses import fields
from pathlib import Path

_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def check_fields(obj) -> None:
    """Coerce ints to floats where a dataclass declares a float; reject values of the wrong type."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        kind = _TYPES.get(str(f.type))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            setattr(obj, f.name, float(value))
        elif kind is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise ValueError(f"{f.name} must be of type {kind.__name__}, got {value!r}")


def check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(allowed)}")


def reject_unknown(keys, valid: set[str], what: str) -> None:
    """Refuse names outside `valid`, suggesting the closest valid name for each."""
    unknown = sorted(set(keys) - valid)
    if unknown:
        hints = [f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, valid, 1)) else repr(k)
                 for k in unknown]
        raise ValueError(f"unknown {what}(s): {', '.join(hints)}. Valid: {', '.join(sorted(valid))}")


def readable_file(path, what: str, fix: str) -> Path:
    """`path` as a Path, when it names a non-empty file this process can read."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist. Fix: {fix}")
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder, not a file. Fix: {fix}")
    try:
        with open(path, "rb") as f:
            empty = not f.read(1)
    except PermissionError:
        raise ValueError(f"{what} {path} cannot be read (permission denied). Fix: make it readable "
                         f"(chmod u+r {path}), or {fix}") from None
    if empty:
        raise ValueError(f"{what} {path} is empty. Fix: {fix}")
    return path


def writable_folder(path, what: str) -> Path:
    """`path` as a Path, created if missing, when this process can write files into it. Checked
    before any work starts, so that an hour of training never ends in a failed write."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} is a file, not a folder. Fix: give a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ValueError(f"{what} {path} cannot be written ({err.strerror or err}). Fix: choose a folder you "
                         f"can write to, or change its permissions") from None
    return path

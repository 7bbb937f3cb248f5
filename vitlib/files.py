"""Files and folders: those users give are checked before any work starts (one clear error
naming the path, what is wrong and the fix), and results are written so that a file is either
complete or absent."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path


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
        raise ValueError(
            f"{what} {path} cannot be read (permission denied). Fix: make it readable (chmod u+r {path}), or {fix}"
        ) from None
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
        raise ValueError(
            f"{what} {path} cannot be written ({err.strerror or err}). Fix: choose a folder you "
            f"can write to, or change its permissions"
        ) from None
    return path


@contextlib.contextmanager
def atomic_file(path: Path):
    """A binary file to write that appears at `path` only once complete. The temporary file has a
    name of its own (name.XXXX.part), so two writers of one result cannot cut each other short."""
    path = Path(path)
    # Not mkstemp: its files are private (0600); a result gets the mode any new file gets here (umask).
    tmp = path.parent / f"{path.name}.{secrets.token_hex(8)}.part"
    try:
        with open(tmp, "xb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

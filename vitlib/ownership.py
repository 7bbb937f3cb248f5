"""Who may write an output folder: the run that wrote what is in it, one process at a time.

`claim(folder, files, what)` is held while a run or a model selection writes `folder`:
- every entry already in the folder must be one that kind of run writes (`files`); anything else
  (a checkpoint copied there by hand, a model selection's trials) belongs to someone else and is
  refused, so it is never overwritten;
- an exclusive lock (`.vitlib.lock`, an OS file lock, released when the process ends however it
  ends) refuses a second process writing the same folder, naming the one that holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from pathlib import Path

LOCK = ".vitlib.lock"

RUN_FILES = frozenset({"config.json", "checkpoint.pt", "test_correct.npy", "metrics.json"})
SELECTION_FILES = frozenset({"config.json", "selection.json", "summary.csv", "trials.csv", "trials"})


def check_owned(folder: str | Path, files: frozenset[str], what: str) -> None:
    """Refuse a folder holding entries that `what` does not write (the temporary files of an
    interrupted write, `<name>.<random>.part` (vitlib.files.atomic_file), are its own). A training run writes its config.json
    first: its other files without one were not written by a run."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    entries = [p.name for p in folder.iterdir() if p.name != LOCK]
    unclaimed = files is RUN_FILES and "config.json" not in entries
    strangers = sorted(name for name in entries if unclaimed or (name not in files and not _own_temporary(name, files)))
    if strangers:
        listed = ", ".join(strangers[:4]) + (f" and {len(strangers) - 4} more" if len(strangers) > 4 else "")
        raise ValueError(
            f"{folder} holds {listed}, which {what} does not write: the folder is not this run's, and nothing "
            f"in it is overwritten. Fix: give another output folder, or move those files away"
        )


def _own_temporary(name: str, files: frozenset[str]) -> bool:
    return name.endswith(".part") and any(name.startswith(f"{f}.") for f in files)


@contextlib.contextmanager
def claim(folder: str | Path, files: frozenset[str], what: str):
    """Hold `folder` for one run: its entries checked (`check_owned`), then locked against every
    other process until the block ends."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        check_owned(folder, files, what)
        yield folder


@contextlib.contextmanager
def _locked(folder: Path):
    path = folder / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 500).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ValueError(
                f"{folder} is being written by another vitlib process ({holder}). Fix: wait for it to finish "
                f"(or stop it), or give another output folder"
            ) from None
        # The file may have been removed by a holder that finished while we opened it: lock the one there.
        if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]
        os.write(fd, f"pid {os.getpid()}, since {time.strftime('%H:%M:%S')}: {command}".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still holding it: a process that opened it before retries (above)
        os.close(fd)

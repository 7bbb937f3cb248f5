"""Fork-based workers: whether forks can do the work, and keeping their memory shared.

`multiprocessing` forks workers from this process, so they share its imported torch and its data
instead of importing and loading them again (see benchmarks/README.md for the measured memory).
Forking has two limits, and where either applies the work goes to `loky` (fresh processes)
instead, with a line saying why: forked processes cannot use CUDA or MPS, and they cannot run
autograd once this process has (PyTorch refuses: https://github.com/pytorch/pytorch/wiki/Autograd-and-Fork).
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os

import torch


def resolve_backend(backend: str, n_jobs: int, device: torch.device, log=print) -> str:
    """The joblib backend to use for `backend` as asked: 'multiprocessing' becomes 'loky' where
    forked workers could not do the work; any other backend is returned unchanged."""
    if backend != "multiprocessing" or n_jobs == 1:
        return backend
    if device.type != "cpu":
        log(
            f"joblib_backend='multiprocessing' forks, and forked processes cannot use {device.type}: "
            "using 'loky' instead"
        )
        return "loky"
    if multiprocessing.get_start_method() == "fork" and not autograd_survives_fork():
        log(
            "joblib_backend='multiprocessing': this process has already trained, and PyTorch does not let "
            "forked processes run autograd after that; using 'loky' instead (same numbers, more memory)"
        )
        return "loky"
    return backend


def keep_forks_usable() -> None:
    """Run one tiny backward pass eagerly, so that compiled training cannot be this process's first.

    PyTorch decides at the first backward pass whether to start per-device autograd threads, after
    which forked children cannot run autograd; with torch 2.14.1 a compiled first backward starts
    them even with no GPU, and an eager one on the CPU does not (measured). Cheap and idempotent.
    """
    x = torch.zeros((), requires_grad=True)
    x.backward()


def autograd_survives_fork() -> bool:
    """Whether a process forked from this one can run a backward pass (a few ms to find out)."""
    pid = os.fork()
    if pid == 0:  # the child: try, report by exit code, and leave without running any cleanup
        code = 1
        try:
            x = torch.ones(1, requires_grad=True)
            (x * 2).sum().backward()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


@contextlib.contextmanager
def shared_memory_for_forks(active: bool):
    """Forked workers share this process's memory until they write to it; the garbage collector
    writes to every object it visits, so objects that exist before the fork are frozen out of its
    reach (gc.freeze, as the Python docs advise for fork). Measured: ~100 MB less per worker."""
    if not active:
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()

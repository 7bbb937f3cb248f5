"""How jobs (model-selection trials, full-data runs) run: `run_jobs` is the one runner. It picks
the joblib backend actually used, the number of workers and of torch threads in each, keeps
forked workers' memory shared with their parent, and says what it is doing.

`multiprocessing` forks workers from this process, so they share its imported torch and its data
instead of importing and loading them again (see benchmarks/README.md for the measured memory).
Forking has two limits, and where either applies the work goes to `loky` (fresh processes)
instead, with a line saying why: forked processes cannot use CUDA or MPS, and they cannot run
autograd once this process has (PyTorch refuses: https://github.com/pytorch/pytorch/wiki/Autograd-and-Fork).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import multiprocessing
import os
import threading
import time
from collections.abc import Callable

import joblib
import torch

CLUSTER_BACKENDS = ("ray", "dask")  # workers on other machines; n_jobs=-1 means all of the cluster's


def run_jobs(
    fn: Callable,
    jobs: list[tuple],
    *,
    backend: str,
    n_jobs: int,
    device: torch.device,
    dropout: bool = False,
    on_result: Callable[[int, object], None] | None = None,
    describe: Callable[[object], str] | None = None,
    planned: int | None = None,
    finished: Callable[[], int] | None = None,
    what: str = "jobs",
    log=print,
) -> list:
    """`fn(*args)` for every `args` in `jobs`, in parallel; the results in the order of `jobs`.

    `on_result(i, result)` runs in this process as each job finishes (or, with the fork-based
    'multiprocessing' backend, which returns everything at the end, when all have finished).
    Progress goes to `log`: with `describe(result)`, a line per finished job with the time spent
    and an estimate of the time left; and a line at least every 30 s while jobs run, counting
    those done by `finished()` where results only come back at the end.

    Each job's torch threads follow from the whole batch (`planned` jobs, those done earlier
    included), not from how many are left, so a resumed batch computes exactly what an
    uninterrupted one would: with several workers on the CPU, one thread each (they share the
    cores); with one, all of them.
    """
    if not jobs:
        return []
    backend = resolve_backend(backend, n_jobs, device, log)
    _register_backend(backend)
    if backend in CLUSTER_BACKENDS:
        _check_cluster(backend, device, dropout)
    workers = n_jobs if n_jobs > 0 or backend in CLUSTER_BACKENDS else os.cpu_count() or 1
    shared_cores = device.type == "cpu" and (workers == -1 or min(workers, planned or len(jobs)) > 1)
    if backend not in CLUSTER_BACKENDS:
        n_jobs = min(workers, len(jobs))
        if n_jobs == 1:
            backend = "sequential"  # in this process (the 'multiprocessing' backend object would refuse a generator)
    in_threads = backend == "threading" and n_jobs != 1
    if in_threads and dropout:
        raise ValueError(
            "joblib_backend='threading' with dropout would make results depend on thread timing "
            "(threads share torch's random generator); use joblib_backend='loky'"
        )
    threads = 1 if shared_cores and backend != "threading" else 0
    at_end = backend == "multiprocessing" and n_jobs != 1
    # Arguments one by one: joblib's Dask backend then scatters each large array once, not per job.
    tasks = (joblib.delayed(_with_threads)(threads, i, fn, *args) for i, args in enumerate(jobs))
    results: list = [None] * len(jobs)
    clock = _Clock(len(jobs), what, log, finished if at_end else None)
    if describe is not None:
        where = "the cluster's workers" if n_jobs == -1 else f"{n_jobs} worker{'s' if n_jobs != 1 else ''}"
        clock.log(
            f"{len(jobs)} {what if len(jobs) > 1 else what.rstrip('s')} to run on {where} ({backend})"
            + (", each saved as soon as it finishes" if at_end else "")
        )
    with (
        _restore_threads(torch.get_num_threads()),
        shared_memory_for_forks(at_end),
        contextlib.nullcontext() if backend == "ray" else joblib.parallel_config(backend=backend, n_jobs=n_jobs),
        clock.heartbeat(describe is not None),
    ):
        if in_threads and shared_cores:
            torch.set_num_threads(1)  # the threads share the cores
        if backend == "ray":  # Ray's joblib backend returns nothing until all are done: use Ray's own tasks
            returned = _on_ray(fn, jobs, threads, n_jobs)
        else:
            returned = joblib.Parallel(return_as="list" if at_end else "generator_unordered")(tasks)
        for done, (i, result) in enumerate(returned, start=1):
            results[i] = result
            if on_result is not None:
                on_result(i, result)
            if describe is not None:
                clock.done = done
                clock.log(f"[{done}/{len(jobs)}] {describe(result)} · {clock.status()}")
    return results


class _Clock:
    """Elapsed time and an estimate of what is left, and a heartbeat line whenever nothing has
    been said for `every` seconds."""

    def __init__(self, total: int, what: str, log, finished: Callable[[], int] | None, every: float = 30.0):
        self.total, self.what, self.finished, self.every = total, what, finished, every
        self.start = self.said = time.perf_counter()
        self.done = 0
        self._log = log

    def log(self, line: str) -> None:
        self.said = time.perf_counter()
        self._log(line)

    def status(self) -> str:
        elapsed = time.perf_counter() - self.start
        text = f"{_duration(elapsed)} elapsed"
        if 0 < self.done < self.total:
            text += f", about {_duration(elapsed / self.done * (self.total - self.done))} left"
        return text

    @contextlib.contextmanager
    def heartbeat(self, active: bool):
        stop = threading.Event()

        def beat():
            while not stop.wait(1.0):
                if time.perf_counter() - self.said >= self.every:
                    if self.finished is not None:
                        self.done = max(self.done, self.finished())
                    self.log(f"... {self.done}/{self.total} {self.what} done · {self.status()}")

        thread = threading.Thread(target=beat, daemon=True)
        if active:
            thread.start()
        try:
            yield
        finally:
            stop.set()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _with_threads(threads: int, index: int, fn: Callable, *args):
    """(index, fn(*args)) with `threads` torch threads."""
    if threads:
        torch.set_num_threads(threads)
    return index, fn(*args)


@contextlib.contextmanager
def _restore_threads(n: int):
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _register_backend(name: str) -> None:
    """Connect to the cluster: Ray's that RAY_ADDRESS names, Dask's that this process's Client or
    DASK_SCHEDULER_ADDRESS names; without either, a local one on this machine."""
    if name not in CLUSTER_BACKENDS:
        return
    try:
        __import__({"ray": "ray", "dask": "distributed"}[name])
    except ImportError:
        raise ValueError(
            f"joblib_backend={name!r} needs Ray and Dask. Fix: pip install -e '.[cluster]' (or make setup-cluster)"
        ) from None
    if name == "ray":
        import ray

        if not ray.is_initialized():
            ray.init()  # RAY_ADDRESS=host:6379 joins that cluster
    else:
        from distributed import Client

        try:
            Client.current()
        except ValueError:  # no client yet: the one that DASK_SCHEDULER_ADDRESS names, else a local cluster
            address = os.environ.get("DASK_SCHEDULER_ADDRESS")
            if address:
                client = Client(address)
            else:
                from distributed import LocalCluster

                client = Client(LocalCluster(threads_per_worker=1, dashboard_address=None))
            atexit.register(client.close)  # kept for the jobs that follow, closed when this process ends


def _check_cluster(backend: str, device: torch.device, dropout: bool) -> None:
    """Refuse what a cluster would compute differently from this machine's workers."""
    if device.type != "cpu":
        raise ValueError(
            f"joblib_backend={backend!r} trains on the workers' CPUs, but device is {device.type!r}. "
            f"Fix: set device to 'cpu' (GPU workers are not supported yet)"
        )
    if backend == "dask" and dropout:
        from distributed import Client

        if max(Client.current().nthreads().values(), default=1) > 1:
            raise ValueError(
                "Dask workers with several threads each would make dropout depend on thread timing "
                "(threads share torch's random generator). Fix: start the workers with "
                "`dask worker --nthreads 1 ...` (one per core)"
            )


def _on_ray(fn: Callable, jobs: list[tuple], threads: int, n_jobs: int):
    """(index, result) of every job as Ray tasks finish them, at most `n_jobs` at a time (-1: as many
    as the cluster runs). Each large array goes to Ray's object store once, not once per job."""
    import numpy as np
    import ray

    task = ray.remote(num_cpus=1)(_with_threads)
    stored: dict[int, ray.ObjectRef] = {}

    def ship(arg):
        if isinstance(arg, np.ndarray) and arg.nbytes > 1_000_000:
            if id(arg) not in stored:
                stored[id(arg)] = ray.put(arg)
            return stored[id(arg)]
        return arg

    # Ray hands a task the stored values of arguments passed one by one (not inside a tuple).
    pending = [(i, [ship(a) for a in args]) for i, args in enumerate(jobs)]
    limit = n_jobs if n_jobs > 0 else len(jobs)
    running: list = []
    while pending or running:
        while pending and len(running) < limit:
            i, args = pending.pop(0)
            running.append(task.remote(threads, i, fn, *args))
        done, running = ray.wait(running, num_returns=1)
        yield ray.get(done[0])


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
    if multiprocessing.get_start_method() == "fork" and not _autograd_survives_fork():
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


def _autograd_survives_fork() -> bool:
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

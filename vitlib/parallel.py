"""How jobs (model-selection trials, full-data runs) run: `run_jobs` is the one runner. It picks
the joblib backend actually used, the number of workers and of torch threads in each, keeps
forked workers' memory shared with their parent, and says what it is doing.

Whether forked workers can do the work is `forking`'s question; connecting to a Ray or Dask
cluster, `cluster`'s; the progress lines, `job_progress`'s.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import joblib
import numpy as np
import torch

from .cluster import CLUSTER_BACKENDS, check_cluster, register_backend
from .forking import resolve_backend, shared_memory_for_forks
from .job_progress import JobClock


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
    register_backend(backend)
    if backend in CLUSTER_BACKENDS:
        check_cluster(backend, device, dropout)
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
    clock = JobClock(len(jobs), what, log, finished if at_end else None)
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


def _on_ray(fn: Callable, jobs: list[tuple], threads: int, n_jobs: int):
    """(index, result) of every job as Ray tasks finish them, at most `n_jobs` at a time (-1: as many
    as the cluster runs). Each large array goes to Ray's object store once, not once per job."""
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

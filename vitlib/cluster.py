"""Ray and Dask clusters: connecting to one, and refusing work it would compute differently from
this machine's own workers."""

from __future__ import annotations

import atexit
import contextlib
import os

import torch

CLUSTER_BACKENDS = ("ray", "dask")  # workers on other machines; n_jobs=-1 means all of the cluster's


@contextlib.contextmanager
def environment_kept():
    """Undo what a local Dask cluster sets in this process's environment for its workers
    (OMP_NUM_THREADS=1 and the like): programs this process starts afterwards would inherit them
    and run on one thread."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def register_backend(name: str) -> None:
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

                with environment_kept():
                    client = Client(LocalCluster(threads_per_worker=1, dashboard_address=None))
            atexit.register(client.close)  # kept for the jobs that follow, closed when this process ends


def check_cluster(backend: str, device: torch.device, dropout: bool) -> None:
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

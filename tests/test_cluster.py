"""Model selection on a real (local) Dask cluster and a real (local) Ray: the same trials as on
this machine's own workers, number for number, saved by the driver as they come back.

Needs the `cluster` extra (`pip install -e '.[cluster]'`). Without it these tests are skipped,
unless VITLIB_CLUSTER_TESTS=required (as in CI), where a missing extra is a failure.
"""

import json
import os
import sys

import pandas as pd
import pytest
import torch

from vitlib.checkpoint import load_checkpoint
from vitlib.cluster import environment_kept, register_backend
from vitlib.config import build_config
from vitlib.experiment import run_folder, train_runs
from vitlib.selection import select

pytestmark = pytest.mark.slow  # local clusters start in seconds
REQUIRED = os.environ.get("VITLIB_CLUSTER_TESTS") == "required"
COLUMNS = ["depth", "fold", "train_loss", "train_error", "val_loss", "val_error"]
RUNS = {
    f"seed {seed}": build_config(
        "modern", {"embed_dim": 16, "num_heads": 2, "depth": 1, "epochs": 1, "batch_size": 64, "seed": seed}
    )
    for seed in (1, 2)
}


def need(module: str):
    if REQUIRED:
        return __import__(module)
    return pytest.importorskip(module, reason="pip install -e '.[cluster]' to run the cluster tests")


@pytest.fixture(scope="module")
def local_reference(tiny_data):
    """The trials on this machine: two loky workers of one torch thread each, like a cluster's."""
    return select(_config("loky", 2), tiny_data, progress=False).trials


def _config(backend: str, n_jobs: int):
    return build_config(
        "modern",
        {
            "embed_dim": 16,
            "num_heads": 2,
            "epochs": 2,
            "batch_size": 64,
            "folds": 2,
            "grid": {"depth": [1, 2]},
            "joblib_backend": backend,
            "n_jobs": n_jobs,
        },
    )


def _assert_same_trials(trials: pd.DataFrame, reference: pd.DataFrame, out_dir) -> None:
    pd.testing.assert_frame_equal(trials[COLUMNS], reference[COLUMNS], check_exact=True)
    saved = sorted((out_dir / "trials").glob("*.json"))
    assert len(saved) == len(reference)  # written by this process as the cluster's results came back
    assert {json.loads(p.read_text())["row"]["val_error"] for p in saved} == set(reference["val_error"])


@pytest.fixture(scope="module")
def reference_runs(tiny_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("local-runs")
    return folder, train_runs(RUNS, tiny_data, folder, n_jobs=2, backend="loky", log=lambda *_: None)


def _assert_same_runs(got: dict, reference: dict, out_dir, reference_dir) -> None:
    for name, metrics in reference.items():
        timeless = [
            [{k: v for k, v in row.items() if k != "seconds"} for row in m["history"]] for m in (got[name], metrics)
        ]
        assert timeless[0] == timeless[1] and got[name]["test_loss"] == metrics["test_loss"]
        assert (got[name]["test_correct"] == metrics["test_correct"]).all()
        ours, theirs = (
            load_checkpoint(run_folder(d, name) / "checkpoint.pt")[0].state_dict() for d in (out_dir, reference_dir)
        )
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


@pytest.fixture(scope="module")
def dask_client():
    need("distributed")
    from distributed import Client, LocalCluster

    with (
        environment_kept(),  # else every test after this module starts its programs on one thread
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def ray_cluster():
    ray = need("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


CLUSTERS = {"dask": "dask_client", "ray": "ray_cluster"}  # backend -> the fixture that starts its cluster


@pytest.mark.parametrize("backend", CLUSTERS)
def test_trials_on_a_cluster_match_the_local_ones(backend, request, tiny_data, local_reference, tmp_path):
    request.getfixturevalue(CLUSTERS[backend])
    result = select(_config(backend, -1), tiny_data, tmp_path, progress=False)
    _assert_same_trials(result.trials, local_reference, tmp_path)


@pytest.mark.parametrize("backend", CLUSTERS)
def test_runs_on_a_cluster_match_the_local_ones(backend, request, tiny_data, reference_runs, tmp_path):
    request.getfixturevalue(CLUSTERS[backend])
    got = train_runs(RUNS, tiny_data, tmp_path, n_jobs=-1, backend=backend, log=lambda *_: None)
    _assert_same_runs(got, reference_runs[1], tmp_path, reference_runs[0])


def test_dask_workers_with_several_threads_refuse_dropout(tiny_data):
    need("distributed")
    from distributed import Client, LocalCluster

    cfg = _config("dask", -1).with_overrides(drop_rate=0.1)
    with (
        environment_kept(),
        LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0") as cluster,
        Client(cluster),
    ):
        with pytest.raises(ValueError, match="dask worker --nthreads 1"):
            select(cfg, tiny_data, progress=False)


@pytest.mark.parametrize("backend,module", [("ray", "ray"), ("dask", "distributed")])
def test_a_cluster_backend_without_the_extra_says_how_to_install_it(tiny_data, monkeypatch, backend, module):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(ValueError, match=r"pip install -e '\.\[cluster\]'"):
        select(_config(backend, -1), tiny_data, progress=False)


def test_a_local_dask_cluster_leaves_this_process_environment_as_it_was():
    """A local Dask cluster sets OMP_NUM_THREADS=1 (and more) in the process that starts it, for its
    workers; vitlib undoes that, so that what this process starts later keeps its cores."""
    need("distributed")
    from distributed import Client

    before = dict(os.environ)
    register_backend("dask")  # no client and no DASK_SCHEDULER_ADDRESS: a local cluster
    client = Client.current()
    try:
        assert dict(os.environ) == before
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()

"""What the README promises: the same settings and seed on the same machine give bit-identical
numbers, with torch.compile on and off, whichever backend runs the trials (Ray and Dask:
tests/test_cluster.py). Threads per worker are part of "the same settings": one worker uses all
cores, several use one thread each, and the two can differ in the last bits."""

import pandas as pd
import pytest

from vitlib.config import build_config
from vitlib.selection import select

COLUMNS = ["depth", "fold", "train_loss", "train_error", "val_loss", "val_error"]


@pytest.mark.parametrize("compile_", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "compiled"])
def test_same_settings_same_numbers_with_every_backend(tiny_data, compile_):
    cfg = build_config(
        "modern",
        {
            "embed_dim": 16,
            "num_heads": 2,
            "epochs": 2,
            "batch_size": 64,
            "folds": 2,
            "grid": {"depth": [1, 2]},
            "compile": compile_,
        },
    )

    def trials(backend: str, n_jobs: int) -> pd.DataFrame:
        said = []
        result = select(
            cfg.with_overrides(joblib_backend=backend, n_jobs=n_jobs), tiny_data, progress=False, log=said.append
        )
        assert not [line for line in said if "instead" in line], said  # the backend asked for ran
        assert (result.trials["status"] == "ok").all()
        return result.trials[COLUMNS + ["history"]].assign(
            history=lambda t: t["history"].map(
                lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]
            )
        )

    one_worker = trials("loky", 1)
    pd.testing.assert_frame_equal(trials("loky", 1), one_worker, check_exact=True)  # rerun: identical
    # Spawned loky workers first: forking right after compiling in this process once hung a worker.
    # Compiled, the two process backends; eager, threads too.
    backends = ("loky", "multiprocessing") if compile_ else ("loky", "multiprocessing", "threading")
    two_workers = {backend: trials(backend, 2) for backend in backends}
    for backend, got in two_workers.items():
        pd.testing.assert_frame_equal(got, two_workers["loky"], check_exact=True, obj=backend)

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import vitlib.forking as forking
from vitlib.forking import resolve_backend
from vitlib.parallel import run_jobs

PRELUDE = f"""
import json, logging, sys
import torch
sys.path.insert(0, {str(Path(__file__).parent)!r})
from conftest import synthetic_digits
from vitlib.config import build_config
from vitlib.data import MNIST
from vitlib.forking import autograd_survives_fork
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
data = MNIST(*synthetic_digits(300, 1), *synthetic_digits(100, 2))
cfg = build_config("modern", {{"embed_dim": 16, "num_heads": 2, "epochs": 1, "batch_size": 64,
                               "grid": {{"depth": [1, 2]}}, "folds": 2}})
said = []
"""


def run_fresh(script: str) -> dict:
    """Run `script` (after PRELUDE) in a new Python process and return the JSON it prints last."""
    out = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script)], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_multiprocessing_falls_back_to_loky_where_forks_cannot_work(monkeypatch):
    said = []
    assert resolve_backend("multiprocessing", 2, torch.device("cuda"), said.append) == "loky"
    assert "cannot use cuda" in said[-1]
    assert resolve_backend("multiprocessing", 1, torch.device("cuda"), said.append) == "multiprocessing"
    assert resolve_backend("threading", 2, torch.device("cpu"), said.append) == "threading"
    monkeypatch.setattr(forking, "autograd_survives_fork", lambda: False)
    assert resolve_backend("multiprocessing", 2, torch.device("cpu"), said.append) == "loky"
    assert "already trained" in said[-1] and len(said) == 2


@pytest.mark.slow
def test_forked_trials_save_themselves_and_match_a_serial_run(tmp_path):
    result = run_fresh(f"""
        from vitlib.selection import select
        forked = select(cfg.with_overrides(n_jobs=2, joblib_backend="multiprocessing"), data,
                        {str(tmp_path)!r}, progress=False, log=said.append)
        serial = select(cfg, data, progress=False)
        print(json.dumps({{"forked": forked.trials["val_error"].tolist(),
                          "serial": serial.trials["val_error"].tolist(), "said": said}}))
    """)
    assert result["forked"] == result["serial"] and result["said"] == []  # forked, no fallback
    assert len(list((tmp_path / "trials").glob("*.json"))) == 4  # saved by the forked workers


@pytest.mark.slow
def test_compiled_training_leaves_forks_usable_and_other_compiled_code_falls_back(tmp_path):
    """PyTorch refuses autograd in forked children once a compiled backward was the process's
    first; vitlib's compiled training avoids that, and where other code did it, work goes to loky."""
    after_fit = run_fresh("""
        from vitlib.train import build_model, fit
        fit(build_model(cfg.model, 0), data.train_images[:128], data.train_labels[:128],
            cfg.with_overrides(compile=True).train, progress=False)
        print(json.dumps(autograd_survives_fork()))
    """)
    assert after_fit is True
    result = run_fresh(f"""
        from vitlib.experiment import train_runs
        x = torch.randn(3, requires_grad=True)
        torch.compile(lambda t: (t * t).sum())(x).backward()  # a compiled first backward
        poisoned = not autograd_survives_fork()
        variants = train_runs({{"a": cfg, "b": cfg.with_overrides(seed=1)}}, data, {str(tmp_path)!r},
                                  n_jobs=2, backend="multiprocessing", log=said.append)
        print(json.dumps({{"poisoned": poisoned, "said": said, "variants": sorted(variants)}}))
    """)
    assert result["poisoned"], "PyTorch now lets forks run autograd after compiled code: revisit vitlib.forking"
    assert "already trained" in result["said"][0] and result["variants"] == ["a", "b"]


def _square(x):
    return x * x


def test_run_jobs_returns_results_in_job_order_with_every_local_backend():
    said = []
    for backend in ("loky", "multiprocessing", "threading", "sequential"):
        for jobs in ([(3,)], [(1,), (2,), (3,)]):  # one job runs in this process, whatever the backend
            assert run_jobs(
                _square, jobs, backend=backend, n_jobs=2, device=torch.device("cpu"), log=said.append, describe=str
            ) == [x * x for (x,) in jobs]
    assert any("[3/3]" in line and "elapsed" in line for line in said)

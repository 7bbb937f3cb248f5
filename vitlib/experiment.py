"""End-to-end runs that write their results next to the config that produced them.

`train_and_test` trains one config on the full training set, scores it on the test set after
every epoch, and writes `config.json`, `metrics.json` and `checkpoint.pt` to its output folder.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path

import torch

from .config import ExperimentConfig
from .data import MNIST, load_mnist
from .parallel import resolve_backend, shared_memory_for_forks
from .model import count_parameters
from .train import build_model, evaluate, fit, resolve_device, save_checkpoint


def run_info(device: torch.device | str | None = None) -> dict:
    """Where and with what a result was produced."""
    from importlib.metadata import version  # without importing torchvision (~170 MB) for its version

    device = torch.device(device or resolve_device("auto"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", ""
    return {
        "device": str(device), "device_name": name, "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__,
        **{name: version(name) for name in ("torchvision", "numpy", "scikit-learn")},
        "platform": platform.platform(), "git_commit": commit + ("+dirty" if commit and dirty else ""),
    }


def load_data(cfg: ExperimentConfig) -> MNIST:
    """MNIST as the config asks for it (verified, fetched if missing, limited if asked)."""
    return load_mnist(cfg.data.data_root).limit(cfg.data.train_limit, cfg.data.test_limit)


def train_and_test(cfg: ExperimentConfig, data: MNIST | None = None, out_dir: str | Path | None = None,
                   progress: bool = True, log=print) -> tuple[torch.nn.Module, dict]:
    """Train `cfg` on all training images, testing after each epoch; return the model and its
    metrics, and write them to `out_dir` when given."""
    data = data if data is not None else load_data(cfg)
    device = resolve_device(cfg.train.device)
    model = build_model(cfg.model, cfg.train.seed, device)
    log(f"Training {count_parameters(model):,} parameters on {len(data.train_images):,} images "
        f"for {cfg.train.epochs} epochs on {device}")

    def report(row):
        log(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, error {row['train_error']:.4f} | "
            f"test loss {row['eval_loss']:.4f}, error {row['eval_error']:.4f} ({row['seconds']:.1f} s)")

    start = time.perf_counter()
    history = fit(model, data.train_images, data.train_labels, cfg.train,
                  eval_set=(data.test_images, data.test_labels), progress=progress, on_epoch=report)
    seconds = time.perf_counter() - start
    test = evaluate(model, data.test_images, data.test_labels)
    metrics = {"test_loss": test["loss"], "test_error": test["error"], "test_accuracy": 1 - test["error"],
               "train_loss": history[-1]["train_loss"], "train_error": history[-1]["train_error"],
               "parameters": count_parameters(model), "train_seconds": seconds,
               "n_train": len(data.train_images), "n_test": len(data.test_images),
               "history": history, "run": run_info(device)}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        save_checkpoint(out / "checkpoint.pt", model, cfg.to_dict(), history,
                        {k: v for k, v in metrics.items() if k not in ("history", "run")})
    return model, metrics


def _train_variant(cfg: ExperimentConfig, arrays: tuple, out_dir: Path, threads: int) -> dict:
    """One variant, in a worker: train, test, and keep which test images it got right."""
    import numpy as np

    if threads:
        torch.set_num_threads(threads)
    data = MNIST(*(torch.from_numpy(np.array(a)) for a in arrays))  # a writable copy of joblib's read-only map
    model, metrics = train_and_test(cfg, data, out_dir, progress=False, log=lambda *a: None)
    from .train import predict

    correct = (predict(model, data.test_images).argmax(1) == data.test_labels).numpy()
    np.save(out_dir / "test_correct.npy", correct)
    return metrics


def train_variants(variants: dict[str, ExperimentConfig], data: MNIST, out_dir: str | Path,
                   n_jobs: int = 1, backend: str = "loky", log=print) -> dict[str, dict]:
    """Train several configs on the full training set (in parallel), each into out_dir/<name>/.

    A variant whose folder already holds metrics for the same config is read back, not retrained.
    Folder names are the variant names made filename-safe ("seed 1" -> seed-1).
    Returns {name: metrics}, each with `test_correct` (per test image, for paired tests).
    """
    import joblib
    import numpy as np

    out_dir = Path(out_dir)
    folders = {name: out_dir / (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "run") for name in variants}
    results, todo = {}, {}
    for name, cfg in variants.items():
        folder = folders[name]
        done = (folder / "config.json").is_file() and (folder / "test_correct.npy").is_file()
        if done and json.loads((folder / "config.json").read_text()) == cfg.to_dict():
            results[name] = json.loads((folder / "metrics.json").read_text())
        else:
            todo[name] = cfg
    if results:
        log(f"Reusing {len(results)} finished run(s) from {out_dir}: {', '.join(results)}")
    arrays = tuple(t.numpy() for t in (data.train_images, data.train_labels, data.test_images, data.test_labels))
    n_jobs = min(n_jobs if n_jobs > 0 else os.cpu_count() or 1, max(1, len(todo)))
    if todo:
        device = resolve_device(next(iter(todo.values())).train.device)
        backend = resolve_backend(backend, n_jobs, device, log)
    threads = 1 if n_jobs > 1 and backend != "threading" else 0
    jobs = (joblib.delayed(_train_variant)(cfg, arrays, folders[name], threads) for name, cfg in todo.items())
    with shared_memory_for_forks(backend == "multiprocessing" and n_jobs > 1), \
            joblib.parallel_config(backend=backend, n_jobs=n_jobs):
        for name, metrics in zip(todo, joblib.Parallel()(jobs)):
            log(f"{name}: test accuracy {metrics['test_accuracy']:.2%} ({metrics['train_seconds']:.0f} s)")
            results[name] = metrics
    for name in results:
        results[name]["test_correct"] = np.load(folders[name] / "test_correct.npy")
    return {name: results[name] for name in variants}

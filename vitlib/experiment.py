"""End-to-end runs that write their results next to the config that produced them.

`train_and_test` trains one config on the full training set, scores it on the test set after
every epoch, and writes `config.json`, `metrics.json`, `test_correct.npy` (which test images it
got right, for paired tests) and `checkpoint.pt` to its output folder; `load_run` reads them back.
`train_runs` trains a batch of configs in parallel and reuses the ones already done.
"""

from __future__ import annotations

import contextlib
import errno
import json
import re
import time
from pathlib import Path

import numpy as np
import torch

from .checkpoint import round_to_float16, save_checkpoint
from .config import ExperimentConfig
from .data import MNIST, holdout_validation, load_mnist
from .inference import evaluate
from .model import count_parameters
from .ownership import RUN_FILES, check_owned, claim
from .parallel import CLUSTER_BACKENDS, run_jobs
from .provenance import run_info
from .results import check_same_experiment, result_settings, write_json, write_npy
from .train import build_model, fit, resolve_device, usable_device


def load_data(cfg: ExperimentConfig) -> MNIST:
    """MNIST as the config asks for it (verified, fetched if missing, limited if asked); with a
    validation_size, its evaluation set is that many held-out training images, not the test set."""
    data = load_mnist(cfg.data.data_root).limit(cfg.data.train_limit, cfg.data.test_limit)
    return holdout_validation(data, cfg.data.validation_size) if cfg.data.validation_size else data


def train_and_test(
    cfg: ExperimentConfig,
    data: MNIST | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    log=print,
) -> tuple[torch.nn.Module, dict]:
    """Train `cfg` on all training images, testing after each epoch; return the model and its
    metrics, and write them to `out_dir` when given."""
    data = data if data is not None else load_data(cfg)
    device = usable_device(cfg.train.device)
    model = build_model(cfg.model, cfg.train.seed, device)
    log(
        f"Training {count_parameters(model):,} parameters on {len(data.train_images):,} images "
        f"for {cfg.train.epochs} epoch{'' if cfg.train.epochs == 1 else 's'} on {device}"
    )
    scored_on = "validation" if cfg.data.validation_size else "test"  # the metrics' test_* keys hold its scores

    def report(row):
        log(
            f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, error {row['train_error']:.4f} | "
            f"{scored_on} loss {row['eval_loss']:.4f}, error {row['eval_error']:.4f} ({row['seconds']:.1f} s)"
        )

    with claim(out_dir, RUN_FILES, "a training run") if out_dir is not None else contextlib.nullcontext():
        if out_dir is not None:
            _claim_for(Path(out_dir), cfg)
        return _train_and_save(cfg, data, model, device, out_dir, progress, report, scored_on)


def _claim_for(folder: Path, cfg: ExperimentConfig) -> None:
    """Mark `folder` as this run's before training: its config.json, written first. A config.json
    already there beside a result must be this run's; alone, it is an attempt that saved nothing
    (stopped, or out of memory) and gives way to a run with other settings, such as a lower batch."""
    saved = [name for name in sorted(RUN_FILES - {"config.json"}) if (folder / name).exists()]
    if (folder / "config.json").is_file() and saved:
        _check_same_run(folder, cfg)
    write_json(folder / "config.json", cfg.to_dict())


def _train_and_save(cfg, data, model, device, out_dir, progress, report, scored_on) -> tuple[torch.nn.Module, dict]:
    start = time.perf_counter()
    try:
        history = fit(
            model,
            data.train_images,
            data.train_labels,
            cfg.train,
            eval_set=(data.test_images, data.test_labels),
            progress=progress,
            on_epoch=report,
        )
    except (MemoryError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and not any(s in str(err).lower() for s in OUT_OF_MEMORY):
            raise
        raise ResourceExhausted(
            f"out of memory training {count_parameters(model):,} parameters with batch {cfg.train.batch_size} on "
            f"{device} ({str(err).splitlines()[0][:120]}). Fix: lower batch_size, or the model's size (embed_dim, "
            f"depth, mlp_hidden_dim), or use a device with more memory"
        ) from None
    seconds = time.perf_counter() - start
    if cfg.train.save_float16:
        round_to_float16(model)  # the weights the checkpoint keeps are the ones the test scores
    metrics = {
        **test_scores(model, data),
        "train_loss": history[-1]["train_loss"],
        "train_error": history[-1]["train_error"],
        "parameters": count_parameters(model),
        "train_seconds": seconds,
        "n_train": len(data.train_images),
        "n_test": len(data.test_images),
        "history": history,
        "scored_on": scored_on,
        "run": run_info(device),
    }
    if out_dir is not None:
        save_run(out_dir, model, cfg, metrics)
    return model, metrics


# How torch says it ran out of memory (CPU allocator, CUDA, MPS).
OUT_OF_MEMORY = ("can't allocate memory", "out of memory", "not enough memory")


class ResourceExhausted(ValueError):
    """Memory or disk ran out: a one-line error naming the setting or folder (vitlib.cli prints it)."""


def test_scores(model: torch.nn.Module, data: MNIST) -> dict:
    """Test loss, error and accuracy of the model's prediction, and `test_correct` (a bool per test
    image); for a model that averages over shifted copies (`test_shifts`), also the image alone's."""
    test = evaluate(model, data.test_images, data.test_labels, per_image=True)  # one pass over the copies
    scores = {"test_loss": test["loss"], "test_error": test["error"], "test_accuracy": 1 - test["error"]}
    if "error_single_view" in test:
        alone = test["error_single_view"]
        scores.update(test_error_single_view=alone, test_accuracy_single_view=1 - alone)
    scores["test_correct"] = test["correct"].numpy()
    return scores


def save_run(out_dir: str | Path, model: torch.nn.Module, cfg: ExperimentConfig, metrics: dict) -> None:
    """Write a finished run: checkpoint.pt, test_correct.npy, config.json, and metrics.json last,
    so that its presence says the run is complete."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = cfg.to_dict()
    metrics = dict(metrics)
    try:
        write_json(out / "config.json", config)
        save_checkpoint(
            out / "checkpoint.pt",
            model,
            config,
            metrics["history"],
            {k: v for k, v in metrics.items() if k not in ("history", "run", "test_correct")},
        )
        write_npy(out / "test_correct.npy", metrics.pop("test_correct"))
        write_json(out / "metrics.json", metrics)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise ResourceExhausted(
            f"no space left on the disk holding {out} while saving the run ({err.strerror}); it was not saved. "
            f"Fix: free space there, or give an output folder on another disk, and run again"
        ) from None


def load_run(folder: str | Path) -> dict:
    """The metrics of a finished `train_and_test` run, with `test_correct` (a bool per test image)."""
    folder = Path(folder)
    if not is_finished(folder):
        raise FileNotFoundError(f"{folder / 'metrics.json'} does not exist: that run has not finished")
    metrics = _run_file(folder, "metrics.json", ("test_accuracy", "test_error", "n_test", "history"))
    metrics["test_correct"] = np.load(folder / "test_correct.npy")
    return metrics


def _run_file(folder: Path, name: str, keys: tuple[str, ...]) -> dict:
    """A run's JSON file, refused in one line if it is not what `save_run` writes (hand-edited, or
    another program's), so that nothing is read from it or written over it."""
    try:
        data = json.loads((folder / name).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        data, problem = None, f"cannot be read ({err})"
    else:
        missing = [k for k in keys if not isinstance(data, dict) or k not in data]
        problem = f"lacks {', '.join(missing)}" if missing else ""
    if problem:
        raise ValueError(
            f"{folder / name} is not a run's {name} as vitlib writes it: it {problem}. Fix: write to "
            f"another output folder, or move {folder} away to start afresh"
        )
    return data


def is_finished(folder: str | Path) -> bool:
    """Whether a run finished in `folder`: `save_run` writes metrics.json last."""
    return (Path(folder) / "metrics.json").is_file()


def finished_run(folder: str | Path, cfg: ExperimentConfig) -> dict | None:
    """The metrics of the run of `cfg` finished in `folder`, None when no run finished there; a run
    of other settings is refused (ValueError naming them), so that it is never overwritten."""
    return load_run(folder) if _same_run_finished(folder, cfg) else None


def _same_run_finished(folder: str | Path, cfg: ExperimentConfig) -> bool:
    folder = Path(folder)
    if not is_finished(folder):
        return False  # nothing there, or a run stopped before its last file: start afresh
    _check_same_run(folder, cfg)
    return True


def _check_same_run(folder: Path, cfg: ExperimentConfig) -> None:
    """Refuse a folder whose config.json is another experiment's (ValueError naming the settings)."""
    stored = _run_file(folder, "config.json", ("model", "train", "data"))
    check_same_experiment(folder, _sections(stored), result_settings(cfg, "run"))


def run_folder(out_dir: str | Path, name: str) -> Path:
    """out_dir/<name made filename-safe>: "seed 1" -> seed-1."""
    return Path(out_dir) / (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "run")


def train_runs(
    runs: dict[str, ExperimentConfig],
    data: MNIST,
    out_dir: str | Path,
    n_jobs: int = 1,
    backend: str = "loky",
    log=print,
) -> dict[str, dict]:
    """Train several configs on the full training set (in parallel), each into `run_folder(out_dir, name)`,
    and return {name: metrics} as `load_run` gives them. A run already finished there with the same
    settings is read back, not trained again; one made with other settings is refused."""
    folders = {name: run_folder(out_dir, name) for name in runs}
    todo = [name for name, cfg in runs.items() if not _same_run_finished(folders[name], cfg)]
    for name in todo:  # before any training: a folder holding someone else's files is refused
        check_owned(folders[name], RUN_FILES, "a training run")
    if len(todo) < len(runs):
        reused = [n for n in runs if n not in todo]
        log(
            f"Reusing {len(reused)} finished run(s) from {out_dir}"
            + (f": {', '.join(reused)}" if len(reused) <= 3 else "")
        )
    if todo:
        arrays = tuple(t.numpy() for t in (data.train_images, data.train_labels, data.test_images, data.test_labels))
        first = runs[todo[0]]
        # Workers on this machine save their runs themselves; a cluster's send them back to be saved here.
        local = backend not in CLUSTER_BACKENDS

        def save_returned(i, result):
            if not local:
                name = todo[i]
                model = build_model(runs[name].model, runs[name].train.seed)
                model.load_state_dict(result.pop("weights"))
                with claim(folders[name], RUN_FILES, "a training run"):
                    save_run(folders[name], model, runs[name], result.pop("metrics"))

        run_jobs(
            _train_run,
            [(name, runs[name], *arrays, folders[name] if local else None) for name in todo],
            backend=backend,
            n_jobs=n_jobs,
            device=usable_device(first.train.device),
            planned=len(runs),
            dropout=any(runs[n].model.uses_dropout for n in todo),
            log=log,
            what="runs",
            on_result=save_returned,
            finished=lambda: sum(is_finished(folders[n]) for n in todo),
            describe=lambda m: (
                f"{m['name']}: {m['scored_on']} accuracy {m['test_accuracy']:.2%} ({m['train_seconds']:.0f} s)"
            ),
        )
    return {name: load_run(folders[name]) for name in runs}


def _sections(stored: dict) -> dict:
    """A saved config.json in the shape `result_settings` gives (device as resolved then)."""
    stored = {k: dict(v) for k, v in stored.items()}
    stored["train"]["device"] = resolve_device(stored["train"].get("device", "auto")).type
    return stored


def _train_run(
    name: str,
    cfg: ExperimentConfig,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    folder: Path | None,
) -> dict:
    """One run, in a worker: train and test; save it into `folder`, or (folder None, a cluster's
    worker) return the weights and metrics for the driver to save. Takes the arrays one by one so
    that joblib and Ray ship each once."""
    arrays = (train_images, train_labels, test_images, test_labels)
    data = MNIST(*(torch.from_numpy(np.array(a)) for a in arrays))  # a writable copy of a read-only map
    model, metrics = train_and_test(cfg, data, folder, progress=False, log=lambda *a: None)
    summary = {
        "name": name,
        "test_accuracy": metrics["test_accuracy"],
        "train_seconds": metrics["train_seconds"],
        "scored_on": metrics["scored_on"],
    }
    if folder is None:
        summary.update(weights={k: v.cpu() for k, v in model.state_dict().items()}, metrics=metrics)
    return summary

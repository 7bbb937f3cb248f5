"""k-fold model selection over a grid of settings, resumable and parallel.

Each (config, fold) trial is written to `<out>/trials/<id>.json` as soon as it finishes, so an
interrupted run resumes where it stopped. Trials go through joblib, so `n_jobs` runs them in
parallel processes and `joblib_backend` can hand them to a cluster engine (Ray, Dask).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import torch

from .config import ExperimentConfig
from .data import MNIST, kfold_splits
from .parallel import resolve_backend, shared_memory_for_forks
from .train import TrainingDiverged, build_model, evaluate, fit, resolve_device

METRICS = ["train_loss", "train_error", "val_loss", "val_error"]
CLUSTER_BACKENDS = ("ray", "dask")  # n_jobs=-1 there means every worker of the cluster
SELECTION_RULE = ("the config with the lowest mean validation misclassification error over the "
                  "folds; ties go to the one listed first in the grid")


@dataclasses.dataclass
class SelectionResult:
    trials: pd.DataFrame  # one row per (config, fold)
    summary: pd.DataFrame  # one row per config: mean and std over folds
    best: dict  # the grid point chosen by SELECTION_RULE
    grid_keys: list[str]
    reused: int = 0  # trials read back from an earlier run instead of trained


def trial_id(point: dict, fold: int) -> str:
    parts = [f"{k}={v}" for k, v in point.items()]
    return "_".join(parts + [f"fold={fold}"]).replace("/", "-")


def run_trial(cfg: ExperimentConfig, point: dict, fold: int, train_idx: np.ndarray, val_idx: np.ndarray,
              images: np.ndarray, labels: np.ndarray, threads: int = 0, trial_dir: Path | None = None) -> dict:
    """Train one config on one fold's training part and score it on its validation part; with
    `trial_dir`, write the trial there as soon as it is done (so no finished trial is lost).

    Takes numpy arrays so that joblib hands them to worker processes as shared memory maps.
    """
    if threads:
        torch.set_num_threads(threads)
    trial_cfg = cfg.with_overrides(point)
    device = resolve_device(trial_cfg.train.device)
    row = {**point, "fold": fold, "status": "ok", "error_message": ""}
    start = time.perf_counter()
    model = build_model(trial_cfg.model, trial_cfg.train.seed, device)
    x_train, y_train = torch.from_numpy(images[train_idx]), torch.from_numpy(labels[train_idx])
    x_val, y_val = torch.from_numpy(images[val_idx]), torch.from_numpy(labels[val_idx])
    try:
        history = fit(model, x_train, y_train, trial_cfg.train, progress=False)
        val = evaluate(model, x_val, y_val)
        row.update(train_loss=history[-1]["train_loss"], train_error=history[-1]["train_error"],
                   val_loss=val["loss"], val_error=val["error"], history=history)
        if not math.isfinite(val["loss"]):
            raise TrainingDiverged(f"validation loss is {val['loss']}")
    except TrainingDiverged as err:  # a diverging config is a result, not a crash
        row.update({m: float("nan") for m in METRICS}, status="failed", error_message=str(err), history=[])
    row["seconds"] = time.perf_counter() - start
    _save_trial(trial_dir, row, cfg)
    return row


def select(cfg: ExperimentConfig, data: MNIST, out_dir: str | Path | None = None,
           progress: bool = True, log=print) -> SelectionResult:
    """Cross-validate every point of `cfg.selection.grid` on the training images of `data`."""
    sel = cfg.selection
    points = cfg.grid_points() or [{}]
    images, labels = data.train_images.numpy(), data.train_labels.numpy()
    splits = kfold_splits(len(images), sel.folds, sel.shuffle_folds, cfg.train.seed)
    trial_dir = Path(out_dir) / "trials" if out_dir is not None else None
    if trial_dir is not None:
        trial_dir.mkdir(parents=True, exist_ok=True)

    done, todo = [], []
    for point in points:
        for fold, (tr, va) in enumerate(splits, start=1):
            stored = _load_trial(trial_dir, point, fold, _trial_settings(cfg, point))
            (done if stored else todo).append(stored or (point, fold, tr, va))
    if done:
        log(f"Resuming: {len(done)} of {len(done) + len(todo)} trials already in {trial_dir}")

    device = resolve_device(cfg.train.device)
    on_cpu = device.type == "cpu"
    backend = resolve_backend(sel.joblib_backend, sel.n_jobs, device, log) if todo else sel.joblib_backend
    _register_backend(backend)
    n_jobs = sel.n_jobs if sel.n_jobs > 0 or backend in CLUSTER_BACKENDS else os.cpu_count() or 1
    # Parallel CPU trials in processes share the cores: one thread each avoids oversubscription.
    parallel_cpu = n_jobs != 1 and on_cpu
    in_threads = backend == "threading" and n_jobs != 1
    if in_threads and any(_uses_dropout(cfg.with_overrides(p)) for p in points):
        raise ValueError("joblib_backend='threading' with dropout would make results depend on thread timing "
                         "(threads share torch's random generator); use joblib_backend='loky'")
    threads = 1 if parallel_cpu and backend not in ("threading", "sequential") else 0
    # Workers on this machine write their trials themselves; a cluster's may not see this disk.
    local = backend not in CLUSTER_BACKENDS
    tasks = (joblib.delayed(run_trial)(cfg, point, fold, tr, va, images, labels, threads,
                                       trial_dir if local else None)
             for point, fold, tr, va in todo)
    rows = list(done)
    torch_threads = torch.get_num_threads()
    if in_threads and parallel_cpu:
        torch.set_num_threads(1)  # the threads share the cores (restored below)
    at_end = backend == "multiprocessing"
    if progress and at_end and todo:
        log(f"Running {len(todo)} trials in {n_jobs} forked processes; they are listed when all are done, "
            f"and each is saved as soon as it finishes" + (f" (in {trial_dir})" if trial_dir else ""))
    with _restore_threads(torch_threads), shared_memory_for_forks(at_end and n_jobs != 1), \
            joblib.parallel_config(backend=backend, n_jobs=n_jobs):
        # joblib's fork-based 'multiprocessing' backend returns all trials at the end (its
        # workers have saved each one when it finished); the others return each as it finishes.
        results = joblib.Parallel(return_as="list" if at_end else "generator_unordered")(tasks)
        for i, row in enumerate(results, start=1):
            if not local:
                _save_trial(trial_dir, row, cfg)
            rows.append(row)
            if progress:
                log(_trial_line(row, i, len(todo)))

    grid_keys = list(cfg.selection.grid)
    trials = pd.DataFrame(rows)
    order = {trial_id(p, 0): i for i, p in enumerate(points)}
    trials["_order"] = [order[trial_id({k: r[k] for k in grid_keys}, 0)] for r in rows]
    trials = trials.sort_values(["_order", "fold"]).drop(columns="_order").reset_index(drop=True)
    summary = summarize(trials, grid_keys)
    ok = summary[summary["failed_folds"] == 0]
    if ok.empty:
        raise RuntimeError("every config failed (the loss diverged); lower the learning rate")
    # Summary rows follow the grid's order, and idxmin keeps the first of equal values.
    best = points[ok["val_error_mean"].idxmin()]
    if trial_dir is not None:
        trials.drop(columns="history").to_csv(Path(out_dir) / "trials.csv", index=False)
        summary.to_csv(Path(out_dir) / "summary.csv", index=False)
        (Path(out_dir) / "best.json").write_text(json.dumps(
            {"best": best, "rule": SELECTION_RULE, "config": cfg.to_dict()}, indent=2))
    return SelectionResult(trials, summary, best, grid_keys, reused=len(done))


def _uses_dropout(cfg: ExperimentConfig) -> bool:
    m = cfg.model
    return bool(m.drop_rate or m.attn_drop_rate or m.drop_path_rate)


@contextlib.contextmanager
def _restore_threads(n: int):
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _register_backend(name: str) -> None:
    """joblib knows 'dask' by itself (with a dask.distributed Client running); Ray registers its own."""
    if name == "ray":
        try:
            from ray.util.joblib import register_ray
        except ImportError as err:
            raise ImportError("joblib_backend='ray' needs Ray: pip install 'ray[default]'") from err
        register_ray()


def summarize(trials: pd.DataFrame, grid_keys: list[str]) -> pd.DataFrame:
    """Mean and standard deviation over folds of each metric, one row per config, grid order kept."""
    by = grid_keys or (lambda _: 0)
    grouped = trials.groupby(by, sort=False)
    summary = grouped[METRICS + ["seconds"]].agg(["mean", "std"])
    summary.columns = [f"{m}_{s}" for m, s in summary.columns]
    summary["folds"] = grouped.size()
    summary["failed_folds"] = grouped["status"].apply(lambda s: int((s != "ok").sum()))
    summary = summary.reset_index()
    return summary.drop(columns="index") if not grid_keys else summary


def _trial_line(row: dict, i: int, n: int) -> str:
    point = ", ".join(f"{k}={row[k]}" for k in row if k not in
                      METRICS + ["fold", "status", "error_message", "history", "seconds"])
    if row["status"] != "ok":
        return f"[{i}/{n}] {point} fold {row['fold']}: FAILED ({row['error_message']})"
    return (f"[{i}/{n}] {point} fold {row['fold']}: train error {row['train_error']:.4f}, "
            f"val error {row['val_error']:.4f} ({row['seconds']:.0f} s)")


def _trial_settings(cfg: ExperimentConfig, point: dict) -> dict:
    """What makes two trials the same: the trial's own settings and the folds, not how or where
    it runs, nor the rest of the grid (so a grown grid reuses the trials it already has)."""
    d = cfg.with_overrides(point).to_dict()
    d["selection"] = {k: d["selection"][k] for k in ("folds", "shuffle_folds")}
    d["data"] = {k: v for k, v in d["data"].items() if k != "data_root"}
    d["train"] = {k: v for k, v in d["train"].items() if k not in ("device", "compile")}
    return d


def _load_trial(trial_dir: Path | None, point: dict, fold: int, settings: dict) -> dict | None:
    if trial_dir is None:
        return None
    path = trial_dir / f"{trial_id(point, fold)}.json"
    if not path.is_file():
        return None
    stored = _with_defaults(json.loads(path.read_text())["settings"], settings)
    if stored != settings:
        differ = sorted(f"{k} ({stored[sec][k]!r} there, {v!r} now)" for sec in settings
                        for k, v in settings[sec].items() if stored[sec][k] != v)
        raise ValueError(
            f"{path} holds a trial of a different experiment: {', '.join(differ)}. "
            f"Fix: write to another output folder, or move {trial_dir} away to start afresh."
        )
    return json.loads(path.read_text())["row"]


def _with_defaults(stored: dict, current: dict) -> dict:
    """The stored settings, on the current keys: a trial written before a setting existed ran
    with what is now that setting's default."""
    from .config import SECTIONS

    out = {}
    for name, keys in current.items():
        defaults = {f.name: f.default for f in dataclasses.fields(SECTIONS[name])}
        out[name] = {k: stored.get(name, {}).get(k, defaults.get(k)) for k in keys}
    return out


def _save_trial(trial_dir: Path | None, row: dict, cfg: ExperimentConfig) -> None:
    if trial_dir is None:
        return
    point = {k: row[k] for k in cfg.selection.grid}
    path = trial_dir / f"{trial_id(point, row['fold'])}.json"
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps({"settings": _trial_settings(cfg, point), "row": row}, indent=1))
    os.replace(tmp, path)

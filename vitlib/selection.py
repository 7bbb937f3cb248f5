"""k-fold model selection over a grid of settings, resumable and parallel.

Each (config, fold) trial is written to `<out>/trials/<id>.json` as soon as it finishes, so an
interrupted run resumes where it stopped; the finished selection is written to
`<out>/selection.json` (read back by `load_selection`), with `trials.csv` and `summary.csv` beside
it for people. Trials go through `parallel.run_jobs`, so `n_jobs` runs them in parallel processes
and `joblib_backend` can hand them to a cluster engine (Ray, Dask).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .cluster import CLUSTER_BACKENDS
from .config import ExperimentConfig, grid_points
from .data import MNIST, kfold_splits
from .inference import evaluate
from .ownership import SELECTION_FILES, claim
from .parallel import run_jobs
from .results import check_same_experiment, result_settings, write_json
from .train import TrainingDiverged, build_model, fit, resolve_device, usable_device

METRICS = ["train_loss", "train_error", "val_loss", "val_error"]
SELECTION_RULE = (
    "the config with the lowest mean validation misclassification error over the "
    "folds; ties go to the one listed first in the grid"
)


@dataclasses.dataclass
class SelectionResult:
    trials: pd.DataFrame  # one row per (config, fold)
    summary: pd.DataFrame  # one row per config: mean and std over folds, in the grid's order
    best: dict  # the grid point chosen by SELECTION_RULE
    grid_keys: list[str]
    reused: int = 0  # trials read back from an earlier run instead of trained

    def ok(self) -> pd.DataFrame:
        """The summary rows of the configurations that did not fail in any fold."""
        return self.summary[self.summary["failed_folds"] == 0]

    def fold_noise(self) -> float:
        """The median standard deviation between the folds of one configuration."""
        return float(self.ok()["val_error_std"].median())

    def ranked(self) -> list[dict]:
        """The grid points that did not fail, best first (ties keep the grid's order)."""
        ok = self.ok().sort_values("val_error_mean", kind="stable")
        return ok[self.grid_keys].to_dict("records")  # keeps each column's type: depth stays an int

    def runner_up(self) -> dict | None:
        ranked = self.ranked()
        return ranked[1] if len(ranked) > 1 else None


def trial_id(point: dict, fold: int) -> str:
    parts = [f"{k}={v}" for k, v in point.items()]
    return "_".join(parts + [f"fold={fold}"]).replace("/", "-")


def run_trial(
    cfg: ExperimentConfig,
    point: dict,
    fold: int,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    images: np.ndarray,
    labels: np.ndarray,
    trial_dir: Path | None = None,
) -> dict:
    """Train one config on one fold's training part and score it on its validation part; with
    `trial_dir`, write the trial there as soon as it is done (so no finished trial is lost).

    Takes numpy arrays so that joblib hands them to worker processes as shared memory maps.
    """
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
        row.update(
            train_loss=history[-1]["train_loss"],
            train_error=history[-1]["train_error"],
            val_loss=val["loss"],
            val_error=val["error"],
            history=history,
        )
        if not math.isfinite(val["loss"]):
            raise TrainingDiverged(f"validation loss is {val['loss']}")
    except TrainingDiverged as err:  # a diverging config is a result, not a crash
        row.update({m: float("nan") for m in METRICS}, status="failed", error_message=str(err), history=[])
    row["seconds"] = time.perf_counter() - start
    if trial_dir is not None:
        _save_trial(trial_dir, row, cfg, point)
    return row


def select(
    cfg: ExperimentConfig, data: MNIST, out_dir: str | Path | None = None, progress: bool = True, log=print
) -> SelectionResult:
    """Cross-validate every point of `cfg.selection.grid` on the training images of `data`, keeping
    each trial in `out_dir` (held by this process alone while it runs; a rerun resumes)."""
    if out_dir is None:
        return _select(cfg, data, None, progress, log)
    _refuse_another_selection(Path(out_dir), cfg)
    with claim(out_dir, SELECTION_FILES, "a model selection"):
        return _select(cfg, data, out_dir, progress, log)


def _select(cfg: ExperimentConfig, data: MNIST, out_dir, progress: bool, log) -> SelectionResult:
    sel = cfg.selection
    points = cfg.grid_points() or [{}]
    images, labels = data.train_images.numpy(), data.train_labels.numpy()
    splits = kfold_splits(len(images), sel.folds, sel.shuffle_folds, cfg.train.seed)
    trial_dir = Path(out_dir) / "trials" if out_dir is not None else None
    if out_dir is not None:
        _refuse_another_selection(Path(out_dir), cfg)
        trial_dir.mkdir(parents=True, exist_ok=True)

    rows, todo = [], []
    for point in points:
        for fold, (tr, va) in enumerate(splits, start=1):
            stored = _load_trial(trial_dir, cfg, point, fold)
            if stored:
                rows.append(stored)
            else:
                todo.append((point, fold, tr, va))
    if rows:
        log(f"Resuming: {len(rows)} of {len(rows) + len(todo)} trials already in {trial_dir}")
    # Workers on this machine write their trials themselves; a cluster's may not see this disk.
    local = sel.joblib_backend not in CLUSTER_BACKENDS
    jobs = [(cfg, point, fold, tr, va, images, labels, trial_dir if local else None) for point, fold, tr, va in todo]

    def keep(i, row):
        if not local and trial_dir is not None:
            _save_trial(trial_dir, row, cfg, todo[i][0])

    rows += run_jobs(
        run_trial,
        jobs,
        backend=sel.joblib_backend,
        n_jobs=sel.n_jobs,
        device=usable_device(cfg.train.device),
        planned=len(points) * len(splits),
        dropout=any(cfg.with_overrides(p).model.uses_dropout for p in points),
        on_result=keep,
        describe=_trial_line if progress else None,
        what="trials",
        log=log,
        finished=lambda: (
            sum((trial_dir / f"{trial_id(p, f)}.json").is_file() for p, f, *_ in todo) if trial_dir is not None else 0
        ),
    )
    result = _result(rows, points, list(sel.grid), reused=len(rows) - len(todo))
    if out_dir is not None:
        _save_selection(Path(out_dir), result, cfg)
    return result


def _result(rows: list[dict], points: list[dict], grid_keys: list[str], reused: int = 0) -> SelectionResult:
    """Trials in grid order, their summary, and the best point by SELECTION_RULE."""
    trials = pd.DataFrame(rows)
    order = {trial_id(p, 0): i for i, p in enumerate(points)}
    trials["_order"] = [order[trial_id({k: r[k] for k in grid_keys}, 0)] for r in rows]
    trials = trials.sort_values(["_order", "fold"]).drop(columns="_order").reset_index(drop=True)
    summary = summarize(trials, grid_keys)
    ok = summary[summary["failed_folds"] == 0]
    if ok.empty:
        raise ValueError(
            "every configuration failed (the loss diverged in a fold of each); Fix: lower the learning rate (lr)"
        )
    # Summary rows follow the grid's order, and idxmin keeps the first of equal values.
    best = points[ok["val_error_mean"].idxmin()]
    return SelectionResult(trials, summary, best, grid_keys, reused)


def _save_selection(out_dir: Path, result: SelectionResult, cfg: ExperimentConfig) -> None:
    trials = result.trials.drop(columns="history", errors="ignore")
    trials.to_csv(out_dir / "trials.csv", index=False)
    result.summary.to_csv(out_dir / "summary.csv", index=False)
    write_json(
        out_dir / "selection.json",
        {
            "best": result.best,
            "rule": SELECTION_RULE,
            "grid": cfg.selection.grid,
            "reused": result.reused,
            "config": cfg.to_dict(),
            "trials": trials.to_dict("records"),
        },
    )


def load_selection(out_dir: str | Path) -> SelectionResult:
    """A finished selection as `select` saved it in `out_dir` (no trial is rerun)."""
    path = Path(out_dir) / "selection.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the model selection has not finished there")
    saved = json.loads(path.read_text())
    return _result(saved["trials"], grid_points(saved["grid"]) or [{}], list(saved["grid"]), saved["reused"])


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


def _trial_line(row: dict) -> str:
    point = ", ".join(
        f"{k}={row[k]}" for k in row if k not in METRICS + ["fold", "status", "error_message", "history", "seconds"]
    )
    if row["status"] != "ok":
        return f"{point} fold {row['fold']}: FAILED ({row['error_message']})"
    return (
        f"{point} fold {row['fold']}: train error {row['train_error']:.4f}, "
        f"val error {row['val_error']:.4f} ({row['seconds']:.0f} s)"
    )


def _refuse_another_selection(out_dir: Path, cfg: ExperimentConfig) -> None:
    """A folder holding a training run, or the selection of another grid, is never written over."""
    fix = f"Fix: give another output folder, or move {out_dir} away to start afresh"
    if (out_dir / "metrics.json").is_file():
        raise ValueError(f"{out_dir} holds a training run (metrics.json), not a model selection. {fix}")
    saved = out_dir / "selection.json"
    if saved.is_file():
        try:
            grid = json.loads(saved.read_text())["grid"]
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{saved} is not a selection this program wrote. {fix}") from None
        if grid != cfg.selection.grid:
            raise ValueError(
                f"{out_dir} holds a model selection over another grid ({json.dumps(grid)} there, "
                f"{json.dumps(cfg.selection.grid)} now). {fix}"
            )


def _load_trial(trial_dir: Path | None, cfg: ExperimentConfig, point: dict, fold: int) -> dict | None:
    if trial_dir is None:
        return None
    path = trial_dir / f"{trial_id(point, fold)}.json"
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
        settings, row = stored["settings"], stored["row"]
    except (ValueError, KeyError, TypeError):  # writes are atomic: this file was not written by select
        raise ValueError(
            f"{path} is not a trial this program wrote. Fix: move it away (the trial is then "
            f"run again), or give another output folder"
        ) from None
    check_same_experiment(path, settings, result_settings(cfg.with_overrides(point), "trial"))
    return row


def _save_trial(trial_dir: Path, row: dict, cfg: ExperimentConfig, point: dict) -> None:
    write_json(
        trial_dir / f"{trial_id(point, row['fold'])}.json",
        {"settings": result_settings(cfg.with_overrides(point), "trial"), "row": row},
    )

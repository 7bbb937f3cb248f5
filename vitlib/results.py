"""Saved results: which settings make two results the same, and writing them so that a file is
either complete or absent.

One rule decides when a saved result is reused instead of recomputed: it was made with the same
settings that determine its numbers (`result_settings`), and nothing else matters (how many
workers, which joblib backend, where the data folder is). A saved result of a different
experiment is never overwritten: reusing its folder is refused, naming what differs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from .config import SECTIONS, ExperimentConfig
from .files import atomic_file
from .train import resolve_device

# How and where a run executes, never what it computes.
EXECUTION_ONLY = {"selection": ("n_jobs", "joblib_backend", "grid"), "data": ("data_root",)}


def result_settings(cfg: ExperimentConfig, scope: str) -> dict:
    """The settings, by section, that determine the numbers of a result of `scope`:
    'trial' (one fold of model selection: the folds count, the test set does not) or
    'run' (all training images, scored on the test set: the folds do not count) or
    'study' (a whole profile's study: everything counts, the grid it compares included).
    The device is the one 'auto' resolves to here: CPU and GPU numbers differ by float rounding."""
    if scope not in ("trial", "run", "study"):
        raise ValueError(f"scope must be 'trial', 'run' or 'study', got {scope!r}")
    d = cfg.to_dict()
    for section, keys in EXECUTION_ONLY.items():
        for key in keys:
            if not (scope == "study" and key == "grid"):  # a trial or run has its point of the grid
                d[section].pop(key)
    d["train"]["device"] = resolve_device(d["train"]["device"]).type
    if scope == "trial":
        d["data"].pop("test_limit")
    elif scope == "run":
        del d["selection"]
    return d


def check_same_experiment(path: Path, stored: dict, current: dict) -> None:
    """Refuse to reuse (or overwrite) `path` when it was made with other settings. A setting that
    did not exist when the file was written counts as having its default value then."""
    differ = []
    for section, values in current.items():
        defaults = {f.name: f.default for f in dataclasses.fields(SECTIONS[section])}
        for key, value in values.items():
            then = stored.get(section, {}).get(key, defaults.get(key))
            if then != value:
                differ.append(f"{key} ({then!r} there, {value!r} now)")
    if differ:
        raise ValueError(
            f"{path} holds a result of a different experiment: {', '.join(sorted(differ))}. "
            f"Fix: write to another output folder, or move {path} away to start afresh."
        )


def write_json(path: Path, obj) -> None:
    """Write JSON through a temporary file and a rename: a reader sees all of it or nothing."""
    with atomic_file(path) as f:
        f.write(json.dumps(obj, indent=1).encode())


def write_npy(path: Path, array: np.ndarray) -> None:
    with atomic_file(path) as f:
        np.save(f, array)

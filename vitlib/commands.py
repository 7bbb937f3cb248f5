"""What each `python -m vitlib` command does, given the arguments `cli`'s parser read."""

from __future__ import annotations

import argparse
import json

import pandas as pd
import torch
import yaml

from . import rebuild
from .build import execute, profile_parameters
from .checkpoint import load_checkpoint
from .checks import as_number
from .config import FIELD_SECTION, build_config
from .data import load_mnist
from .digit_image import load_digit_image
from .experiment import finished_run, load_data, train_and_test
from .files import writable_folder
from .inference import evaluate, predict
from .mnist_files import ensure_mnist
from .ownership import RUN_FILES, check_owned
from .render import render
from .results import write_json
from .selection import SELECTION_RULE, select


def _overrides(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k in FIELD_SECTION and v is not None}


def _parse_grid(items: list[str] | None) -> dict | None:
    """['depth=2,3', 'lr=0.001,0.01'] -> {'depth': [2, 3], 'lr': [0.001, 0.01]}"""
    if not items:
        return None
    grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise ValueError(f"--grid expects KEY=V1,V2,..., got {item!r}")
        key = key.strip()
        if key in grid:  # a second --grid of the same key would silently replace the first
            raise ValueError(f"--grid gives {key} twice. Fix: give all its values once, --grid {key}=V1,V2,...")
        grid[key] = [as_number(yaml.safe_load(v)) for v in values.split(",")]
    return grid


def cmd_data(args) -> None:
    ensure_mnist(args.root)


def cmd_train(args) -> None:

    cfg = build_config(args.preset, _overrides(args), args.config)
    writable_folder(args.out, "output folder")
    metrics = finished_run(args.out, cfg)  # refuses a folder holding another experiment's run
    if metrics is None:
        check_owned(args.out, RUN_FILES, "a training run")  # before any work: files not ours are never overwritten
    if metrics is not None:
        print(
            f"{args.out} already holds this run, finished: test accuracy {metrics['test_accuracy']:.2%}. "
            f"Nothing was trained; to train it again, give another --out or move {args.out} away."
        )
        return
    _, metrics = train_and_test(cfg, out_dir=args.out, progress=not args.no_progress)
    print(
        f"{metrics['scored_on']} accuracy {metrics['test_accuracy']:.2%} (error {metrics['test_error']:.4f}, "
        f"loss {metrics['test_loss']:.4f}); wrote config.json, metrics.json, checkpoint.pt to {args.out}"
    )


def cmd_select(args) -> None:

    overrides = _overrides(args)
    grid = _parse_grid(args.grid)
    if grid is not None:
        overrides["grid"] = grid
    cfg = build_config(args.preset, overrides, args.config)
    if not cfg.selection.grid:
        raise ValueError("the grid is empty; give one with --grid KEY=V1,V2 (e.g. --grid depth=2,3)")
    writable_folder(args.out, "output folder")
    result = select(cfg, load_data(cfg), args.out, progress=not args.no_progress)
    write_json(args.out / "config.json", cfg.to_dict())  # after select: it refuses another experiment's folder
    cols = result.grid_keys + ["train_error_mean", "val_error_mean", "val_error_std", "failed_folds"]
    with pd.option_context("display.width", 120):
        print(result.summary[cols].to_string(index=False))
    print(f"best: {result.best} ({SELECTION_RULE}); results in {args.out}")


def cmd_evaluate(args) -> None:

    model, payload = load_checkpoint(args.checkpoint, args.device)
    shifts = 0 if args.single_view else model.cfg.test_shifts
    data = load_mnist(args.data_root)
    test = evaluate(model, data.test_images, data.test_labels, shifts=shifts)
    n = len(data.test_images)
    result = {
        "checkpoint": str(args.checkpoint),
        "test_accuracy": 1 - test["error"],
        "test_error": test["error"],
        "test_loss": test["loss"],
        "n_test": n,
        "test_shifts": shifts,
    }
    if shifts:  # the image alone too, so that both numbers the report gives can be checked
        result["test_accuracy_single_view"] = 1 - test["error_single_view"]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        how = (
            f"; averaged over each digit and its 4 copies shifted by {shifts} px (the image alone: "
            f"{result['test_accuracy_single_view']:.2%}, or pass --single-view)"
            if shifts
            else ""
        )
        print(
            f"{args.checkpoint}: test accuracy {result['test_accuracy']:.2%} "
            f"({round(test['error'] * n)} of {n} wrong), loss {test['loss']:.4f}{how}"
        )


def cmd_predict(args) -> None:

    images = torch.stack([load_digit_image(p) for p in args.images])  # before the model: fail fast
    model, _ = load_checkpoint(args.checkpoint, args.device)
    probs = predict(model, images, shifts=0 if args.single_view else None)
    for path, p in zip(args.images, probs):
        top = int(p.argmax())
        print(f"{path}: {top} (probability {p[top]:.3f})")


def cmd_report(args) -> None:
    if not args.render_only:
        execute(args.profile, args.params)
    render(args.profile, pdf=not args.no_pdf, params_file=args.params)
    rebuild.summarize(profile_parameters(args.profile, args.params, quiet=True)[1])


def cmd_check_report(args) -> int:
    return 0 if rebuild.check(args.profile) else 1


def cmd_promote(args) -> None:
    rebuild.promote(args.profile)

"""Command line: `python -m vitlib {data,train,select,evaluate,predict,report,check-report,promote} --help`.

Every setting of `ExperimentConfig` is a flag (`--epochs 1`, `--head-softmax`), applied on top of
a preset (`--preset seed`) and an optional YAML file (`--config my.yaml`).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from dataclasses import MISSING, fields
from pathlib import Path

import yaml

from . import rebuild
from .build import NotebookFailed, execute, profile_parameters
from .config import FIELD_SECTION, PRESETS, SECTIONS, build_config
from .data import MNISTError
from .files import writable_folder
from .render import render
from .results import write_json
from .train import TrainingDiverged

_TYPES = {"int": int, "float": float, "str": str}


def _add_setting_flags(parser: argparse.ArgumentParser, skip=("grid",)) -> None:
    group = parser.add_argument_group("settings (override the preset and --config)")
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            if f.name in skip:
                continue
            flag = "--" + f.name.replace("_", "-")
            default = f.default if f.default is not MISSING else None
            help_text = f"{section}; preset/default value otherwise (class default: {default})"
            if str(f.type) == "bool":
                group.add_argument(
                    flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
                )
            else:
                group.add_argument(
                    flag,
                    dest=f.name,
                    type=_TYPES[str(f.type)],
                    default=None,
                    metavar=str(f.type).upper(),
                    help=help_text,
                )


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
        grid[key.strip()] = [yaml.safe_load(v) for v in values.split(",")]
    return grid


def _profile_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="seed", help="parameter profile params/PROFILE.yaml (default: seed)")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        default="seed",
        choices=list(PRESETS),
        help="starting configuration (default: seed, the original experiment)",
    )
    parser.add_argument("--config", type=Path, help="YAML file of settings applied on top of the preset")
    parser.add_argument("--out", type=Path, required=True, help="output folder for results")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def cmd_data(args) -> None:
    from .data import ensure_mnist

    ensure_mnist(args.root)


def cmd_train(args) -> None:
    from .experiment import finished_run, train_and_test

    cfg = build_config(args.preset, _overrides(args), args.config)
    writable_folder(args.out, "output folder")
    metrics = finished_run(args.out, cfg)  # refuses a folder holding another experiment's run
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
    import pandas as pd

    from .experiment import load_data
    from .selection import SELECTION_RULE, select

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
    from .checkpoint import load_checkpoint
    from .data import load_mnist
    from .inference import evaluate

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
    import torch

    from .checkpoint import load_checkpoint
    from .data import load_digit_image
    from .inference import predict

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vitlib", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument(
        "--debug", action="store_true", help=f"show the Python traceback behind an error (or set {DEBUG_ENV}=1)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "data", allow_abbrev=False, help="fetch and verify MNIST", description="Fetch MNIST (if needed) and verify it."
    )
    p.add_argument("--root", default="data", help="data folder (default: data)")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser(
        "train",
        allow_abbrev=False,
        help="train one config on the training set and test it",
        description="Train one config on all 60k training images, testing after each epoch.",
    )
    _common(p)
    _add_setting_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "select",
        allow_abbrev=False,
        help="k-fold model selection over a grid (resumable)",
        description="k-fold cross-validation over a grid; finished trials are kept and reused.",
    )
    _common(p)
    p.add_argument(
        "--grid", action="append", metavar="KEY=V1,V2", help="a grid axis, repeatable (default: the preset's grid)"
    )
    _add_setting_flags(p)
    p.set_defaults(func=cmd_select)

    for name, func, what in (
        ("evaluate", cmd_evaluate, "score a checkpoint on the MNIST test set"),
        ("predict", cmd_predict, "classify image files with a checkpoint"),
    ):
        p = sub.add_parser(name, allow_abbrev=False, help=what, description=what[0].upper() + what[1:] + ".")
        p.add_argument("checkpoint", type=Path, help="checkpoint.pt written by `train`")
        if name == "predict":
            p.add_argument(
                "images", nargs="+", type=Path, help="image files (any size; dark-on-light digits are inverted)"
            )
        else:
            p.add_argument("--data-root", default="data", help="data folder (default: data)")
            p.add_argument("--json", action="store_true", help="print the result as JSON")
        p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
        p.add_argument(
            "--single-view",
            action="store_true",
            help="classify each image alone, without the shifted copies a checkpoint's test_shifts asks for",
        )
        p.set_defaults(func=func)

    p = sub.add_parser(
        "report",
        allow_abbrev=False,
        help="execute the notebooks and render the report",
        description="Execute the notebooks with papermill into build/PROFILE/, render report.html and "
        "report.pdf there with nbconvert, and compare its numbers with the committed reference "
        "report/PROFILE/results.json (which it leaves as it is).",
    )
    _profile_flag(p)
    p.add_argument(
        "--params",
        type=Path,
        help="a YAML file of notebook parameters applied on top of params/PROFILE.yaml (results go to build/PROFILE-<hash>/ if they change the numbers)",
    )
    p.add_argument("--render-only", action="store_true", help="render the already executed notebooks")
    p.add_argument("--no-pdf", action="store_true", help="make only the HTML")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "check-report",
        allow_abbrev=False,
        help="rebuild a profile and compare it with the committed one",
        description="Rebuild PROFILE from scratch in a temporary folder and compare every number "
        "of its results.json with the committed report/PROFILE/results.json (exit status 1 if one "
        "moved beyond tolerance: none on the machine that built it; on another CPU, the rule in "
        "report/README.md).",
    )
    _profile_flag(p)
    p.set_defaults(func=cmd_check_report)

    p = sub.add_parser(
        "promote",
        allow_abbrev=False,
        help="make a profile's build the committed reference",
        description="Copy build/PROFILE/'s report.pdf, report.html and results.json (and the saved runs "
        "the reference keeps) into report/PROFILE/, the committed reference. For maintainers; "
        "review with git diff, then run `make readme` and commit.",
    )
    _profile_flag(p)
    p.set_defaults(func=cmd_promote)
    return parser


DEBUG_ENV = "VITLIB_DEBUG"  # set to 1 (or pass --debug) to see the traceback behind an error line


def main(argv: list[str] | None = None) -> int:
    """Run one command. A bad input ends in one line on stderr naming the file or setting, what is
    wrong and the fix, with exit status 2; Ctrl-C ends with 130, keeping every finished result."""
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        status = args.func(args)
    except (ValueError, OSError, MNISTError, TrainingDiverged, NotebookFailed) as err:
        if debug:
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        resumable = args.command in ("train", "select", "report", "check-report")
        print(
            "\ninterrupted"
            + (
                ": every finished trial and run is saved; run the same command again to go on from there"
                if resumable
                else ""
            ),
            file=sys.stderr,
        )
        return 130
    return status or 0


def _one_line(err: Exception) -> str:
    """The error's message; for an operating-system error, which path and what the system said."""
    if isinstance(err, OSError) and err.strerror:
        path = f"{err.filename}: " if err.filename else ""
        return (
            f"{path}{err.strerror}. Fix: check that the path is right and that you may read (or write) it"
            f"{'; free some disk space' if err.errno == errno.ENOSPC else ''}"
        )
    return " ".join(str(err).split()) or type(err).__name__

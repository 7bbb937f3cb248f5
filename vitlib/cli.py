"""Command line: `python -m vitlib {data,train,select,evaluate,predict,report,check-report,promote} --help`.

Every setting of `ExperimentConfig` is a flag (`--epochs 1`, `--head-softmax`), applied on top of
a preset (`--preset seed`) and an optional YAML file (`--config my.yaml`). This module builds the
parser and turns an error into one line; what each command does is in `commands`.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from .build import NotebookFailed
from .commands import (
    cmd_check_report,
    cmd_data,
    cmd_evaluate,
    cmd_predict,
    cmd_promote,
    cmd_report,
    cmd_select,
    cmd_train,
)
from .config import PRESETS, SECTIONS
from .digit_image import MIN_SPAN
from .experiment import OUT_OF_MEMORY
from .mnist_files import MNISTError
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


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose error is one line that says where the options are listed (its own
    prints the whole usage first: dozens of lines for train or select)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m vitlib", description=__doc__.splitlines()[0], allow_abbrev=False)
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
                "images",
                nargs="+",
                type=Path,
                help="image files of one digit each, any size: dark-on-light digits are inverted, a transparent "
                "background is filled to contrast with the strokes, 16-bit images are scaled; an image whose "
                f"marks span under {MIN_SPAN:.0%}% of its longer side is refused as holding no digit (MNIST's "
                "digits span 20 of 28 pixels)",
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
    except (MemoryError, RuntimeError) as err:  # memory ran out outside a training step (building a model)
        if debug or (isinstance(err, RuntimeError) and not any(t in str(err).lower() for t in OUT_OF_MEMORY)):
            raise
        print(
            f"error: out of memory ({_one_line(err)[:120] or 'MemoryError'}). Fix: lower --batch-size, or the "
            f"model's size (--embed-dim, --depth, --mlp-hidden-dim), or use a machine with more memory",
            file=sys.stderr,
        )
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

"""Building a report: execute the notebooks with papermill and a profile's parameters into
build/<profile>/ (`vitlib.render` then renders them; `vitlib.rebuild` sets the build against the
committed reference in report/<profile>/).

While the notebooks run, the terminal shows their progress (build/<profile>/build.log) and
nothing else: what the Jupyter kernels print to their own stderr goes to kernel.log.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from .config import load_yaml
from .files import writable_folder
from .paths import BATCH_ENV, BUILD_ENV, project_root, reference_dir
from .profiles import open_study
from .study import Study

RENDERED = ("report.pdf", "report.html", "results.json")  # what a build makes that the reference commits
# Records written by hand beside the reference, which builds read there and never copy or write.
RECORDS = ("test_scores_seen.csv",)


class NotebookFailed(RuntimeError):
    """A notebook stopped with an error; the executed notebook holds the traceback."""


def profile_parameters(profile: str, params_file: Path | None = None, quiet: bool = False) -> tuple[dict, Study]:
    """What papermill hands each notebook: the profile's name and the settings of `params_file`, if
    given (the notebook reads params/<profile>.yaml itself); and the study they make, validated
    before anything runs (`study.out`: build/<profile>/, or build/<profile>-<hash>/ when the
    settings give other numbers than the profile's, said in one line unless `quiet`)."""
    overrides = load_yaml(params_file) if params_file is not None else {}
    if "study" in overrides:
        raise ValueError(
            f"{params_file} is a profile (it declares a study), not a file of settings to change. Fix: run it "
            f"as one, `make report PROFILE={overrides.get('profile', Path(params_file).stem)}`, without --params"
        )
    named = overrides.pop("profile", profile)
    if named != profile:
        raise ValueError(
            f"{params_file} names profile {named!r}, not {profile!r}. Fix: `python -m vitlib report --profile "
            f"{named} --params {params_file}`, or remove its `profile:` line"
        )
    with contextlib.redirect_stdout(None) if quiet else contextlib.nullcontext():
        study = open_study(profile, **overrides)
    for name in study.notebooks:
        declared = notebook_parameters(project_root() / "notebooks" / name)
        edited = {k: v for k, v in declared.items() if k != "profile" and v is not None}
        if edited:  # a value saved in the cell (JupyterLab autosaves) would apply to that notebook only
            said = ", ".join(f"{k} = {v!r}" for k, v in edited.items())
            raise ValueError(
                f"notebooks/{name} has {said} saved in its parameters cell, so its pages would differ from "
                f"the other notebooks'. Fix: `git checkout notebooks/{name}` (or set the value back to None), "
                f"and give the value to every notebook as a profile: params/<name>.yaml, `make report PROFILE=<name>`"
            )
        missing = sorted(set(overrides) - set(declared))
        if missing:
            raise ValueError(
                f"{params_file} sets {', '.join(missing)}, which notebooks/{name} does not take as a parameter "
                f"(it takes {', '.join(sorted(declared))}). Fix: make a profile of your own, "
                f"params/<name>.yaml, with those settings, and run `make report PROFILE=<name>`"
            )
    return {"profile": profile, **overrides}, study


def notebook_parameters(path: Path) -> dict:
    """{name: value} of a notebook's cell tagged `parameters` (assignments of plain literals)."""
    import nbformat

    cell = next(c for c in nbformat.read(str(path), as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    fix = f"`git checkout {path}`, and set values in a profile, params/<name>.yaml"
    try:
        tree = ast.parse(cell.source)
    except SyntaxError as err:
        raise ValueError(f"{path}'s parameters cell is not valid Python ({err.msg}). Fix: {fix}") from None
    values = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ValueError(f"{path}'s parameters cell holds more than `name = value` lines. Fix: {fix}")
        try:
            values[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise ValueError(
                f"{path}'s parameters cell sets {node.targets[0].id} to something other than a plain value. Fix: {fix}"
            ) from None
    return values


def say(line: str) -> None:
    print(line, flush=True)  # a pipe or a CI log shows progress as it happens, not at the end


def execute(profile: str, params_file: Path | None = None, echo=say, resume_from_reference: bool = True) -> list[Path]:
    """Run the notebooks with papermill and the profile's parameters into build/<profile>/,
    showing their progress lines with `echo`. Unless `resume_from_reference` is off, the build
    starts from the saved runs committed in report/<profile>/ (where runs took hours)."""
    import papermill as pm

    if os.environ.get(BUILD_ENV):  # the kernels run in notebooks/: a relative folder must mean the same there
        os.environ[BUILD_ENV] = str(Path(os.environ[BUILD_ENV]).resolve())
    params, study = profile_parameters(profile, params_file)
    root, notebooks = project_root(), study.notebooks
    out = writable_folder(study.out, "build folder")
    if resume_from_reference and study.folder == profile:
        copied = copy_saved_runs(reference_dir(profile), out)
        if copied:
            echo(
                f"Starting from the {copied} saved result files committed in {reference_dir(profile).relative_to(root)}/"
            )
    # A new log; timing.json stays, so that stages read back keep the wall time of the build that
    # computed them; results.json is replaced only when the build finishes.
    (out / "build.log").unlink(missing_ok=True)
    executed, start = [], time.perf_counter()
    with _batch_mode(), _kernel_stderr_to(out / "kernel.log"), _follow(out / "build.log", echo):
        for i, name in enumerate(notebooks, start=1):
            echo(f"[notebook {i}/{len(notebooks)}] {name} ({time.perf_counter() - start:.0f} s so far)")
            target = out / name
            try:
                _in_worker_thread(
                    functools.partial(
                        pm.execute_notebook,
                        str(root / "notebooks" / name),
                        str(target),
                        parameters=params,
                        cwd=str(root / "notebooks"),
                        log_output=False,
                        progress_bar=False,
                    )
                )
            except pm.PapermillExecutionError as err:
                raise NotebookFailed(
                    f"{name} stopped with {err.ename}: {err.evalue} (the executed notebook, "
                    f"with the traceback: {target})"
                ) from None
            executed.append(target)
    echo(
        f"Executed {len(notebooks)} notebook{'s' if len(notebooks) > 1 else ''} in {time.perf_counter() - start:.0f} s; progress log: {out / 'build.log'}"
    )
    return executed


def _in_worker_thread(work) -> None:
    """Run `work` (papermill) in a thread of its own, so that Ctrl-C stops the build at once.

    In the main thread, nbclient installs its own SIGINT handler, which only schedules the
    kernel's shutdown and leaves what happens next to the notebook's execution; in another thread
    it installs none, so Ctrl-C reaches this thread as KeyboardInterrupt wherever the build is.
    nbclient's exit handler then shuts the kernel down; every finished trial and run stays saved.
    """
    outcome: dict = {}

    def run():
        try:
            work()
        except BaseException as err:  # handed to the main thread, which raises it
            outcome["error"] = err

    thread = threading.Thread(target=run, name="papermill", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
    if "error" in outcome:
        raise outcome["error"]


@contextlib.contextmanager
def _batch_mode():
    """Tell the notebooks' kernels (they inherit the environment) to keep progress out of the report."""
    before = os.environ.get(BATCH_ENV)
    os.environ[BATCH_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(BATCH_ENV, None)
        else:
            os.environ[BATCH_ENV] = before


@contextlib.contextmanager
def _kernel_stderr_to(path: Path):
    """Kernels inherit this process's stderr; while they run it points to `path` (where, e.g., the
    kernel's "running over TCP without encryption" warning lands instead of the terminal)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _follow(path: Path, echo, every: float = 1.0):
    """Echo the lines appended to `path` while the block runs (like `tail -f`)."""
    stop = threading.Event()

    def tail():
        offset = 0
        while True:
            stopping = stop.wait(every)
            if path.is_file():
                with open(path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                complete = chunk[: chunk.rfind(b"\n") + 1]  # only whole lines
                offset += len(complete)
                for line in complete.decode(errors="replace").splitlines():
                    echo("    " + line)
            if stopping:
                return

    thread = threading.Thread(target=tail, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def committed_files(folder: Path) -> list[Path]:
    """The files of `folder` that git tracks (all of them outside a git checkout): what a reference
    commits, without what an older build may have left there."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--", "."], cwd=folder, capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return sorted(p for p in folder.rglob("*") if p.is_file())
    return sorted(folder / name for name in listed.split("\0") if name)


def copy_saved_runs(reference: Path, out: Path) -> int:
    """Copy what report/<profile>/ commits besides the rendered report (saved runs, their wall
    times) into the build folder, each file only where the build has none; how many were copied."""
    copied = 0
    if not reference.is_dir():
        return 0
    for source in committed_files(reference):
        relative = source.relative_to(reference)
        if str(relative) in RENDERED + RECORDS:
            continue
        target = out / relative
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            copied += 1
    return copied

"""Provenance, in one place: the git commit, the machine and the environment a result was made
with. Training runs record `run_info`; a report's results.json records `git_commit`, `machine`
(what a rebuild must share to give bit-identical numbers) and `environment`.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from .lockfile import LOCK, differences, locked_versions
from .train import resolve_device

# Libraries whose version can change a number or a figure.
LIBRARIES = ("torch", "numpy", "scipy", "scikit-learn", "pandas", "matplotlib", "joblib")
# ... and the ones that only change how the figures and pages look.
RENDERING = ("pillow", "nbconvert")


def environment() -> dict:
    """The packages that draw and render the report, and whether this is the locked environment."""

    info = {lib: version(lib) for lib in RENDERING}
    if LOCK.is_file():
        differ = differences(LOCK)
        info["lock"] = (
            f"all {len(locked_versions(LOCK))} packages as in requirements/lock.txt"
            if not differ
            else f"{len(differ)} package(s) differ from requirements/lock.txt: "
            + ", ".join(f"{k} {have or 'missing'}" for k, (_, have) in sorted(differ.items())[:5])
            + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
        )
    return info


def cpu_model() -> str:
    """The processor's model name ("Intel(R) Xeon(R) ..."), where the system says it; else its architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine() -> dict:
    """What a rebuild must share with the committed build to give bit-identical numbers."""
    info = {
        "cpu": cpu_model(),
        "cpu_flags": "",
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        **{lib: version(lib) for lib in LIBRARIES},
    }
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        flags = next(line.split(":", 1)[1].split() for line in lines if line.startswith("flags"))
        info["cpu_flags"] = hashlib.sha1(" ".join(sorted(flags)).encode()).hexdigest()[:12]
    except (OSError, StopIteration):
        pass
    return info


def git_commit() -> str:
    """The checkout's commit, "+modified" when vitlib/, notebooks/ or params/ differ from it (what
    decides the numbers); empty outside a git checkout."""
    here = Path(__file__).parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            # ":/" = from the repository's top (the command runs in vitlib/)
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":/vitlib", ":/notebooks", ":/params"],
            capture_output=True,
            text=True,
            cwd=here,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return commit + ("+modified" if commit and dirty else "")


def run_info(device: torch.device | str | None = None) -> dict:
    """Where and with what a training run was produced (kept in its metrics.json and checkpoint)."""
    device = torch.device(device or resolve_device("auto"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    return {
        "device": str(device),
        "device_name": name,
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # a TorchVersion would not load with weights_only
        **{name: version(name) for name in ("torchvision", "numpy", "scikit-learn")},  # without importing them
        "platform": platform.platform(),
        "git_commit": git_commit(),
    }


def package_version() -> str:
    """vitlib's version as pip installed it (pyproject.toml's), recorded in every checkpoint."""
    try:
        return version("vitlib")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "0+unknown"

"""Where things are: the project's checkout, its parameter profiles, a profile's build folder and
its committed reference."""

from __future__ import annotations

import os
from pathlib import Path

BUILD_ENV = "VITLIB_BUILD_DIR"  # another folder for the builds than the project's build/ (tests use it)
BATCH_ENV = "VITLIB_BATCH"  # set by `vitlib.build` while it executes the notebooks


def project_root() -> Path:
    """The checkout holding notebooks/ and pyproject.toml (from the notebook's folder or above)."""
    for folder in [Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parents[1]]:
        if (folder / "notebooks").is_dir() and (folder / "pyproject.toml").is_file():
            return folder
    return Path.cwd()


def build_dir(profile: str) -> Path:
    """Where a build of the profile works and writes its report: build/<profile>/ (or under $VITLIB_BUILD_DIR)."""
    return Path(os.environ.get(BUILD_ENV) or project_root() / "build") / profile


def reference_dir(profile: str) -> Path:
    """The profile's committed reference: report/<profile>/ (a build never writes there)."""
    return project_root() / "report" / profile


def profiles() -> list[str]:
    """The parameter profiles: params/<name>.yaml."""
    return sorted(p.stem for p in (project_root() / "params").glob("*.yaml"))

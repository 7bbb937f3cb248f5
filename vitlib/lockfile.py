"""The locked environment: requirements/lock.txt pins every package (with hashes) that the committed
reports were built with; `make setup` installs exactly those. Here: read a lock file, and say how
the running environment differs from it."""

from __future__ import annotations

import re
from importlib.metadata import distributions
from pathlib import Path

LOCK = Path(__file__).resolve().parents[1] / "requirements" / "lock.txt"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def canonical(name: str) -> str:
    """PEP 503 normalisation: 'Jinja2' and 'jinja2', 'nest_asyncio' and 'nest-asyncio' are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(path: Path = LOCK) -> dict[str, str]:
    """{package: version} of a `uv pip compile` / `pip-compile` lock file."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        match = _PIN.match(line)
        if match:
            pins[canonical(match[1])] = match[2]
    return pins


def installed_versions() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in distributions() if d.metadata["Name"]}


def differences(path: Path = LOCK) -> dict[str, tuple[str, str | None]]:
    """{package: (locked, installed or None)} for every locked package installed at another version
    or not at all; empty when this environment is the lock file's."""
    installed = installed_versions()
    return {
        name: (version, installed.get(name))
        for name, version in locked_versions(path).items()
        if installed.get(name) != version
    }

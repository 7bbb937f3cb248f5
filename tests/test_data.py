import gzip
import io
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from conftest import DATA_ROOT
from PIL import Image
from torchvision.datasets.mnist import read_image_file, read_label_file

from vitlib.data import LABEL_COUNTS, holdout_validation, kfold_splits, read_idx
from vitlib.digit_image import load_digit_image
from vitlib.mnist_files import (
    RAW_MD5,
    TORCHVISION_ARCHIVES,
    MNISTError,
    ensure_mnist,
    raw_folder,
    verify_mnist,
    write_idx_from_pickle,
)


def fake_pickle(pixels: dict, labels: dict) -> bytes:
    """The layout of the classic mnist.pkl.gz: ((x, y) train, valid, test), x = byte / 256."""
    parts = tuple(
        (pixels[s].reshape(len(pixels[s]), 784).astype(np.float32) / 256, labels[s]) for s in ("train", "valid", "test")
    )
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as fh:
        pickle.dump(parts, fh, protocol=2)
    return buf.getvalue()


def test_package_index_pickle_becomes_the_original_idx_bytes(tmp_path):
    rng = np.random.default_rng(0)
    pixels = {
        s: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for s, n in (("train", 5), ("valid", 3), ("test", 2))
    }
    labels = {s: rng.integers(0, 10, len(pixels[s])).astype(np.int64) for s in pixels}
    write_idx_from_pickle(fake_pickle(pixels, labels), tmp_path)
    train_images = read_image_file(str(tmp_path / "train-images-idx3-ubyte")).numpy()
    assert np.array_equal(train_images, np.concatenate([pixels["train"], pixels["valid"]]))
    assert np.array_equal(read_image_file(str(tmp_path / "t10k-images-idx3-ubyte")).numpy(), pixels["test"])
    assert np.array_equal(
        read_label_file(str(tmp_path / "train-labels-idx1-ubyte")).numpy(),
        np.concatenate([labels["train"], labels["valid"]]),
    )
    assert not list(tmp_path.glob("*.part"))
    # our reader against torchvision's, on the same files
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte"), train_images)
    assert np.array_equal(read_idx(tmp_path / "t10k-labels-idx1-ubyte"), labels["test"])


def test_a_file_that_is_not_idx_is_refused(tmp_path):
    (tmp_path / "junk").write_bytes(b"<html>not found</html>")
    with pytest.raises(MNISTError, match="not an IDX file.*make data"):
        read_idx(tmp_path / "junk")


def test_pickle_with_code_in_it_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    payload = gzip.compress(pickle.dumps(Exploit()))
    with pytest.raises(MNISTError, match="unexpected object .*system"):
        write_idx_from_pickle(payload, tmp_path)


def test_missing_files_without_download_name_the_fix(tmp_path):
    with pytest.raises(MNISTError, match="MNIST is not in .*Fix: run `make data`"):
        ensure_mnist(tmp_path, download=False)


def test_partial_set_is_refused(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"x")
    with pytest.raises(
        MNISTError, match="partial: t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, train-labels-idx1-ubyte missing"
    ):
        ensure_mnist(tmp_path)


def test_corrupt_file_is_named(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in RAW_MD5:
        (raw / name).write_bytes(b"not mnist")
    with pytest.raises(MNISTError, match=r"train-images-idx3-ubyte is corrupt or partial .*Fix: delete it"):
        verify_mnist(tmp_path)


def test_kfold_is_the_originals_contiguous_split():
    splits = kfold_splits(9, 3)
    assert [va.tolist() for _, va in splits] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert splits[1][0].tolist() == [0, 1, 2, 6, 7, 8]
    with pytest.raises(ValueError, match="folds must be an integer >= 2"):
        kfold_splits(9, 1)


@pytest.mark.mnist
def test_real_mnist_is_verified_and_resident(mnist):
    assert mnist.train_images.shape == (60000, 1, 28, 28) and mnist.train_images.dtype == torch.uint8
    assert mnist.test_images.shape == (10000, 1, 28, 28)
    assert torch.bincount(mnist.train_labels).tolist() == LABEL_COUNTS["train"]
    assert torch.bincount(mnist.test_labels).tolist() == LABEL_COUNTS["test"]
    pixels = mnist.train_images.float() / 255  # published statistics: 0.1307 / 0.3081
    assert abs(pixels.mean().item() - 0.1307) < 5e-4 and abs(pixels.std().item() - 0.3081) < 5e-4
    from torchvision.datasets import MNIST as TorchvisionMNIST  # the reference reader

    for split_images, split_labels, train in (
        (mnist.train_images, mnist.train_labels, True),
        (mnist.test_images, mnist.test_labels, False),
    ):
        ref = TorchvisionMNIST(DATA_ROOT, train=train, download=False)
        assert torch.equal(split_images[:, 0], ref.data) and torch.equal(split_labels, ref.targets)


@pytest.mark.mnist
def test_photo_of_a_dark_digit_on_paper_is_made_mnist_like(mnist, tmp_path):
    digit = mnist.test_images[0, 0].numpy()  # a 7
    big = Image.fromarray(255 - digit).resize((140, 140))  # dark on light, five times the size
    path = tmp_path / "seven.png"
    big.convert("RGB").save(path)
    got = load_digit_image(path)[0].float()
    assert got.shape == (28, 28)
    ref = torch.from_numpy(digit).float()
    corr = torch.corrcoef(torch.stack([got.flatten(), ref.flatten()]))[0, 1]
    assert corr > 0.9


def test_blank_image_is_refused(tmp_path):
    path = tmp_path / "blank.png"
    Image.new("L", (50, 50), color=255).save(path)
    with pytest.raises(ValueError, match="looks blank"):
        load_digit_image(path)
    with pytest.raises(FileNotFoundError, match="image .*missing.png does not exist"):
        load_digit_image(tmp_path / "missing.png")


def test_a_held_out_validation_set_is_cut_from_the_training_set_only(tiny_data):
    split = holdout_validation(tiny_data, 100)
    assert len(split.test_images) == 100 and len(split.train_images) == len(tiny_data.train_images) - 100
    # Every training image lands in exactly one part (images are distinct in the synthetic set).
    rows = lambda t: {bytes(x.numpy().tobytes()) for x in t}  # noqa: E731
    assert rows(split.train_images) | rows(split.test_images) == rows(tiny_data.train_images)
    assert not rows(split.train_images) & rows(split.test_images)
    assert not rows(split.test_images) & rows(tiny_data.test_images)  # the test set is not touched
    assert torch.equal(holdout_validation(tiny_data, 100).test_images, split.test_images)  # always the same
    with pytest.raises(ValueError, match="validation_size must be between 1 and 599"):
        holdout_validation(tiny_data, 600)


@pytest.mark.mnist
def test_fetching_removes_only_the_archives_it_fetched(tmp_path, monkeypatch):
    """torchvision leaves its four .gz archives beside the files: those go; any other .gz stays."""
    import torchvision.datasets

    raw = raw_folder(tmp_path)
    raw.mkdir(parents=True)
    (raw / "my-notes.gz").write_bytes(b"mine")

    class FakeDownload:  # what torchvision's download leaves in raw/
        def __init__(self, root, train, download):
            for name in RAW_MD5:
                shutil.copy(raw_folder(DATA_ROOT) / name, raw / name)
            for name in TORCHVISION_ARCHIVES:
                (raw / name).write_bytes(b"archive")

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeDownload)
    ensure_mnist(tmp_path)
    assert sorted(p.name for p in raw.glob("*.gz")) == ["my-notes.gz"]


def test_real_world_digit_images_are_read_as_mnist_would_see_them(mnist, tmp_path):
    """A browser canvas's dark strokes on transparency, and a 16-bit scan, give the digit the plain
    8-bit image gives; a white page with a speck holds no digit and is refused, not guessed at."""
    digit = np.array(Image.fromarray(mnist.test_images[0, 0].numpy()).resize((140, 140)))
    Image.fromarray(255 - digit).save(tmp_path / "plain.png")
    plain = load_digit_image(tmp_path / "plain.png").float()
    canvas = np.zeros((140, 140, 4), np.uint8)
    canvas[..., 3] = digit  # black strokes, their coverage in alpha
    Image.fromarray(canvas, "RGBA").save(tmp_path / "canvas.png")
    Image.fromarray((65535 - digit.astype(np.uint16) * 257).astype(np.uint16)).save(tmp_path / "scan16.png")
    assert Image.open(tmp_path / "scan16.png").mode == "I;16"
    for name in ("canvas.png", "scan16.png"):
        assert (load_digit_image(tmp_path / name).float() - plain).abs().mean() < 1, name  # in grey levels
    page = np.full((200, 200), 255, np.uint8)
    page[100:103, 100:103] = 0
    Image.fromarray(page).save(tmp_path / "speck.png")
    with pytest.raises(ValueError, match=r"no digit found \(the only marks span 3 of 200 pixels"):
        load_digit_image(tmp_path / "speck.png")

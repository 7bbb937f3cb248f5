import os

import pytest
import torch

from vitlib.data import MNIST, load_mnist

torch.set_num_threads(min(2, os.cpu_count() or 1))
DATA_ROOT = os.environ.get("VITLIB_DATA", os.path.join(os.path.dirname(__file__), "..", "data"))


def synthetic_digits(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable stand-ins for MNIST: noise plus a bright 8x8 square whose place encodes the label."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = torch.randint(0, 60, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    for k in range(10):
        r, c = divmod(k, 3)
        images[labels == k, :, r * 7 : r * 7 + 8, c * 9 : c * 9 + 8] = 255
    return images, labels


@pytest.fixture(scope="session")
def tiny_data() -> MNIST:
    tr_x, tr_y = synthetic_digits(600, seed=1)
    te_x, te_y = synthetic_digits(200, seed=2)
    return MNIST(tr_x, tr_y, te_x, te_y)


@pytest.fixture(scope="session")
def mnist() -> MNIST:
    """The real, verified MNIST (fetched into data/ on first use)."""
    return load_mnist(DATA_ROOT)

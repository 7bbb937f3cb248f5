"""An image file of one handwritten digit, prepared the way MNIST prepared its digits."""

from __future__ import annotations

import os

import numpy as np
import torch

from .files import readable_file


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

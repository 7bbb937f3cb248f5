"""An image file of one handwritten digit, prepared the way MNIST prepared its digits."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .files import readable_file

# MNIST's digits span 20 of their 28 pixels (71%); marks spanning under a tenth of the image are
# taken for specks or noise, not for a digit.
MIN_SPAN = 0.1


def _gray(img) -> np.ndarray:
    """Grey levels in [0, 1]: 16- and 32-bit images scaled, not clipped; a transparent background
    filled with the colour that contrasts with the strokes (dark strokes on transparency, as a
    browser canvas saves them, go onto white)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(values.max()), 1.0)
        return (values / top).astype(np.float32)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255
        alpha = rgba[..., 3]
        strokes = np.asarray(img.convert("RGBA").convert("L"), dtype=np.float32) / 255
        shown = alpha > 0.5
        background = 1.0 if shown.any() and strokes[shown].mean() < 0.5 else 0.0
        return strokes * alpha + background * (1 - alpha)
    return (
        np.asarray(img.convert("L"), dtype=np.float32) / 255 if img.mode != "L" else np.asarray(img, np.float32) / 255
    )


def load_digit_image(path: str | os.PathLike) -> torch.Tensor:
    """An image file of one digit, any size, as MNIST-style uint8 pixels (1, 28, 28).

    Follows MNIST's own preparation: white digit on black (a dark digit on a light background is
    inverted), the digit's bounding box scaled to fit 20x20 and centred by its centre of mass. An
    image whose marks span under MIN_SPAN of its longer side holds no digit, and is refused.
    """
    fix = "give a PNG or JPEG of one digit"
    path = readable_file(path, "image", fix)
    try:
        with Image.open(path) as img:
            gray = _gray(img)
    except Image.DecompressionBombError as err:  # Pillow's guard against huge images
        raise ValueError(
            f"image {path} is too large to read safely ({err}). Fix: scale it down, e.g. to 512 px"
        ) from None
    except UnidentifiedImageError:
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
    span = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
    if span < MIN_SPAN * max(gray.shape):
        raise ValueError(
            f"image {path}: no digit found (the only marks span {span} of {max(gray.shape)} pixels; a digit "
            f"should span at least {MIN_SPAN:.0%} of the image). Fix: crop the image to the digit"
        )
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

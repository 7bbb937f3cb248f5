"""Augmentation on the batch's own device, with no per-sample Python: random rotation, shift and
zoom in one `grid_sample`, plus Simard et al. (2003)'s elastic distortion as torchvision draws it.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F


def random_affine(
    x: torch.Tensor,
    degrees: float,
    translate: float,
    scale: float,
    generator: torch.Generator | None = None,
    elastic_alpha: float = 0.0,
    elastic_sigma: float = 5.0,
) -> torch.Tensor:
    """Each image of the batch rotated, shifted and zoomed at random, and (`elastic_alpha` > 0)
    distorted by its own smooth random field, in one `grid_sample` on the images' own device (no
    per-sample Python). `translate` is a fraction of the image side."""
    b = x.shape[0]

    def uniform(*shape):  # in [-1, 1)
        return torch.rand(*shape, device=x.device, generator=generator) * 2 - 1

    angle = uniform(b) * math.radians(degrees)
    zoom = 1 + uniform(b) * scale
    shift = uniform(b, 2) * translate * 2  # affine_grid's coordinates span [-1, 1]: 2 per image side
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if elastic_alpha:  # drawn after the affine parameters: runs without it keep their random numbers
        grid = grid + elastic_displacement(uniform(b, 2, *x.shape[-2:]), elastic_alpha, elastic_sigma)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def elastic_displacement(noise: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
    """Simard et al. (2003)'s elastic distortion field for a batch, made from `noise` (B, 2, H, W),
    uniform in [-1, 1), as torchvision's ElasticTransform makes its one field per call: blurred by a
    Gaussian (kernel of 8 sigma + 1 pixels, reflected at the border), times alpha / width for x and
    alpha / height for y. Returns (B, H, W, 2) in `grid_sample`'s units (2 per image side), so a unit
    of blurred noise moves a pixel by alpha / 2 pixels."""
    h, w = noise.shape[-2:]
    # The blur as two small matrices (rows, then columns): torchvision's gaussian_blur is a 2-D
    # depthwise convolution with a 41x41 kernel at sigma 5, ~100x slower than the step on a CPU.
    blur_h, blur_w = (gaussian_blur_matrix(n, sigma, noise.device) for n in (h, w))
    field = blur_h @ noise @ blur_w.T
    scale = torch.tensor([alpha / w, alpha / h], device=noise.device).view(1, 2, 1, 1)
    return (field * scale).permute(0, 2, 3, 1)


@functools.cache
def gaussian_blur_matrix(n: int, sigma: float, device: torch.device) -> torch.Tensor:
    """(n, n) matrix M: M @ v is torchvision's 1-D Gaussian blur of v with reflected borders."""
    k = int(8 * sigma + 1) | 1  # odd, as torchvision makes it
    if k // 2 >= n:
        raise ValueError(
            f"aug_elastic_sigma={sigma:g} blurs over {k} pixels, too wide for a {n}-pixel image side (reflected "
            f"borders need under {2 * n}); use aug_elastic_sigma < {(2 * n - 1) / 8:g}"
        )
    half = (k - 1) / 2
    kernel = torch.exp(-0.5 * (torch.linspace(-half, half, k) / sigma) ** 2)
    basis = F.pad(torch.eye(n).unsqueeze(1), (k // 2, k // 2), mode="reflect")  # each unit vector, padded
    columns = F.conv1d(basis, (kernel / kernel.sum()).view(1, 1, k)).squeeze(1)  # row i: the blur of e_i
    return columns.T.contiguous().to(device)

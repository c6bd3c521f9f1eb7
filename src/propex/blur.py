"""Gaussian blur of the spatial dimensions, exact for any sigma.

Implemented as one dense blur matrix per spatial axis (``x ← B_h x B_wᵀ``) with
``scipy.ndimage``'s conventions: kernel radius ``int(4σ + 0.5)`` and half-sample
symmetric ("reflect") boundaries, folded into the matrix so that sigmas larger than
the image (Blur IG uses σ up to 50 px on small images) are still correct.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def blur_matrix(length: int, sigma: float, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> Tensor:
    """``[length, length]`` matrix applying a 1-D Gaussian filter of width ``sigma``."""
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    radius = int(4.0 * sigma + 0.5)
    if sigma == 0 or radius == 0:
        return torch.eye(length, dtype=dtype, device=device)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    rows = torch.arange(length).unsqueeze(1)
    cols = rows + torch.arange(-radius, radius + 1).unsqueeze(0)      # [L, 2r+1] source indices
    period = 2 * length
    cols = cols % period
    cols = torch.where(cols >= length, period - 1 - cols, cols)         # reflect: d c b a | a b c d | d c b a
    matrix = torch.zeros(length, length, dtype=torch.float64)
    matrix.scatter_add_(1, cols, kernel.expand(length, -1).clone())
    return matrix.to(dtype=dtype, device=device)


def gaussian_blur(x: Tensor, sigma: float, n_spatial: int | None = None) -> Tensor:
    """Blur the trailing spatial dims of ``x`` (``[N, C, H, W]`` or ``[N, C, L]``) with width ``sigma``.

    ``n_spatial`` defaults to ``x.dim() - 2`` (batch and channel dims are not blurred).
    """
    n_spatial = x.dim() - 2 if n_spatial is None else n_spatial
    if n_spatial < 1 or n_spatial > 2:
        raise ValueError(
            f"gaussian blur needs inputs shaped [N, C, L] or [N, C, H, W], got shape {tuple(x.shape)}"
        )
    if sigma == 0 or math.isclose(sigma, 0.0):
        return x
    dtype = x.dtype if x.is_floating_point() else torch.float32
    out = x.to(dtype)
    if n_spatial == 2:
        bh = blur_matrix(x.shape[-2], sigma, dtype, x.device)
        out = torch.matmul(bh, out)
    bw = blur_matrix(x.shape[-1], sigma, dtype, x.device)
    return torch.matmul(out, bw.T)

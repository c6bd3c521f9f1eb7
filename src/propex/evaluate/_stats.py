"""Batched statistics on maps, in torch: rank correlation, top-k intersection, SSIM, HOG.

Every function works row-wise on a batch (``[N, ...]`` against ``[N, ...]``), on any device
and floating dtype, without numpy or scikit-image at run time.

* ``rankdata(v)``: ranks 1..F along the last dim, ties given their average rank (scipy's
  ``rankdata(method="average")``);
* ``spearman(a, b)``: Spearman's rank correlation per row, the Pearson correlation of the
  average ranks (scipy's ``spearmanr``); ``pearson(a, b)`` the plain correlation;
* ``topk_intersection(a, b, k)``: the fraction of the k largest features of ``a`` that are
  also among the k largest of ``b`` (Ghorbani et al. 2019);
* ``ssim(a, b)``: the mean structural similarity index (Wang et al. 2004) of 2-D maps;
* ``hog(m)`` / ``hog_similarity(a, b)``: histograms of oriented gradients (Dalal & Triggs
  2005; scikit-image's layout) and the Pearson correlation of two maps' HOG features, as in
  Adebayo et al. 2018.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _work_dtype(t: Tensor) -> torch.dtype:
    """float64 where the device has it (exact ranks and sums), else float32."""
    if t.device.type == "mps":  # pragma: no cover - no float64 on MPS
        return torch.float32
    return torch.float64


def _flat_pair(a: Tensor, b: Tensor, name_a: str = "a", name_b: str = "b") -> tuple[Tensor, Tensor]:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"{name_a} and {name_b} must be tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.shape != b.shape:
        raise ValueError(f"{name_a} of shape {tuple(a.shape)} and {name_b} of shape {tuple(b.shape)} must have the same shape")
    if a.dim() < 1 or a.shape[0] == 0:
        raise ValueError(f"{name_a} must be a non-empty batch [N, ...], got shape {tuple(a.shape)}")
    n = a.shape[0]
    dt = _work_dtype(a)
    return a.detach().reshape(n, -1).to(dt), b.detach().reshape(n, -1).to(dt)


def rankdata(values: Tensor) -> Tensor:
    """Ranks ``1..F`` along the last dimension; tied values share their average rank.

    Batched: ``values`` is ``[..., F]``; the result has its shape (float). Equal to
    ``scipy.stats.rankdata(v, method="average", axis=-1)``.
    """
    shape = values.shape
    f = shape[-1]
    v = values.reshape(-1, f)
    rows = v.shape[0]
    if f == 0 or rows == 0:
        return torch.zeros(shape, dtype=_work_dtype(values), device=values.device)
    sorted_v, order = torch.sort(v, dim=1, stable=True)
    new_group = torch.ones_like(sorted_v, dtype=torch.bool)
    new_group[:, 1:] = sorted_v[:, 1:] != sorted_v[:, :-1]
    group = torch.cumsum(new_group.to(torch.long), dim=1) - 1            # group id within the row
    group = group + torch.arange(rows, device=v.device).unsqueeze(1) * f  # unique over the batch
    pos = torch.arange(1, f + 1, device=v.device, dtype=_work_dtype(values)).expand(rows, f)
    flat_group = group.reshape(-1)
    total = torch.zeros(rows * f, dtype=pos.dtype, device=v.device).index_add_(0, flat_group, pos.reshape(-1))
    count = torch.zeros(rows * f, dtype=pos.dtype, device=v.device).index_add_(
        0, flat_group, torch.ones_like(pos).reshape(-1))
    avg = (total / count.clamp_min(1))[flat_group].reshape(rows, f)
    ranks = torch.empty_like(avg).scatter_(1, order, avg)
    return ranks.reshape(shape)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation per row of ``a`` and ``b`` (``[N, ...]`` each) → ``[N]``.

    A row without variance in either map gives NaN (as scipy does).
    """
    x, y = _flat_pair(a, b)
    return _pearson_rows(x, y).to(_out_dtype(a))


def _pearson_rows(x: Tensor, y: Tensor) -> Tensor:
    xc = x - x.mean(dim=1, keepdim=True)
    yc = y - y.mean(dim=1, keepdim=True)
    num = (xc * yc).sum(dim=1)
    den = torch.sqrt((xc * xc).sum(dim=1) * (yc * yc).sum(dim=1))
    out = num / den
    out = torch.where(den > 0, out, torch.full_like(out, float("nan")))
    return out.clamp(-1.0, 1.0)


def _out_dtype(t: Tensor) -> torch.dtype:
    return t.dtype if t.is_floating_point() else torch.float32


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rank correlation per row: Pearson correlation of the average ranks → ``[N]``.

    .. math:: \\rho(a, b) = \\frac{\\operatorname{cov}(R(a), R(b))}{\\sigma_{R(a)}\\,\\sigma_{R(b)}}

    with ties ranked by their average rank (Spearman 1904; ``scipy.stats.spearmanr``). The
    maps are flattened per sample; a constant map gives NaN.
    """
    x, y = _flat_pair(a, b)
    return _pearson_rows(rankdata(x), rankdata(y)).to(_out_dtype(a))


def topk_intersection(a: Tensor, b: Tensor, k: int | float) -> Tensor:
    """Fraction of the ``k`` largest features of ``a`` that are among the ``k`` largest of ``b``.

    .. math:: \\frac{|\\operatorname{top}_k(a) \\cap \\operatorname{top}_k(b)|}{k}

    (Ghorbani, Abid & Zou, "Interpretation of Neural Networks is Fragile", AAAI 2019). ``k``
    is a count, or a fraction in (0, 1) of the features per sample. Ties at the k-th value
    are broken by position (``torch.topk``). Returns ``[N]``.
    """
    x, y = _flat_pair(a, b)
    f = x.shape[1]
    k = _resolve_k(k, f)
    ia = torch.topk(x, k, dim=1).indices
    ib = torch.topk(y, k, dim=1).indices
    in_a = torch.zeros_like(x, dtype=torch.bool).scatter_(1, ia, True)
    in_b = torch.zeros_like(y, dtype=torch.bool).scatter_(1, ib, True)
    return ((in_a & in_b).sum(dim=1).to(_out_dtype(a)) / k)


def _resolve_k(k: int | float, f: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise TypeError(f"k must be an int (a count) or a float fraction in (0, 1), got {type(k).__name__} {k!r}")
    if isinstance(k, float):
        if not 0 < k < 1:
            raise ValueError(f"k given as a float must be a fraction in (0, 1), got {k}")
        return max(1, int(round(k * f)))
    if not 1 <= k <= f:
        raise ValueError(f"k must be in [1, {f}] (the number of features per sample), got {k}")
    return k


# --------------------------------------------------------------------------- SSIM
def _maps_2d(t: Tensor, name: str) -> Tensor:
    """``[N, H, W]`` or ``[N, C, H, W]`` as ``[N, C, H, W]``."""
    if t.dim() == 3:
        return t.unsqueeze(1)
    if t.dim() == 4:
        return t
    raise ValueError(f"{name} must be 2-D maps [N, H, W] or [N, C, H, W], got shape {tuple(t.shape)}")


def _gauss_kernel(sigma: float, radius: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    r = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    return g / g.sum()


def _valid_filter(img: Tensor, kernel: Tensor) -> Tensor:
    """Separable 'valid' filtering of ``[B, 1, H, W]`` by the 1-D ``kernel`` along both axes."""
    w = kernel.numel()
    out = F.conv2d(img, kernel.reshape(1, 1, w, 1))
    return F.conv2d(out, kernel.reshape(1, 1, 1, w))


def ssim(a: Tensor, b: Tensor, *, data_range: float | Tensor | None = None, gaussian: bool = True,
         sigma: float = 1.5, win_size: int | None = None, k1: float = 0.01, k2: float = 0.03,
         sample_covariance: bool | None = None) -> Tensor:
    """Mean structural similarity of 2-D maps, per sample → ``[N]``.

    .. math:: \\mathrm{SSIM}(a, b) = \\operatorname{mean}_{w}
        \\frac{(2\\mu_a\\mu_b + C_1)(2\\sigma_{ab} + C_2)}{(\\mu_a^2 + \\mu_b^2 + C_1)(\\sigma_a^2 + \\sigma_b^2 + C_2)},
        \\quad C_i = (K_i L)^2

    over the windows w that lie inside the image (Wang, Bovik, Sheikh & Simoncelli, "Image
    quality assessment: from error visibility to structural similarity", IEEE TIP 2004).
    Defaults follow the paper: a Gaussian window (σ = 1.5, 11 taps), population covariances,
    K1 = 0.01, K2 = 0.03 — scikit-image's ``structural_similarity(..., gaussian_weights=True,
    use_sample_covariance=False)``. ``gaussian=False`` gives a uniform ``win_size`` window
    (default 7) with sample covariances (scikit-image's plain default). ``data_range`` L
    defaults, per sample, to ``max - min`` over both maps (Quantus' convention). Maps smaller
    than the window use the largest window that fits. ``[N, C, H, W]`` maps average the
    channels' SSIMs (scikit-image's ``channel_axis``).
    """
    if a.shape != b.shape:
        raise ValueError(f"ssim: a of shape {tuple(a.shape)} and b of shape {tuple(b.shape)} must have the same shape")
    x = _maps_2d(a, "a").detach()
    y = _maps_2d(b, "b").detach()
    n, c, h, w = x.shape
    if n == 0:
        raise ValueError("ssim: empty batch")
    dt = _work_dtype(x)
    x, y = x.to(dt), y.to(dt)
    if gaussian:
        radius = int(3.5 * sigma + 0.5) if win_size is None else (int(win_size) - 1) // 2
    else:
        radius = (7 if win_size is None else int(win_size)) // 2
    radius = max(0, min(radius, (min(h, w) - 1) // 2))
    size = 2 * radius + 1
    if gaussian:
        kernel = _gauss_kernel(sigma, radius, dt, x.device)
    else:
        kernel = torch.full((size,), 1.0 / size, dtype=dt, device=x.device)
    if sample_covariance is None:
        sample_covariance = not gaussian
    n_pts = size ** 2
    cov_norm = n_pts / (n_pts - 1) if (sample_covariance and n_pts > 1) else 1.0
    if data_range is None:
        both = torch.cat([x.reshape(n, -1), y.reshape(n, -1)], dim=1)
        rng = (both.amax(dim=1) - both.amin(dim=1)).reshape(n, 1, 1, 1)
    else:
        rng = torch.as_tensor(data_range, dtype=dt, device=x.device).reshape(-1, 1, 1, 1)
    c1 = (k1 * rng) ** 2
    c2 = (k2 * rng) ** 2
    stack = torch.stack([x, y, x * x, y * y, x * y], dim=2).reshape(n * c * 5, 1, h, w)
    mu = _valid_filter(stack, kernel).reshape(n, c, 5, h - 2 * radius, w - 2 * radius)
    ux, uy, uxx, uyy, uxy = mu.unbind(2)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(2, 3)).mean(dim=1).to(_out_dtype(a))


# --------------------------------------------------------------------------- HOG
def hog(maps: Tensor, *, orientations: int = 9, pixels_per_cell: Sequence[int] = (8, 8),
        cells_per_block: Sequence[int] = (3, 3), eps: float = 1e-5) -> Tensor:
    """Histogram-of-oriented-gradients features of 2-D maps ``[N, H, W]`` → ``[N, D]``.

    Dalal & Triggs, "Histograms of oriented gradients for human detection", CVPR 2005, in
    scikit-image's layout (``skimage.feature.hog`` with its defaults, ``block_norm="L2-Hys"``):
    central-difference gradients (zero on the border rows/columns), unsigned orientations in
    [0°, 180°) binned into ``orientations`` bins, per cell the mean gradient magnitude per bin,
    blocks of ``cells_per_block`` cells normalised by L2, clipped at 0.2 and normalised again.
    """
    if maps.dim() != 3:
        raise ValueError(f"hog: maps must be [N, H, W], got shape {tuple(maps.shape)}")
    n, h, w = maps.shape
    cr, cc = (int(v) for v in pixels_per_cell)
    br, bc = (int(v) for v in cells_per_block)
    ncr, ncc = h // cr, w // cc
    if ncr < br or ncc < bc:
        raise ValueError(f"hog: maps of {h}x{w} hold {ncr}x{ncc} cells of {cr}x{cc} pixels, fewer than one block of "
                         f"{br}x{bc} cells; pass smaller pixels_per_cell or cells_per_block")
    dt = _work_dtype(maps)
    m = maps.detach().to(dt)
    g_row = torch.zeros_like(m)
    g_col = torch.zeros_like(m)
    g_row[:, 1:-1, :] = m[:, 2:, :] - m[:, :-2, :]
    g_col[:, :, 1:-1] = m[:, :, 2:] - m[:, :, :-2]
    mag = torch.hypot(g_row, g_col)
    ang = torch.remainder(torch.rad2deg(torch.atan2(g_row, g_col)), 180.0)
    step = 180.0 / orientations
    bins = torch.floor(ang / step).to(torch.long)
    valid = (bins >= 0) & (bins < orientations)
    bins = bins.clamp(0, orientations - 1)
    mag = torch.where(valid, mag, torch.zeros_like(mag))
    m_cells = mag[:, : ncr * cr, : ncc * cc]
    b_cells = bins[:, : ncr * cr, : ncc * cc]
    onehot = F.one_hot(b_cells, orientations).to(dt) * m_cells.unsqueeze(-1)      # [N, H', W', O]
    hist = onehot.reshape(n, ncr, cr, ncc, cc, orientations).sum(dim=(2, 4)) / (cr * cc)   # [N, ncr, ncc, O]
    nbr, nbc = ncr - br + 1, ncc - bc + 1
    blocks = hist.unfold(1, br, 1).unfold(2, bc, 1)          # [N, nbr, nbc, O, br, bc]
    blocks = blocks.permute(0, 1, 2, 4, 5, 3)                # [N, nbr, nbc, br, bc, O]
    flat = blocks.reshape(n, nbr, nbc, -1)
    out = flat / torch.sqrt((flat * flat).sum(-1, keepdim=True) + eps ** 2)
    out = out.clamp_max(0.2)
    out = out / torch.sqrt((out * out).sum(-1, keepdim=True) + eps ** 2)
    return out.reshape(n, -1).to(_out_dtype(maps))


def hog_similarity(a: Tensor, b: Tensor, **hog_options: object) -> Tensor:
    """Pearson correlation of the HOG features of two maps ``[N, H, W]`` → ``[N]`` (Adebayo et
    al. 2018's "HOG similarity"). Default cells adapt to small maps (see ``default_hog_cells``)."""
    if a.shape != b.shape:
        raise ValueError(f"hog_similarity: a of shape {tuple(a.shape)} and b of shape {tuple(b.shape)} differ")
    if a.dim() != 3:
        raise ValueError(f"hog_similarity: maps must be [N, H, W], got shape {tuple(a.shape)}")
    opts = dict(default_hog_cells(a.shape[1], a.shape[2]))
    opts.update(hog_options)
    return pearson(hog(a, **opts), hog(b, **opts)).to(_out_dtype(a))


def default_hog_cells(h: int, w: int) -> dict[str, tuple[int, int]]:
    """scikit-image's 8x8-pixel cells in 3x3-cell blocks where they fit; smaller maps get cells
    of ``min(H, W) // 4`` pixels (at least 1) and blocks of at most the cells available."""
    side = min(h, w)
    cell = 8 if side >= 24 else max(1, side // 4)
    n_cells = side // cell
    block = max(1, min(3, n_cells))
    return {"pixels_per_cell": (cell, cell), "cells_per_block": (block, block)}


__all__ = ["rankdata", "pearson", "spearman", "topk_intersection", "ssim", "hog", "hog_similarity",
           "default_hog_cells"]

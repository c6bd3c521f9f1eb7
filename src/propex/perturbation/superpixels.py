"""Feature groups for ``feature_ablation``, ``lime`` and ``kernel_shap``: grid cells and SLIC superpixels.

Both return integer masks of group ids shared by all channels, ready for ``feature_mask=``:
``grid_superpixels`` ``[1, 1, *spatial]`` (the same grid for every sample) and
``slic_superpixels`` ``[N, 1, H, W]`` (per sample, ids ``0 .. M_n - 1``). Pure torch, on x's
device; no scikit-image.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Sequence

import torch
from torch import Tensor


def grid_superpixels(x: Tensor | Sequence[int], size: int | Sequence[int]) -> Tensor:
    """Square (or box) cells of ``size`` pixels over the spatial dims of ``x`` ``[N, C, *spatial]``.

    ``x`` may also be just the spatial shape, e.g. ``(224, 224)``. ``size`` is an int or one
    size per spatial dim; cells at the border may be smaller. Returns a LongTensor
    ``[1, 1, *spatial]`` of cell ids, numbered row-major from 0.
    """
    if isinstance(x, Tensor):
        if x.dim() < 3:
            raise ValueError(f"grid_superpixels: x must be shaped [N, C, *spatial] (e.g. [N, C, H, W]), "
                             f"got shape {tuple(x.shape)}")
        spatial, device = tuple(x.shape[2:]), x.device
    else:
        spatial, device = tuple(int(d) for d in x), None
    sizes = _per_dim(size, len(spatial), "size")
    ids = torch.zeros(spatial, dtype=torch.long, device=device)
    for d, (length, s) in enumerate(zip(spatial, sizes)):
        if s > length:
            raise ValueError(f"grid_superpixels: size {s} is larger than spatial dim {d} of length {length}")
        cells = -(-length // s)
        pos = (torch.arange(length, device=device) // s).reshape(*[1] * d, length, *[1] * (len(spatial) - 1 - d))
        ids = ids * cells + pos
    return ids.reshape(1, 1, *spatial)


def slic_superpixels(x: Tensor, n_segments: int = 100, compactness: float = 10.0, *, max_iter: int = 10,
                     convert_lab: bool = False, enforce_connectivity: bool = True,
                     min_size_factor: float = 0.5) -> Tensor:
    r"""SLIC superpixels of images ``x`` ``[N, C, H, W]``: LongTensor ``[N, 1, H, W]`` of ids ``0..M_n-1``.

    Simple Linear Iterative Clustering (Achanta et al., "SLIC Superpixels Compared to
    State-of-the-Art Superpixel Methods", TPAMI 2012): k-means in (color, position) space with
    the distance

    .. math:: D = \sqrt{d_c^2 + (d_s / S)^2\, m^2}

    (:math:`d_c` color distance, :math:`d_s` pixel distance, :math:`S = \sqrt{HW/K}` the grid
    interval, :math:`m` = ``compactness``), started from a regular grid of about
    ``n_segments`` cells (each center is its cell's mean color and position). The search is localized: each pixel is compared only with the
    centers of the 3×3 grid cells around its own (the 2S×2S window of the paper), so an
    iteration costs O(9·HW), vectorised over the batch. After ``max_iter`` iterations,
    ``enforce_connectivity`` splits segments into connected parts and merges parts smaller
    than ``min_size_factor · HW / K`` pixels into an adjacent segment.

    Colors: with ``convert_lab=True`` an RGB image in [0, 1] is converted to CIELAB (as in the
    paper); otherwise the channels are used as given, rescaled per sample so that their value
    range spans 100 (the range of CIELAB's L), which gives ``compactness`` the scale of
    scikit-image's (10 by default; larger = more compact, grid-like segments).
    """
    _check_args(x, n_segments, compactness, max_iter, convert_lab, min_size_factor)
    n, c, h, w = x.shape
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    img = x.detach().to(dtype)
    if convert_lab:
        colors = rgb_to_lab(img)
    else:
        flat = img.reshape(n, -1)
        lo = flat.min(dim=1).values.reshape(n, 1, 1, 1)
        span = (flat.max(dim=1).values.reshape(n, 1, 1, 1) - lo).clamp_min(torch.finfo(dtype).tiny)
        colors = (img - lo) / span * 100.0
    gy = min(h, max(1, round(h * math.sqrt(n_segments / (h * w)))))
    gx = min(w, max(1, round(w * math.sqrt(n_segments / (h * w)))))
    step_y, step_x = h / gy, w / gx
    spatial_scale = compactness / math.sqrt(step_y * step_x)            # m / S
    dev = x.device
    ys = torch.arange(h, device=dev, dtype=dtype)
    xs = torch.arange(w, device=dev, dtype=dtype)
    pos = torch.stack(torch.meshgrid(ys, xs, indexing="ij")) * spatial_scale            # [2, H, W]
    feat = torch.cat([colors, pos.unsqueeze(0).expand(n, 2, h, w)], dim=1)               # [N, F, H, W]
    f = feat.shape[1]
    feat_px = feat.reshape(n, f, h * w).transpose(1, 2).contiguous()                    # [N, HW, F]

    g = gy * gx
    # candidate centers of every pixel: the 3x3 grid cells around its own cell
    home_y = (ys / step_y).long().clamp(max=gy - 1)
    home_x = (xs / step_x).long().clamp(max=gx - 1)
    offsets = torch.tensor([-1, 0, 1], device=dev)
    cand_y = home_y.reshape(1, h, 1) + offsets.reshape(3, 1, 1)                          # [3, H, 1]
    cand_x = home_x.reshape(1, 1, w) + offsets.reshape(3, 1, 1)                          # [3, 1, W]
    valid = (((cand_y >= 0) & (cand_y < gy)).unsqueeze(1) & ((cand_x >= 0) & (cand_x < gx)).unsqueeze(0))
    cand = (cand_y.clamp(0, gy - 1).unsqueeze(1) * gx + cand_x.clamp(0, gx - 1).unsqueeze(0))   # [3, 3, H, W]
    cand = cand.reshape(9, h * w)
    valid = valid.expand(3, 3, h, w).reshape(9, h * w)
    inf = torch.tensor(float("inf"), device=dev, dtype=dtype)

    rows = torch.arange(h * w, device=dev).unsqueeze(0)
    cand_t = cand.t()                                                                    # [HW, 9]

    def assign(centers: Tensor) -> Tensor:
        dist = torch.stack([((feat_px - centers[:, cand[j]]) ** 2).sum(-1) for j in range(9)], dim=1)   # [N, 9, HW]
        best = torch.where(valid.unsqueeze(0), dist, inf).argmin(dim=1)                 # [N, HW]
        return cand_t[rows, best]                                                        # center id per pixel

    def update(labels: Tensor, centers: Tensor | None) -> Tensor:
        index = labels.unsqueeze(-1).expand(n, h * w, f)
        sums = torch.zeros(n, g, f, device=dev, dtype=dtype).scatter_add_(1, index, feat_px)
        counts = torch.zeros(n, g, device=dev, dtype=dtype).scatter_add_(1, labels, torch.ones_like(labels, dtype=dtype))
        means = sums / counts.clamp_min(1).unsqueeze(-1)
        return means if centers is None else torch.where(counts.unsqueeze(-1) > 0, means, centers)

    # start from the grid cells themselves: each center is its cell's mean colour and position
    labels = (home_y.reshape(h, 1) * gx + home_x.reshape(1, w)).reshape(1, h * w).expand(n, h * w)
    centers = update(labels, None)
    for _ in range(max_iter):
        labels = assign(centers)
        centers = update(labels, centers)
    labels = assign(centers)
    labels = labels.reshape(n, h, w)
    if enforce_connectivity:
        labels = _connected_merge(labels, max(1, int(min_size_factor * h * w / g)))
    return _consecutive(labels).reshape(n, 1, h, w)


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB ``[N, 3, H, W]`` in [0, 1] -> CIELAB (D65), L in [0, 100]."""
    if rgb.shape[1] != 3:
        raise ValueError(f"convert_lab=True needs RGB images [N, 3, H, W], got {rgb.shape[1]} channels")
    lin = torch.where(rgb > 0.04045, ((rgb.clamp_min(0) + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    m = torch.tensor([[0.412453, 0.357580, 0.180423],
                      [0.212671, 0.715160, 0.072169],
                      [0.019334, 0.119193, 0.950227]], dtype=rgb.dtype, device=rgb.device)
    xyz = torch.einsum("ij,njhw->nihw", m, lin)
    white = torch.tensor([0.95047, 1.0, 1.08883], dtype=rgb.dtype, device=rgb.device).reshape(1, 3, 1, 1)
    t = xyz / white
    delta = 6 / 29
    ft = torch.where(t > delta ** 3, t.clamp_min(1e-12) ** (1 / 3), t / (3 * delta ** 2) + 4 / 29)
    lightness = 116 * ft[:, 1] - 16
    a = 500 * (ft[:, 0] - ft[:, 1])
    b = 200 * (ft[:, 1] - ft[:, 2])
    return torch.stack([lightness, a, b], dim=1)


# --------------------------------------------------------------------------- connectivity
def _neighbours(t: Tensor, fill: int) -> list[Tensor]:
    """The up, left, down, right neighbour of every pixel of ``t`` ``[N, H, W]`` (``fill`` outside)."""
    pad = torch.nn.functional.pad(t, (1, 1, 1, 1), value=fill)
    h, w = t.shape[1:]
    return [pad[:, 0:h, 1:w + 1], pad[:, 1:h + 1, 0:w], pad[:, 2:h + 2, 1:w + 1], pad[:, 1:h + 1, 2:w + 2]]


def _components(labels: Tensor) -> Tensor:
    """4-connected components of equal labels: every pixel gets its component's smallest pixel index."""
    n, h, w = labels.shape
    comp = torch.arange(h * w, device=labels.device).reshape(1, h, w).expand(n, h, w).contiguous()
    same = [nb == labels for nb in _neighbours(labels, -1)]
    big = h * w
    for _ in range(h * w):
        new = comp
        for nb, ok in zip(_neighbours(comp, big), same):
            new = torch.minimum(new, torch.where(ok, nb, big))
        flat = new.reshape(n, -1)
        for _ in range(4):                                      # pointer jumping: follow the roots
            flat = flat.gather(1, flat)
        new = flat.reshape(n, h, w)
        if torch.equal(new, comp):
            break
        comp = new
    return comp


def _connected_merge(labels: Tensor, min_size: int) -> Tensor:
    """Split ``labels`` into connected parts; parts below ``min_size`` pixels join an adjacent larger part."""
    n, h, w = labels.shape
    comp = _components(labels)
    flat = comp.reshape(n, -1)
    sizes = torch.zeros(n, h * w, dtype=torch.long, device=labels.device).scatter_add_(1, flat, torch.ones_like(flat))
    size_px = sizes.gather(1, flat)                                                      # each pixel's part size
    # the largest part of every segment stays, as do parts of at least min_size pixels
    lab = labels.reshape(n, -1)
    largest = torch.zeros(n, int(lab.max()) + 1, dtype=torch.long, device=labels.device)
    largest = largest.scatter_reduce(1, lab, size_px, reduce="amax")
    settled = ((size_px >= min_size) | (size_px == largest.gather(1, lab))).reshape(n, h, w)
    for _ in range(h * w):
        todo = ~settled
        if not bool(todo.any()):
            break
        changed = False
        for nb_comp, nb_settled in zip(_neighbours(comp, -1), _neighbours(settled.long(), 0)):
            take = todo & (nb_settled > 0)
            if bool(take.any()):
                comp = torch.where(take, nb_comp, comp)
                settled = settled | take
                todo = todo & ~take
                changed = True
        if not changed:
            break
    return comp


def _consecutive(labels: Tensor) -> Tensor:
    """Relabel each sample's ids to ``0 .. M_n - 1`` (in order of first id value)."""
    n = labels.shape[0]
    flat = labels.reshape(n, -1)
    span = int(flat.max()) + 1 if flat.numel() else 1
    key = flat + torch.arange(n, device=labels.device).reshape(n, 1) * span
    uniq, inv = torch.unique(key, return_inverse=True)
    first = torch.searchsorted(uniq, torch.arange(n, device=labels.device) * span)
    return (inv - first.reshape(n, 1)).reshape(labels.shape)


# --------------------------------------------------------------------------- checks
def _per_dim(value: Any, nd: int, name: str) -> tuple[int, ...]:
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,) * nd
    if len(items) != nd or any(isinstance(v, bool) or not isinstance(v, Integral) or v < 1 for v in items):
        raise ValueError(f"grid_superpixels: {name} must be an int >= 1 or {nd} of them (one per spatial dim), "
                         f"got {value!r}")
    return tuple(int(v) for v in items)


def _check_args(x: Any, n_segments: Any, compactness: Any, max_iter: Any, convert_lab: bool,
                min_size_factor: Any) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"slic_superpixels: x must be images shaped [N, C, H, W], got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if x.is_complex():
        raise TypeError("slic_superpixels: x must be real-valued")
    if not bool(torch.isfinite(x.float()).all()):
        raise ValueError("slic_superpixels: x contains NaN or Inf")
    if isinstance(n_segments, bool) or not isinstance(n_segments, Integral) or n_segments < 1:
        raise ValueError(f"slic_superpixels: n_segments must be an int >= 1, got {n_segments!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, Integral) or max_iter < 0:
        raise ValueError(f"slic_superpixels: max_iter must be an int >= 0, got {max_iter!r}")
    for name, v in (("compactness", compactness), ("min_size_factor", min_size_factor)):
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) or v < 0:
            raise ValueError(f"slic_superpixels: {name} must be a finite number >= 0, got {v!r}")

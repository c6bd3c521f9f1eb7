"""Heatmaps of attributions: channel reduction, scaling with outlier clipping, colour mapping.

For one map ``R`` (channels reduced, see ``REDUCTIONS``), the drawn value is

* ``mode="signed"``:   ``v = clip(R / s, −1, 1)``, red for v > 0, blue for v < 0, white for 0;
* ``mode="positive"``: ``v = clip(max(R, 0) / s, 0, 1)``, white → red;
* ``mode="absolute"``: ``v = clip(|R| / s, 0, 1)``, white → red;

with the scale ``s`` (``vmax``) the ``clip_percentile``-th percentile of the magnitudes drawn
(``|R|``, ``max(R, 0)`` or ``|R|``), so that a few extreme values do not wash out the picture
(Montavon et al. 2018, "Methods for interpreting and understanding deep neural networks", use
the same red/white/blue convention). ``scale="sample"`` computes ``s`` per map, ``scale="batch"``
once over all maps of the batch, so that colours compare across samples; ``vmax=`` fixes it.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from .colors import MODES, colorize
from .picture import Picture

REDUCTIONS = ("sum", "abs", "l2", "max_abs")
SCALES = ("sample", "batch")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


# --------------------------------------------------------------------------- checks and conversion
def as_tensor(value: Any, name: str) -> Tensor:
    """A detached CPU tensor (float64 stays float64, everything else becomes float32) from a tensor,
    numpy array, nested list or ``Explanation``."""
    if hasattr(value, "attributions") and hasattr(value, "method"):      # an Explanation
        value = value.attributions
    if isinstance(value, tuple):
        if len(value) != 1:
            raise TypeError(f"{name} is a tuple of {len(value)} tensors; pass one tensor (e.g. attributions[0])")
        value = value[0]
    if isinstance(value, Tensor):
        t = value.detach()
    elif isinstance(value, (np.ndarray, list)):
        t = torch.as_tensor(np.asarray(value))
    else:
        raise TypeError(f"{name} must be a tensor or numpy array, got {type(value).__name__}")
    if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32,
                                                                     torch.int64, torch.uint8, torch.bool)):
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    return t.to(device="cpu", dtype=torch.float64 if t.dtype == torch.float64 else torch.float32)


def _check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def _check_percentile(p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 100:
        raise ValueError(f"clip_percentile must be a number in (0, 100], got {p!r}")
    return float(p)


def check_size(size: Any) -> tuple[int, int] | None:
    """``size`` as ``(height, width)``: None, an int (square) or a pair of positive ints."""
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        raise ValueError(f"size must be an int or (height, width) of positive ints, got {size!r}")
    return int(size[0]), int(size[1])


# --------------------------------------------------------------------------- the steps
def reduce_channels(a: Tensor, reduce: str) -> Tensor:
    """``[..., C, H, W] → [..., H, W]``: ``"sum"`` Σ_c R_c, ``"abs"`` Σ_c |R_c|,
    ``"l2"`` (Σ_c R_c²)^½, ``"max_abs"`` max_c |R_c|."""
    _check_choice(reduce, "reduce", REDUCTIONS)
    if reduce == "sum":
        return a.sum(-3)
    if reduce == "abs":
        return a.abs().sum(-3)
    if reduce == "l2":
        return a.square().sum(-3).sqrt()
    return a.abs().amax(-3)


def drawn_values(maps: Tensor, mode: str) -> Tensor:
    if mode == "positive":
        return maps.clamp_min(0)
    if mode == "absolute":
        return maps.abs()
    return maps


def percentile_scale(magnitudes: Tensor, clip_percentile: float) -> float:
    """The ``clip_percentile``-th percentile of ``magnitudes`` (linear interpolation, numpy's
    default); the maximum when that percentile is 0 but some value is not; 0 for an all-zero map."""
    flat = magnitudes.reshape(-1).numpy().astype(np.float64)
    if flat.size == 0:
        return 0.0
    s = float(np.percentile(flat, clip_percentile))
    if s <= 0:
        s = float(flat.max())
    return s


def upsample(maps: Tensor, size: tuple[int, int], interpolation: str = "bilinear") -> Tensor:
    """``[N, h, w] → [N, H, W]`` (torch interpolation, ``align_corners=False``)."""
    _check_choice(interpolation, "interpolation", INTERPOLATIONS)
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    kwargs = {} if interpolation == "nearest" else {"align_corners": False}
    out = torch.nn.functional.interpolate(maps[:, None], size=size, mode=interpolation, **kwargs)[:, 0]
    if interpolation == "bicubic":          # bicubic overshoots: stay within the original range
        lo, hi = maps.amin(dim=(1, 2), keepdim=True), maps.amax(dim=(1, 2), keepdim=True)
        out = torch.maximum(torch.minimum(out, hi), lo)
    return out


def _as_maps(attributions: Any, reduce: str, name: str = "attributions") -> tuple[Tensor, bool]:
    """``[N, H, W]`` reduced maps and whether the input was a batch."""
    a = as_tensor(attributions, name)
    if a.dim() == 2:
        return a[None], False
    if a.dim() == 3:
        return reduce_channels(a, reduce)[None], False
    if a.dim() == 4:
        return reduce_channels(a, reduce), True
    raise ValueError(f"{name} must be [H, W], [C, H, W] or a batch [N, C, H, W], got shape {tuple(a.shape)}")


def normalized(attributions: Any, *, reduce: str = "sum", mode: str = "signed", clip_percentile: float = 99.5,
               scale: str = "sample", vmax: float | None = None, size: Any = None,
               interpolation: str = "bilinear") -> tuple[Tensor, list[float], bool]:
    """The drawn values ``[N, H, W]`` (in [-1, 1] or [0, 1]), the scale of each map, and whether
    the input was a batch. See ``heatmap`` for the arguments."""
    _check_choice(mode, "mode", MODES)
    _check_choice(scale, "scale", SCALES)
    p = _check_percentile(clip_percentile)
    size = check_size(size)
    if vmax is not None and (isinstance(vmax, bool) or not isinstance(vmax, (int, float)) or not vmax > 0):
        raise ValueError(f"vmax must be a positive number (the value drawn at full colour) or None, got {vmax!r}")
    maps, batched = _as_maps(attributions, reduce)
    if not torch.isfinite(maps).all():
        raise ValueError("attributions contain NaN or infinite values; heatmaps need finite values")
    drawn = drawn_values(maps, mode)
    if vmax is not None:
        scales = [float(vmax)] * maps.shape[0]
    elif scale == "batch":
        scales = [percentile_scale(drawn.abs(), p)] * maps.shape[0]
    else:
        scales = [percentile_scale(d.abs(), p) for d in drawn]
    if size is not None:
        drawn = upsample(drawn, size, interpolation)
    s = torch.tensor(scales, dtype=drawn.dtype).view(-1, 1, 1)
    values = torch.where(s > 0, drawn / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(drawn))
    lo = -1.0 if mode == "signed" else 0.0
    return values.clamp(lo, 1.0), scales, batched


# --------------------------------------------------------------------------- public
def heatmap(attributions: Any, *, reduce: str = "sum", mode: str = "signed", clip_percentile: float = 99.5,
            scale: str = "sample", cmap: Any = None, size: Any = None, vmax: float | None = None,
            interpolation: str = "bilinear") -> Picture | list[Picture]:
    """Attributions as a colour image (LRP convention: red positive, blue negative, white zero).

    Args:
        attributions: ``[H, W]``, ``[C, H, W]`` (one picture) or ``[N, C, H, W]`` (a list of
            pictures); a tensor, numpy array or ``Explanation``.
        reduce: how channels are combined: ``"sum"`` (Σ_c R_c, keeps the sign), ``"abs"``
            (Σ_c |R_c|), ``"l2"`` ((Σ_c R_c²)^½) or ``"max_abs"`` (max_c |R_c|).
        mode: ``"signed"`` (diverging map centred at 0), ``"positive"`` (only R > 0) or
            ``"absolute"`` (|R|).
        clip_percentile: values above this percentile of the magnitudes get full colour.
        scale: ``"sample"`` (each map its own scale) or ``"batch"`` (one scale for all maps).
        cmap: None (built-in ramps) or a matplotlib colormap (name or object).
        size: upsample the map to ``(height, width)`` (or an int) before colouring, e.g. a 7×7
            CAM onto 224×224, with ``interpolation`` (``"bilinear"``, ``"bicubic"``, ``"nearest"``).
        vmax: fix the value drawn at full colour (overrides the percentile).

    Returns:
        a ``Picture`` (``.info["vmax"]`` is the scale used), or a list of them for a batch.
    """
    values, scales, batched = normalized(attributions, reduce=reduce, mode=mode, clip_percentile=clip_percentile,
                                         scale=scale, vmax=vmax, size=size, interpolation=interpolation)
    rgb = colorize(values.numpy(), mode, cmap)
    pics = [Picture(rgb[i], {"vmax": scales[i], "mode": mode, "reduce": reduce, "scale": scale})
            for i in range(rgb.shape[0])]
    return pics if batched else pics[0]


def to_heatmap(attribution: Tensor, reduce: str = "sum", clip_percentile: float = 99.5) -> Tensor:
    """One sample's attribution ``[C, H, W]`` (or ``[H, W]``) as a signed map in [-1, 1]: channels
    combined by ``reduce``, divided by the ``clip_percentile``-th percentile of magnitudes and
    clipped (the values ``heatmap`` colours)."""
    a = as_tensor(attribution, "attribution")
    if a.dim() not in (2, 3):
        raise ValueError(f"attribution must be [C, H, W] or [H, W], got shape {tuple(a.shape)}")
    values, _, _ = normalized(a, reduce=reduce, mode="signed", clip_percentile=clip_percentile)
    return values[0]


def attribution_grid(inputs: Tensor, attributions: Mapping[str, Tensor], path: str | os.PathLike,
                     row_labels: Sequence[str] | None = None, cmap: Any = None, dpi: int | None = None,
                     **heatmap_options: Any) -> str:
    """Save a PNG grid: one row per sample; columns: the input, then one heatmap per method
    (signed, each map on its own scale). ``inputs`` is ``[N, C, H, W]`` (1 or 3 channels); each
    attribution is shaped like it (or channel-reduced). ``dpi`` is accepted for compatibility
    and ignored (the grid is drawn pixel-exact). Returns the path written."""
    from .compose import grid

    n = inputs.shape[0]
    names = list(attributions)
    for name in names:
        if as_tensor(attributions[name], f"attributions[{name!r}]").shape[0] != n:
            raise ValueError(f"attributions[{name!r}] has {attributions[name].shape[0]} samples, inputs have {n}")
    maps = {name: heatmap(_batch4(attributions[name], n), cmap=cmap, **heatmap_options) for name in names}
    rows = [[inputs[i], *(maps[name][i] for name in names)] for i in range(n)]
    picture = grid(rows, row_labels=row_labels, col_labels=["input", *(m.replace("_", " ") for m in names)])
    return picture.save(path)


def _batch4(a: Any, n: int) -> Tensor:
    t = as_tensor(a, "attributions")
    return t[:, None] if t.dim() == 3 else t

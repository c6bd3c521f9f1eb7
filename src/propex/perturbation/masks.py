"""Smooth random masks (RISE), low-resolution mask upsampling (meaningful perturbation), and
the option checks the perturbation methods share.

Masks act on the spatial dimensions of ``[N, C, H, W]`` (or ``[N, C, L]``) inputs and are
shared by all channels: a mask batch is ``[B, 1, *spatial]``.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum`` or a clear TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def check_real(value: Any, name: str, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float within the given bounds, or a clear error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
    bad = (not math.isfinite(v)
           or (low is not None and (v < low or (low_open and v == low)))
           or (high is not None and (v > high or (high_open and v == high))))
    if bad:
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    return v


def check_probability(p: Any, name: str = "p") -> float:
    """A keep probability strictly between 0 and 1."""
    return check_real(p, name, low=0.0, high=1.0, low_open=True, high_open=True)


def output_transform_fn(spec: Any, outputs: Tensor, method: str) -> Callable[[Tensor], Tensor] | None:
    """``None``, ``"softmax"``/``"log_softmax"``/``"sigmoid"`` or a callable, checked against the outputs."""
    if spec is None or callable(spec):
        return spec
    if spec in ("softmax", "log_softmax") and (outputs.dim() < 2 or outputs.shape[1] < 2):
        raise ValueError(f"{method}: output_transform={spec!r} normalises over the classes (dim 1), but the model "
                         f"output has shape {tuple(outputs.shape)}; pass output_transform=None to use the raw score")
    return {"softmax": lambda o: o.softmax(dim=1), "log_softmax": lambda o: o.log_softmax(dim=1),
            "sigmoid": torch.sigmoid}[spec]


def check_output_transform(spec: Any, allowed: tuple[str, ...] = ("softmax", "log_softmax", "sigmoid")) -> Any:
    if not (spec is None or callable(spec) or (isinstance(spec, str) and spec in allowed)):
        raise ValueError(f"output_transform must be None, a callable outputs -> outputs or one of "
                         f"{', '.join(map(repr, allowed))}; got {spec!r}")
    return spec


def spatial_shape(x: Tensor, method: str) -> tuple[int, ...]:
    """The spatial dims of an ``[N, C, H, W]`` or ``[N, C, L]`` input (masks are shared by channels)."""
    if x.dim() not in (3, 4):
        raise ValueError(
            f"{method} masks the spatial dimensions of inputs shaped [N, C, H, W] or [N, C, L]; "
            f"x has shape {tuple(x.shape)}. For tabular inputs [N, D] use lime, kernel_shap or "
            "feature_ablation with a feature_mask"
        )
    return tuple(x.shape[2:])


def grid_shape(grid: Any, n_spatial: int, name: str = "grid") -> tuple[int, ...]:
    """``grid`` (an int or one int per spatial dim) as a tuple of ``n_spatial`` ints >= 1."""
    if isinstance(grid, (tuple, list)):
        if len(grid) != n_spatial:
            raise ValueError(f"{name} must be an int or {n_spatial} ints (one per spatial dim), got {grid!r}")
        return tuple(check_positive_int(g, name) for g in grid)
    return (check_positive_int(grid, name),) * n_spatial


def upsample(low: Tensor, size: tuple[int, ...]) -> Tensor:
    """(Bi)linear upsampling of ``[B, 1, *low_res]`` masks to ``size`` (pixel-centre aligned)."""
    mode = "bilinear" if len(size) == 2 else "linear"
    if tuple(low.shape[2:]) == tuple(size):
        return low
    return F.interpolate(low, size=size, mode=mode, align_corners=False)


class RiseMasks:
    """``n`` random smooth masks as in RISE (Petsiuk, Das & Saenko 2018, sec. 3.2).

    Each mask is a binary grid of ``grid`` cells, every cell kept (1) with probability ``p``,
    upsampled (bi)linearly to ``(grid + 1) * cell`` pixels per dim, ``cell = ceil(size / grid)``,
    and cropped to the input size at a random offset in ``[0, cell)`` per dim. Only the small
    grids and offsets are stored; full-resolution masks are made on demand, a chunk at a time,
    so memory does not grow with ``n``. The masks are the same for every sample of a batch,
    and mask ``k`` depends only on the seed and ``k``'s position in the draw.
    """

    def __init__(self, n: int, size: tuple[int, ...], grid: tuple[int, ...], p: float,
                 generator: torch.Generator, device: torch.device, dtype: torch.dtype = torch.float32):
        self.n, self.size, self.grid, self.p = n, tuple(size), tuple(grid), p
        self.device, self.dtype = device, dtype
        self.cell = tuple(math.ceil(s / g) for s, g in zip(self.size, self.grid))
        self.up_size = tuple((g + 1) * c for g, c in zip(self.grid, self.cell))
        gen_device = generator.device
        self.grids = (torch.rand((n, *self.grid), generator=generator, device=gen_device) < p).to(device)
        self.shifts = torch.stack(
            [torch.randint(0, c, (n,), generator=generator, device=gen_device) for c in self.cell], dim=1
        ).to(device)

    def __len__(self) -> int:
        return self.n

    @property
    def pixels(self) -> int:
        return math.prod(self.size)

    def get(self, k: Tensor) -> Tensor:
        """Masks ``[B, 1, *size]`` for the mask indices ``k`` (LongTensor ``[B]``)."""
        unique, inverse = torch.unique(k.to(self.device), return_inverse=True)
        low = self.grids.index_select(0, unique).to(self.dtype).unsqueeze(1)
        up = upsample(low, self.up_size).clamp_(0.0, 1.0)                 # [U, 1, *up_size]; clamp: rounding
        shifts = self.shifts.index_select(0, unique)                      # [U, d]
        # crop by gathering along each spatial dim at the per-mask offsets
        for d, (length, cell) in enumerate(zip(self.size, self.cell)):
            dim = 2 + d
            idx = shifts[:, d:d + 1] + torch.arange(length, device=self.device)      # [U, length]
            shape = [up.shape[0]] + [1] * (up.dim() - 1)
            shape[dim] = length
            idx = idx.reshape(shape).expand(*up.shape[:dim], length, *up.shape[dim + 1:])
            up = up.gather(dim, idx)
        return up.index_select(0, inverse)

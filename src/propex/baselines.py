"""Baselines (references) for path and reference methods.

A ``baseline=`` option accepts:

* ``None``, ``0`` or ``"zeros"``: all zeros;
* a number: that constant everywhere;
* a tensor broadcastable to ``x`` (``[N, ...]``, ``[1, ...]`` or ``x.shape[1:]``);
* ``"uniform"``: uniform noise within each sample's value range (seeded by ``seed``);
* ``"blur"``: a Gaussian-blurred copy of the input, σ = max(H, W) / 10;
* for tuple inputs, a tuple with one of the above per input tensor;
* a ``list`` of several of the above: the method is averaged over the baselines.
"""
from __future__ import annotations

from numbers import Real
from typing import Any

import torch
from torch import Tensor

from .blur import gaussian_blur
from .inputs import check_finite


def uniform_noise(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Uniform noise in ``[min(x_i), max(x_i)]`` per sample ``i``."""
    flat = x.reshape(x.shape[0], -1)
    low = flat.min(dim=1).values.reshape(-1, *[1] * (x.dim() - 1))
    high = flat.max(dim=1).values.reshape(-1, *[1] * (x.dim() - 1))
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return low + (high - low) * u


def blurred(x: Tensor, sigma: float | None = None) -> Tensor:
    """A Gaussian-blurred copy of ``x`` (σ defaults to max(H, W) / 10)."""
    if sigma is None:
        sigma = max(x.shape[2:]) / 10 if x.dim() > 2 else 1.0
    return gaussian_blur(x, sigma)


def is_multi_baseline(spec: Any) -> bool:
    return isinstance(spec, list)


def resolve_baseline(spec: Any, inputs: tuple[Tensor, ...], was_tuple: bool,
                     generator: torch.Generator | None = None, name: str = "baseline") -> tuple[Tensor, ...]:
    """Turn one baseline spec into a tuple of tensors shaped like ``inputs``."""
    if was_tuple and isinstance(spec, tuple):
        if len(spec) != len(inputs):
            raise ValueError(f"{name}: x has {len(inputs)} tensors but the baseline tuple has {len(spec)}")
        return tuple(_one(s, t, generator, f"{name}[{i}]") for i, (s, t) in enumerate(zip(spec, inputs)))
    if isinstance(spec, tuple):
        raise TypeError(f"{name}: a tuple baseline is for tuple inputs; x is a single tensor. "
                        "Use a list to average over several baselines.")
    return tuple(_one(spec, t, generator, f"{name}[{i}]" if was_tuple else name) for i, t in enumerate(inputs))


def _one(spec: Any, x: Tensor, generator: torch.Generator | None, name: str) -> Tensor:
    if spec is None or (isinstance(spec, str) and spec == "zeros"):
        return torch.zeros_like(x)
    if isinstance(spec, Real) and not isinstance(spec, bool):
        value = float(spec)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{name} must be finite, got {spec}")
        return torch.full_like(x, value)
    if isinstance(spec, str):
        if spec == "uniform":
            return uniform_noise(x, generator)
        if spec == "blur":
            return blurred(x)
        raise ValueError(f"{name}={spec!r} is not a known baseline; use 'zeros', 'uniform', 'blur', a number or a tensor")
    if isinstance(spec, Tensor):
        check_finite(spec, name)
        if spec.is_floating_point() and not x.is_floating_point():
            raise TypeError(f"{name} is a floating-point tensor but x has dtype {x.dtype} (e.g. token ids): "
                            "give the baseline as values of the same kind (e.g. baseline token ids)")
        try:
            out = torch.broadcast_to(spec.detach().to(device=x.device, dtype=x.dtype), x.shape)
        except RuntimeError:
            raise ValueError(
                f"{name} of shape {tuple(spec.shape)} is not compatible with x of shape {tuple(x.shape)}; "
                f"pass [N, ...], [1, ...] or {tuple(x.shape[1:])}"
            ) from None
        return out
    raise TypeError(f"{name} must be None, a number, a tensor, 'zeros', 'uniform' or 'blur', got {type(spec).__name__}")

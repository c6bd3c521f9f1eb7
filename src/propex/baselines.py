"""Baselines (references) for path and reference methods.

A ``baseline=`` option accepts:

* ``None``, ``0`` or ``"zeros"``: all zeros;
* a number: that constant everywhere;
* a tensor broadcastable to ``x`` (``[N, ...]``, ``[1, ...]`` or ``x.shape[1:]``);
* ``"uniform"``: uniform noise within each sample's value range (seeded by ``seed``);
* ``"blur"``: a Gaussian-blurred copy of the input, σ = max(H, W) / 10 (``Blur(sigma)`` for another σ);
* ``"mean"``: each sample's per-channel mean (the mean over the dims after the channel dim 1,
  broadcast back; for ``[N, F]`` inputs the sample's mean over its F features);
* ``"min"`` / ``"max"``: each sample's minimum / maximum over all its features;
* ``"noise"``: the input plus Gaussian noise, ``x + ε``, ``ε ~ N(0, σ²)`` with
  σ = 0.2 · (x_max − x_min) per sample (seeded by ``seed``); ``Noise(sigma=...)`` for an
  absolute σ or ``Noise(noise_level=...)`` for another fraction of the value range;
* a callable ``x -> tensor`` (or a ``BaselineSpec`` such as ``Noise``/``Blur``), applied to
  the input tensor ``[N, ...]``; the result must broadcast to it;
* for tuple inputs, a tuple with one of the above per input tensor;
* a ``list`` of several of the above: the method is averaged over the baselines.

Perturbation methods (occlusion, feature ablation, RISE, ...) replace parts of ``x`` with
the baseline; gradient methods integrate along the path from it.
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


def channel_mean(x: Tensor) -> Tensor:
    """Each sample's per-channel mean over the dims after dim 1, broadcast to ``x``'s shape
    (``[N, F]`` inputs: each sample's mean over its features)."""
    dtype = x.dtype if x.is_floating_point() else torch.float32
    dims = tuple(range(2, x.dim())) if x.dim() > 2 else tuple(range(1, x.dim()))
    if not dims:
        return x.to(dtype).clone()
    return x.to(dtype).mean(dim=dims, keepdim=True).expand(x.shape)


def value_range(x: Tensor) -> Tensor:
    """Per-sample ``x_max - x_min``, shaped to broadcast against ``x``."""
    flat = x.reshape(x.shape[0], -1)
    return (flat.max(dim=1).values - flat.min(dim=1).values).reshape(-1, *[1] * (x.dim() - 1))


class BaselineSpec:
    """A parametrised baseline: ``make(x, generator)`` returns a tensor broadcastable to ``x``."""

    def make(self, x: Tensor, generator: torch.Generator | None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if v is not None)
        return f"{type(self).__name__}({args})"


class Noise(BaselineSpec):
    """``x + ε``, ``ε ~ N(0, σ²)``: ``sigma`` absolute, or ``noise_level`` · (x_max − x_min) per
    sample (default 0.2). Drawn from the method's seeded generator."""

    def __init__(self, sigma: float | None = None, noise_level: float | None = None):
        if sigma is not None and noise_level is not None:
            raise ValueError("Noise: give sigma (absolute) or noise_level (relative to the value range), not both")
        for label, value in (("sigma", sigma), ("noise_level", noise_level)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, Real)
                                      or not value >= 0 or value == float("inf")):
                raise ValueError(f"Noise: {label} must be a finite number >= 0, got {value!r}")
        self.sigma = None if sigma is None else float(sigma)
        self.noise_level = None if noise_level is None else float(noise_level)

    def make(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        if not x.is_floating_point():
            raise TypeError(f"a noise baseline needs floating-point inputs, x has dtype {x.dtype}")
        if self.sigma is not None:
            sigma: Tensor | float = self.sigma
        else:
            sigma = (0.2 if self.noise_level is None else self.noise_level) * value_range(x)
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return x + eps * sigma


class Blur(BaselineSpec):
    """A Gaussian-blurred copy of ``x`` with width ``sigma`` (pixels; default max(H, W) / 10)."""

    def __init__(self, sigma: float | None = None):
        if sigma is not None and (isinstance(sigma, bool) or not isinstance(sigma, Real) or not sigma >= 0
                                  or sigma == float("inf")):
            raise ValueError(f"Blur: sigma must be a finite number >= 0, got {sigma!r}")
        self.sigma = None if sigma is None else float(sigma)

    def make(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        if x.dim() < 3:
            raise ValueError(f"a blur baseline needs inputs shaped [N, C, L] or [N, C, H, W], got {tuple(x.shape)}")
        return blurred(x, self.sigma)


class LayerBaseline:
    """A baseline given in the space of the attributed layer (with ``layer=``), not of the inputs:
    e.g. zero embeddings for token ids (``propex.text``). ``value`` must broadcast to the layer's
    tensor ``[N, ...]``; IG interpolates to it and DeepLIFT uses it as the reference directly."""

    def __init__(self, value: Tensor):
        if not isinstance(value, Tensor) or not value.is_floating_point():
            raise TypeError(f"LayerBaseline needs a floating-point tensor, got {type(value).__name__}")
        check_finite(value, "baseline")
        self.value = value.detach()

    def resolve(self, space: Tensor, name: str = "baseline") -> Tensor:
        try:
            return torch.broadcast_to(self.value.to(device=space.device, dtype=space.dtype), space.shape)
        except RuntimeError:
            raise ValueError(f"{name}: the layer-space baseline of shape {tuple(self.value.shape)} does not "
                             f"broadcast to the layer's tensor {tuple(space.shape)}") from None

    def __repr__(self) -> str:
        return f"LayerBaseline(Tensor{tuple(self.value.shape)})"


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
            return Blur().make(x, generator)
        if spec == "mean":
            return channel_mean(x)
        if spec == "noise":
            return Noise().make(x, generator)
        if spec in ("min", "max"):   # per-sample minimum / maximum over all features (Quantus' "black"/"white")
            flat = x.reshape(x.shape[0], -1)
            ext = flat.amin(dim=1) if spec == "min" else flat.amax(dim=1)
            return ext.reshape(-1, *[1] * (x.dim() - 1)).expand(x.shape).clone()
        raise ValueError(f"{name}={spec!r} is not a known baseline; use 'zeros', 'uniform', 'blur', 'mean', "
                         "'noise', 'min', 'max', a number, a tensor or a callable")
    if isinstance(spec, BaselineSpec):
        return _check_made(spec.make(x, generator), x, name)
    if callable(spec) and not isinstance(spec, Tensor):
        return _check_made(spec(x), x, name)
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
    raise TypeError(f"{name} must be None, a number, a tensor, a callable or one of 'zeros', 'uniform', 'blur', "
                    f"'mean', 'noise'; got {type(spec).__name__}")


def _check_made(value: Any, x: Tensor, name: str) -> Tensor:
    """A baseline computed by a callable: a finite tensor broadcastable to ``x``."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: the baseline callable must return a tensor, it returned {type(value).__name__}")
    check_finite(value, name)
    try:
        return torch.broadcast_to(value.detach().to(device=x.device, dtype=x.dtype), x.shape)
    except RuntimeError:
        raise ValueError(f"{name}: the baseline callable returned shape {tuple(value.shape)}, which does not "
                         f"broadcast to x of shape {tuple(x.shape)}") from None

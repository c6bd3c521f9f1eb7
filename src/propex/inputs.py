"""Formatting and validation of the attributed inputs, baselines and forward kwargs.

Every public entry point turns ``x`` into a tuple of tensors once, here, so that the
engines never branch on "tensor or tuple".
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

InputLike = Tensor | Sequence[Tensor]


def as_input_tuple(x: Any, name: str = "x") -> tuple[tuple[Tensor, ...], bool]:
    """Return ``(inputs, was_tuple)`` after checking types, batch sizes and finiteness."""
    if isinstance(x, Tensor):
        inputs, was_tuple = (x,), False
    elif isinstance(x, (tuple, list)) and len(x) > 0 and all(isinstance(t, Tensor) for t in x):
        inputs, was_tuple = tuple(x), True
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor of shape [N, ...] or a tuple of such tensors, "
            f"got {_describe(x)}"
        )
    # Explanations are not differentiable w.r.t. x: detach, so that attributions never carry
    # (and keep alive) the autograd graph x came from. Tensors made under
    # torch.inference_mode() cannot take part in autograd at all; a clone made outside can.
    inputs = tuple(t.clone() if t.is_inference() else t.detach() for t in inputs)
    for i, t in enumerate(inputs):
        label = f"{name}[{i}]" if was_tuple else name
        if t.dim() == 0:
            raise ValueError(f"{label} must have a batch dimension [N, ...], got a scalar tensor")
        if t.is_floating_point() or t.is_complex():
            check_finite(t, label)
    n = inputs[0].shape[0]
    for i, t in enumerate(inputs[1:], start=1):
        if t.shape[0] != n:
            raise ValueError(
                f"all tensors of {name} must share the batch size N: {name}[0] has N={n}, "
                f"{name}[{i}] has N={t.shape[0]}"
            )
    return inputs, was_tuple


def check_finite(t: Tensor, name: str) -> None:
    """Raise a ValueError naming ``name`` if ``t`` holds NaN or Inf."""
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(torch.isinf(t).sum())
        raise ValueError(f"{name} contains {n_nan} NaN and {n_inf} Inf values; explanations need finite inputs")


def require_float(inputs: tuple[Tensor, ...], name: str, method: str) -> None:
    """Gradient methods need floating-point inputs (use ``layer=`` for token ids)."""
    for i, t in enumerate(inputs):
        if not t.is_floating_point():
            label = f"{name}[{i}]" if len(inputs) > 1 else name
            raise TypeError(
                f"{method} differentiates with respect to {label}, which has dtype {t.dtype}; "
                "pass floating-point inputs, or for integer inputs such as token ids pass "
                "layer=<the embedding layer> to attribute to that layer's output"
            )


def restore_structure(values: tuple[Tensor, ...], was_tuple: bool) -> Tensor | tuple[Tensor, ...]:
    """Give back a tuple if the user passed one, else the single tensor."""
    return values if was_tuple else values[0]


def index_kwargs(forward_kwargs: Mapping[str, Any], n: int, index: Tensor) -> dict[str, Any]:
    """Select rows ``index`` of every per-sample tensor (first dim == N) in ``forward_kwargs``.

    Tensors whose first dimension is not N, and non-tensors, are passed unchanged.
    """
    out = {}
    for key, value in forward_kwargs.items():
        if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == n:
            out[key] = value.index_select(0, index.to(value.device))
        else:
            out[key] = value
    return out


def check_forward_kwargs(forward_kwargs: Any) -> dict[str, Any]:
    if forward_kwargs is None:
        return {}
    if not isinstance(forward_kwargs, Mapping):
        raise TypeError(f"forward_kwargs must be a mapping of keyword arguments, got {_describe(forward_kwargs)}")
    return dict(forward_kwargs)


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items ({', '.join(type(v).__name__ for v in value[:4])})"
    return f"{type(value).__name__} {value!r}"[:200]

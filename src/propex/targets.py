"""Target resolution: which scalar of the model output each sample's explanation is about.

``target`` may be

* ``None``: the top class of each sample (argmax over dim 1 of the output on ``x``);
* an ``int``: that index of dim 1 for every sample;
* a sequence / 1-D tensor of N ints: one index per sample;
* a 2-D ``[N, T]`` tensor / nested sequence of ints: T targets per sample, explained
  together in one batched backward pass (attributions gain a dimension: ``[N, T, ...]``);
* a ``tuple`` of ints: a full index into the output dims after the batch dim (e.g.
  ``(class, row, col)`` for a segmentation output);
* a callable ``outputs -> [B]``: any scalar per sample (regression, a masked sum of a
  segmentation map, a similarity); it must act row by row;
* a list of N callables, one per sample, each ``output_row -> scalar`` (the
  pytorch-grad-cam convention, e.g. a per-sample mask).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor


class TargetSelector:
    """Selects ``[B, T]`` target scalars from a chunk's outputs given the chunk's sample indices."""

    def __init__(self, indices: Tensor | None, fn: Callable[[Tensor, Tensor], Tensor] | None,
                 multi: bool, full_index: tuple[int, ...] | None = None):
        self.indices = indices          # LongTensor [N, T] of class indices, or None for callables
        self._fn = fn
        self.multi = multi              # True when the user asked for T targets per sample
        self.full_index = full_index

    @property
    def n_targets(self) -> int:
        return 1 if self.indices is None else self.indices.shape[1]

    def select(self, outputs: Tensor, sample_idx: Tensor) -> Tensor:
        """Return the explained scalars ``[B, T]`` of ``outputs`` (``[B, ...]``)."""
        if self._fn is not None:
            return self._fn(outputs, sample_idx)
        if self.full_index is not None:
            return outputs[(slice(None), *self.full_index)].reshape(-1, 1)
        idx = self.indices.to(outputs.device).index_select(0, sample_idx.to(outputs.device))
        flat = outputs.reshape(outputs.shape[0], outputs.shape[1], -1)
        if flat.shape[2] != 1:
            raise ValueError(
                f"target: the model output has shape {tuple(outputs.shape)}, so a class index alone "
                "does not name one scalar; pass a tuple index such as (class, i, j) or a callable "
                "outputs -> [N] (e.g. lambda out: out[:, c].sum(dim=(1, 2)))"
            )
        return flat[:, :, 0].gather(1, idx)

    def public(self) -> Tensor | None:
        """The value stored in ``Explanation.target``: ``[N]`` or ``[N, T]`` class indices."""
        if self.indices is None:
            return None
        return self.indices if self.multi else self.indices[:, 0]


def resolve_target(target: Any, outputs: Tensor) -> TargetSelector:
    """Validate ``target`` against ``outputs`` (the model output on x) and build a selector."""
    n = outputs.shape[0]
    if target is None:
        if outputs.dim() < 2:
            raise ValueError(
                f"target=None picks the top class, but the model output has shape {tuple(outputs.shape)} "
                "(no class dimension); pass a callable target such as lambda out: out"
            )
        flat = outputs.reshape(n, outputs.shape[1], -1)
        if flat.shape[2] != 1:
            raise ValueError(
                f"target=None picks the top class, but the output has shape {tuple(outputs.shape)}; "
                "pass a tuple index or a callable target"
            )
        return TargetSelector(flat[:, :, 0].argmax(dim=1, keepdim=True).cpu(), None, multi=False)
    if callable(target):
        return TargetSelector(None, _callable_selector(target, n), multi=False)
    if isinstance(target, list) and len(target) > 0 and all(callable(t) for t in target):
        if len(target) != n:
            raise ValueError(f"target: a list of callables needs one per sample (N={n}), got {len(target)}")
        return TargetSelector(None, _per_sample_selector(target), multi=False)
    if isinstance(target, tuple) and len(target) > 0 and all(_is_int(t) for t in target):
        shape = tuple(outputs.shape[1:])
        if len(target) != len(shape) or any(not (-s <= int(t) < s) for t, s in zip(target, shape)):
            raise ValueError(
                f"target: the tuple index {target} does not fit the output shape {shape} (after the batch dim)"
            )
        return TargetSelector(None, None, multi=False, full_index=tuple(int(t) for t in target))
    if isinstance(target, bool):
        raise TypeError("target must be None, an int, N ints, an [N, T] tensor or a callable; got a bool")
    if _is_int(target):
        indices = torch.full((n, 1), int(target), dtype=torch.long)
        multi = False
    else:
        try:
            t = torch.as_tensor(target)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                "target must be None, an int, a sequence/tensor of N ints, an [N, T] tensor, a tuple index "
                f"or a callable; got {type(target).__name__}"
            ) from err
        if t.dtype.is_floating_point or t.dtype == torch.bool or t.dtype.is_complex:
            raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
        t = t.to(torch.long).cpu()
        if t.dim() == 0:
            indices, multi = t.reshape(1, 1).expand(n, 1).clone(), False
        elif t.dim() == 1:
            if t.shape[0] != n:
                raise ValueError(f"target has {t.shape[0]} entries but x has N={n} samples; pass one per sample")
            indices, multi = t.reshape(n, 1), False
        elif t.dim() == 2:
            if t.shape[0] != n or t.shape[1] < 1:
                raise ValueError(f"target of shape {tuple(t.shape)} must be [N, T] with N={n} and T >= 1")
            indices, multi = t, True
        else:
            raise ValueError(f"target must be 1-D [N] or 2-D [N, T], got shape {tuple(t.shape)}")
    if outputs.dim() < 2:
        raise ValueError(
            f"target: class indices need an output with a class dimension, but it has shape "
            f"{tuple(outputs.shape)}; pass a callable target"
        )
    n_classes = outputs.shape[1]
    if int(indices.min()) < 0 or int(indices.max()) >= n_classes:
        bad = indices[(indices < 0) | (indices >= n_classes)][0].item()
        raise ValueError(f"target {bad} is outside the model output's {n_classes} classes (valid: 0..{n_classes - 1})")
    return TargetSelector(indices, None, multi=multi)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) or (isinstance(v, Tensor) and v.dim() == 0 and not v.dtype.is_floating_point and v.dtype != torch.bool)


def _callable_selector(fn: Callable[[Tensor], Tensor], n: int) -> Callable[[Tensor, Tensor], Tensor]:
    def select(outputs: Tensor, sample_idx: Tensor) -> Tensor:
        value = fn(outputs)
        if not isinstance(value, Tensor):
            raise TypeError(f"target: the callable must return a tensor [N], it returned {type(value).__name__}")
        if value.dim() == 2 and value.shape[1] == 1:
            value = value[:, 0]
        if value.shape != (outputs.shape[0],):
            raise ValueError(
                f"target: the callable must return one scalar per sample, shape [{outputs.shape[0]}], "
                f"got shape {tuple(value.shape)}"
            )
        return value.reshape(-1, 1)
    return select


def _per_sample_selector(fns: Sequence[Callable[[Tensor], Tensor]]) -> Callable[[Tensor, Tensor], Tensor]:
    def select(outputs: Tensor, sample_idx: Tensor) -> Tensor:
        values = []
        for row, s in zip(outputs, sample_idx.tolist()):
            v = fns[s](row)
            if not isinstance(v, Tensor) or v.numel() != 1:
                raise ValueError(f"target[{s}]: each per-sample callable must return a scalar tensor")
            values.append(v.reshape(()))
        return torch.stack(values).reshape(-1, 1)
    return select

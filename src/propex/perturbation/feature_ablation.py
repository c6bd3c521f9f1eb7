"""Feature ablation: replace one group of features at a time by a baseline."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..api import register
from .base import PerturbationMethod, baseline_tensors, check_baseline_spec, check_seed
from .engine import PreparedPerturbation
from .masks import check_output_transform, output_transform_fn

MaskSpec = Any   # None | Tensor | tuple[Tensor, ...] | Callable[[x], mask]


@register
class FeatureAblation(PerturbationMethod):
    r"""Feature ablation: the drop of the target score when one group of features is replaced
    by the baseline, given to every element of that group.

    .. math:: a_i = f_y(x) - f_y\big(x_{[G(i) \leftarrow b]}\big)

    where :math:`G(i)` is the group (the set of elements sharing ``feature_mask``'s id) that
    contains element :math:`i`. Every element of a group receives the group's full score
    drop (as Captum's ``FeatureAblation``; divide by the group size for a per-element share).
    One forward pass per group (per id), for all samples at once.

    Zeiler & Fergus 2014 (occlusion of regions); Captum's ``FeatureAblation``; with
    superpixel groups see ``propex.perturbation.superpixels`` (SLIC: Achanta et al. 2012).

    Options:

    * ``feature_mask``: an integer tensor of group ids broadcastable to x, shared by all
      samples (``[1, ...]`` or without the batch dim, e.g. ``[1, 1, H, W]`` or ``[H, W]``
      for groups of pixels with all channels together) or per sample (``[N, ...]``); for
      tuple inputs a tuple with one mask per tensor (an id used in several tensors ablates
      them together, as in Captum); or a callable ``x -> mask`` (e.g.
      ``lambda x: slic_superpixels(x, 50)``). Default ``None``: every scalar of x is its own
      group (ids unique across tensors).
    * ``baseline``: ``0`` (default), a number, ``"mean"``, ``"blur"``, ``"noise"`` (seeded), a
      tensor, ... (see ``propex.baselines``).
    * ``output_transform``: ``None`` (raw scores), ``"softmax"``, ``"log_softmax"``,
      ``"sigmoid"`` or a callable. ``seed``; ``batch_size`` / ``memory_budget``: chunking.
    """

    name = "feature_ablation"
    aliases = ("ablation",)

    def __init__(self, model: Any, *, feature_mask: MaskSpec = None, baseline: Any = 0.0,
                 output_transform: Any = None, seed: int | None = None, **options: Any):
        _check_mask_types(feature_mask)
        check_baseline_spec(baseline)
        check_output_transform(output_transform)
        seed = check_seed(seed)
        super().__init__(model, feature_mask=feature_mask, baseline=baseline, output_transform=output_transform,
                         seed=seed, **options)
        self.feature_mask, self.baseline = feature_mask, baseline
        self.output_transform, self.seed = output_transform, seed

    def _attribute(self, prep: PreparedPerturbation) -> tuple[Tensor, ...]:
        inputs = prep.inputs
        masks = feature_masks(self.feature_mask, inputs, prep.was_tuple)
        ids = torch.unique(torch.cat([m.reshape(-1) for m in masks]))                       # sorted group ids
        groups = [torch.searchsorted(ids, m.contiguous()) for m in masks]                    # group index per element
        bases = baseline_tensors(self.baseline, prep, self.seed)
        transform = output_transform_fn(self.output_transform, prep.outputs, self.name)
        group_k = torch.arange(ids.numel(), device=prep.device)

        def perturb(k: Tensor, s: Tensor) -> tuple[Tensor, ...]:
            rows = []
            for x, b, g in zip(inputs, bases, groups):
                rows_g = g.index_select(0, s) if g.shape[0] > 1 else g
                hit = rows_g == group_k.index_select(0, k).reshape(-1, *[1] * (g.dim() - 1))   # [B, ...]
                rows.append(torch.where(hit, b.index_select(0, s), x.index_select(0, s)))
            return tuple(rows)

        scores = self.engine.evaluate(prep, ids.numel(), perturb, output_transform=transform)    # [N, K, T]
        f_x = prep.target_values(transform)                                                      # [N, T]
        diff = (f_x.unsqueeze(1) - scores).transpose(1, 2)                                       # [N, T, K]
        n, t = diff.shape[:2]
        out = []
        for x, g in zip(inputs, groups):
            idx = g.expand(n, *g.shape[1:]).reshape(n, 1, -1).expand(n, t, -1)
            a = diff.gather(2, idx).reshape(n, t, *g.shape[1:])
            out.append(a.expand(n, t, *x.shape[1:]).contiguous())
        return tuple(out)


def feature_masks(spec: MaskSpec, inputs: tuple[Tensor, ...], was_tuple: bool) -> tuple[Tensor, ...]:
    """``feature_mask`` as one LongTensor per input, each with x's number of dims, leading dim 1 or N,
    on x's device; checked against the inputs' shapes."""
    if callable(spec) and not isinstance(spec, Tensor):
        spec = spec(inputs if was_tuple else inputs[0])
        if isinstance(spec, list):
            spec = tuple(spec)
    if spec is None:
        out, offset = [], 0
        for x in inputs:
            per = x[:1].numel()
            out.append(torch.arange(offset, offset + per, device=x.device).reshape(1, *x.shape[1:]))
            offset += per
        return tuple(out)
    if was_tuple:
        if not isinstance(spec, tuple) or len(spec) != len(inputs):
            got = f"a tuple of {len(spec)}" if isinstance(spec, tuple) else type(spec).__name__
            raise ValueError(f"feature_mask: x is a tuple of {len(inputs)} tensors, so feature_mask must be a tuple "
                             f"with one mask per tensor; got {got}")
        specs = spec
    else:
        if isinstance(spec, tuple):
            if len(spec) != 1:
                raise ValueError(f"feature_mask: a tuple of {len(spec)} masks is for tuple inputs; x is one tensor")
            spec = spec[0]
        specs = (spec,)
    out = []
    for i, (m, x) in enumerate(zip(specs, inputs)):
        label = f"feature_mask[{i}]" if was_tuple else "feature_mask"
        out.append(_one_mask(m, x, label))
    return tuple(out)


def _one_mask(m: Any, x: Tensor, label: str) -> Tensor:
    if not isinstance(m, Tensor):
        raise TypeError(f"{label} must be an integer tensor of group ids, got {type(m).__name__}")
    if m.dtype.is_floating_point or m.dtype.is_complex or m.dtype == torch.bool:
        raise TypeError(f"{label} must hold integer group ids, got dtype {m.dtype}")
    n = x.shape[0]
    ok = m.dim() <= x.dim()
    if ok:
        full = (1,) * (x.dim() - m.dim()) + tuple(m.shape)
        ok = all(a in (1, b) for a, b in zip(full[1:], x.shape[1:])) and full[0] in (1, n)
    if not ok:
        raise ValueError(f"{label} of shape {tuple(m.shape)} does not broadcast to x of shape {tuple(x.shape)}: "
                         f"use [1, ...] (shared by all samples) or [N={n}, ...] (per sample) with each dim equal to "
                         f"x's or 1, e.g. {(1, 1, *x.shape[2:]) if x.dim() > 2 else (1, *x.shape[1:])}")
    return m.detach().to(device=x.device, dtype=torch.long).reshape(full)


def _check_mask_types(spec: MaskSpec) -> None:
    items = spec if isinstance(spec, (tuple, list)) else (spec,)
    for i, m in enumerate(items):
        label = f"feature_mask[{i}]" if isinstance(spec, (tuple, list)) else "feature_mask"
        if m is None and not isinstance(spec, (tuple, list)):
            continue
        if isinstance(m, Tensor):
            if m.dtype.is_floating_point or m.dtype.is_complex or m.dtype == torch.bool:
                raise TypeError(f"{label} must hold integer group ids, got dtype {m.dtype}")
        elif not (callable(m) and not isinstance(spec, (tuple, list))):
            raise TypeError(f"{label} must be an integer tensor of group ids, a tuple of them (tuple inputs) or a "
                            f"callable x -> mask; got {type(m).__name__}")


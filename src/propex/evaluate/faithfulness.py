"""Scalar faithfulness metrics: infidelity, faithfulness correlation and sensitivity-n.

Each evaluates all its perturbed copies of x — every sample, every draw — through the
perturbation engine in memory-bounded chunks, with the unperturbed score taken from the one
forward pass on x. Random draws (noise, squares, subsets) come from a counter-based hash of
``(seed, draw, sample, feature)``, so they are reproducible, identical on every device and
independent of the chunk size. The curves (pixel flipping, region perturbation, insertion,
deletion, AOPC) are in ``propex.evaluate.curves``, ROAD in ``propex.evaluate.road``.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ..model_call import model_guard
from ..perturbation.engine import resolved_baseline
from ._common import (check_attributions, check_choice, check_inputs, check_int, check_number, check_seed,
                      generator_for, hashed_normal, hashed_uniform, output_transform, prepare, target_scores)
from .curves import _check_patch


# --------------------------------------------------------------------------- infidelity
def infidelity(model: Any, x: Tensor, attributions: Any, target: Any = None, *, perturbation: Any = "noise",
               n_perturbations: int = 10, sigma: float = 0.1, patch: Any = 4, baseline: Any = "zeros",
               normalize: bool = False, softmax: bool = False, seed: int = 0, batch_size: int | None = None,
               memory_budget: Any = None, forward_kwargs: dict[str, Any] | None = None) -> Tensor:
    """``[N]`` infidelity (Yeh et al. 2019, "On the (In)fidelity and Sensitivity of Explanations")::

        INFD(a, f, x) = E_I[(Iᵀ a − (f_c(x) − f_c(x − I)))²]

    estimated over ``n_perturbations`` draws of I per sample (lower is better). With
    ``normalize=True`` the attributions are first scaled by the optimal
    ``β = E[Iᵀa · Δf] / E[(Iᵀa)²]`` (Yeh's scale-invariant variant, Captum's ``normalize``).

    ``perturbation``:

    * ``"noise"``: ``I ~ N(0, sigma²)`` on every feature (absolute ``sigma``, default 0.1);
    * ``"square"``: a ``patch``-sized square at a uniformly random position (images
      ``[N, C, H, W]``) is replaced by ``baseline`` on all channels, ``I = (x − b) ⊙ square``;
    * a tensor ``[N, K, ...]`` of given perturbations I (``K = n_perturbations`` is then taken
      from it);
    * a callable ``(x_rows, k, s) -> I_rows``: the perturbations of rows (draw ``k``, sample
      ``s``) of one chunk, ``x_rows = x[s]``.

    The attributions are broadcast to x (a channel-reduced map gives every channel of a pixel
    the pixel's relevance).
    """
    x = check_inputs(x)
    a = check_attributions(attributions, x)
    seed = check_seed(seed)
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be True or False, got {normalize!r}")
    n = x.shape[0]
    given: Tensor | None = None
    fn: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None
    if isinstance(perturbation, Tensor):
        given = perturbation.detach().to(device=x.device, dtype=x.dtype)
        if given.dim() != x.dim() + 1 or given.shape[0] != n or tuple(given.shape[2:]) != tuple(x.shape[1:]):
            raise ValueError(f"perturbation: a tensor of perturbations must be [N, K, ...] = "
                             f"{(n, 'K', *x.shape[1:])}, got {tuple(given.shape)}")
        if not bool(torch.isfinite(given).all()):
            raise ValueError("perturbation contains NaN or Inf values")
        n_perturbations = given.shape[1]
        kind = "tensor"
    elif callable(perturbation):
        fn, kind = perturbation, "callable"
    else:
        kind = check_choice(perturbation, "perturbation", ("noise", "square"))
    k_total = check_int(n_perturbations, "n_perturbations")
    sigma = check_number(sigma, "sigma", minimum=0.0)
    transform = output_transform(softmax)
    flat_a = a.reshape(n, -1)
    dots = torch.zeros(k_total, n, dtype=torch.float64, device=x.device)
    with model_guard(model):
        engine, prep = prepare(model, x, target, forward_kwargs=forward_kwargs, batch_size=batch_size,
                               memory_budget=memory_budget)
        xs = prep.inputs[0]
        if kind == "square":
            if x.dim() != 4:
                raise ValueError(f"perturbation='square' needs images x [N, C, H, W], got shape {tuple(x.shape)}")
            ph, pw = _check_patch(patch, x)
            (base,) = resolved_baseline(baseline, prep, generator_for(seed + 1, x.device))
            h, w = x.shape[2:]

        def perturb(k: Tensor, s: Tensor) -> Tensor:
            rows = xs.index_select(0, s)
            if kind == "noise":
                pert = sigma * hashed_normal(seed, k * n + s, rows[0].numel(), dtype=rows.dtype).reshape(rows.shape)
            elif kind == "square":
                u = hashed_uniform(seed, k * n + s, 2, stream=7, dtype=torch.float64)
                top = (u[:, 0] * (h - ph + 1)).floor().to(torch.long).clamp(max=h - ph)
                left = (u[:, 1] * (w - pw + 1)).floor().to(torch.long).clamp(max=w - pw)
                ii = torch.arange(h, device=rows.device)
                jj = torch.arange(w, device=rows.device)
                inside = (((ii[None] >= top[:, None]) & (ii[None] < top[:, None] + ph))[:, :, None]
                          & ((jj[None] >= left[:, None]) & (jj[None] < left[:, None] + pw))[:, None, :])
                pert = (rows - base.index_select(0, s)) * inside[:, None].to(rows.dtype)
            elif kind == "tensor":
                pert = given[s, k]
            else:
                pert = fn(rows, k, s)
                if not isinstance(pert, Tensor) or pert.shape != rows.shape:
                    raise ValueError(f"perturbation: the callable must return perturbations shaped like its rows "
                                     f"{tuple(rows.shape)}, got "
                                     f"{tuple(pert.shape) if isinstance(pert, Tensor) else type(pert).__name__}")
                pert = pert.to(rows.dtype)
            dots[k, s] = (pert.reshape(pert.shape[0], -1).to(torch.float64)
                          * flat_a.index_select(0, s).to(torch.float64)).sum(dim=1)
            return rows - pert

        scores = engine.evaluate(prep, k_total, perturb, output_transform=transform)[:, :, 0]   # [N, K]
        f_x = target_scores(engine, prep, transform)
    delta = (f_x[:, None] - scores).to(torch.float64)                                          # f(x) − f(x − I)
    ia = dots.t()                                                                               # [N, K]
    if normalize:
        beta = (ia * delta).mean(dim=1) / (ia * ia).mean(dim=1)
        beta = torch.where(torch.isfinite(beta), beta, torch.zeros_like(beta))
        ia = beta[:, None] * ia
    return ((ia - delta) ** 2).mean(dim=1).to(scores.dtype)


# --------------------------------------------------------------------------- subset correlations
def faithfulness_correlation(model: Any, x: Tensor, attributions: Any, target: Any = None, *,
                             subset_size: int | None = None, n_subsets: int = 100, baseline: Any = "zeros",
                             softmax: bool = False, seed: int = 0, batch_size: int | None = None,
                             memory_budget: Any = None, forward_kwargs: dict[str, Any] | None = None) -> Tensor:
    """``[N]`` faithfulness correlation (Bhatt et al. 2020, "Evaluating and Aggregating
    Feature-based Model Explanations")::

        μ_F = corr_{S ⊂ features, |S| = subset_size} ( Σ_{i∈S} a_i ,  f_c(x) − f_c(x_{S ← b}) )

    the Pearson correlation, over ``n_subsets`` uniformly random subsets S (default 100), between
    the attribution mass of S and the score drop when S is replaced by ``baseline``. Features are
    the elements of the attribution map as given (a channel-reduced map: pixels).
    ``subset_size`` defaults to min(224, F) (Quantus' default). Higher is better; a sample whose
    attribution sums or score drops do not vary gives NaN (the correlation is undefined).
    """
    x = check_inputs(x)
    amap = check_attributions(attributions, x, broadcast=False)
    f = amap[0].numel()
    size = min(224, f) if subset_size is None else check_int(subset_size, "subset_size", 1, f)
    return _subset_correlation(model, x, amap, target, [size], n_subsets, baseline, softmax, seed, batch_size,
                               memory_budget, forward_kwargs)[:, 0]


def sensitivity_n(model: Any, x: Tensor, attributions: Any, target: Any = None, *, n: int | Sequence[int] = 10,
                  n_subsets: int = 100, baseline: Any = "zeros", softmax: bool = False, seed: int = 0,
                  batch_size: int | None = None, memory_budget: Any = None,
                  forward_kwargs: dict[str, Any] | None = None) -> Tensor:
    """Sensitivity-n (Ancona et al. 2018, "Towards better understanding of gradient-based
    attribution methods for deep neural networks")::

        S_n = corr_{S, |S| = n} ( Σ_{i∈S} R_i ,  f_c(x) − f_c(x_{S ← 0}) )

    the Pearson correlation, over ``n_subsets`` random subsets of n features, between the sum of
    their attributions and the score drop when they are removed (to ``baseline``, zeros in the
    paper). A method satisfies sensitivity-n when S_n = 1. ``n``: an int (returns ``[N]``) or a
    sequence of subset sizes (returns ``[N, len(n)]``, all evaluated in one batched pass).
    """
    x = check_inputs(x)
    amap = check_attributions(attributions, x, broadcast=False)
    f = amap[0].numel()
    single = not isinstance(n, (list, tuple))
    sizes = [check_int(v, "n", 1, f) for v in ([n] if single else n)]
    if not sizes:
        raise ValueError("n must be an int or a non-empty sequence of subset sizes")
    out = _subset_correlation(model, x, amap, target, sizes, n_subsets, baseline, softmax, seed, batch_size,
                              memory_budget, forward_kwargs)
    return out[:, 0] if single else out


def _subset_correlation(model: Any, x: Tensor, amap: Tensor, target: Any, sizes: list[int], n_subsets: Any,
                        baseline: Any, softmax: Any, seed: Any, batch_size: Any, memory_budget: Any,
                        forward_kwargs: Any) -> Tensor:
    """``[N, len(sizes)]`` Pearson correlations between subset attribution sums and score drops."""
    n_subsets = check_int(n_subsets, "n_subsets", minimum=2)
    seed = check_seed(seed)
    transform = output_transform(softmax)
    n = x.shape[0]
    flat_a = amap.reshape(n, -1)
    n_feat = flat_a.shape[1]
    size_of = torch.tensor(sizes, device=x.device).repeat_interleave(n_subsets)   # draw k -> subset size
    k_total = len(sizes) * n_subsets
    max_size = max(sizes)
    sums = torch.zeros(k_total, n, dtype=torch.float64, device=x.device)
    with model_guard(model):
        engine, prep = prepare(model, x, target, forward_kwargs=forward_kwargs, batch_size=batch_size,
                               memory_budget=memory_budget)
        (base,) = resolved_baseline(baseline, prep, generator_for(seed + 1, x.device))
        xs = prep.inputs[0]

        def perturb(k: Tensor, s: Tensor) -> Tensor:
            keys = hashed_uniform(seed, k * n + s, n_feat)
            # the |S| smallest keys of each row form a uniformly random subset of that size
            if len(sizes) == 1 and 2 * sizes[0] > n_feat:     # cheaper: the F − |S| largest keys are kept
                kept = torch.topk(keys, n_feat - sizes[0], dim=1, largest=True, sorted=False).indices
                chosen = torch.ones_like(keys, dtype=torch.bool).scatter_(1, kept, False)
            elif len(sizes) == 1:
                order = torch.topk(keys, sizes[0], dim=1, largest=False, sorted=False).indices
                chosen = torch.zeros_like(keys, dtype=torch.bool).scatter_(1, order, True)
            else:
                order = torch.topk(keys, max_size, dim=1, largest=False, sorted=True).indices
                take = torch.arange(max_size, device=keys.device)[None, :] < size_of.index_select(0, k)[:, None]
                chosen = torch.zeros_like(keys, dtype=torch.bool).scatter_(1, order, take)   # [B, F]
            sums[k, s] = (flat_a.index_select(0, s) * chosen).sum(dim=1).to(torch.float64)
            mask = chosen.reshape(-1, *amap.shape[1:])
            return torch.where(mask, base.index_select(0, s), xs.index_select(0, s))

        scores = engine.evaluate(prep, k_total, perturb, output_transform=transform)[:, :, 0]   # [N, K]
        f_x = target_scores(engine, prep, transform)
    drops = (f_x[:, None] - scores).to(torch.float64).reshape(n, len(sizes), n_subsets)
    att = sums.t().reshape(n, len(sizes), n_subsets)
    return pearson(att, drops).to(scores.dtype)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation along the last dim (NaN where either side is constant)."""
    a = a - a.mean(dim=-1, keepdim=True)
    b = b - b.mean(dim=-1, keepdim=True)
    den = torch.sqrt((a * a).sum(dim=-1) * (b * b).sum(dim=-1))
    return torch.where(den > 0, (a * b).sum(dim=-1) / torch.where(den > 0, den, torch.ones_like(den)),
                       torch.full_like(den, math.nan))


__all__ = ["infidelity", "faithfulness_correlation", "sensitivity_n"]

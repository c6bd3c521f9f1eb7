"""Perturbation curves: pixel flipping, region perturbation, insertion / deletion, and AOPC.

All of them rank the features of x by their attribution, replace (or, for insertion, reveal)
them in that order, step by step, and record the explained score after every step. Every
copy of x the curve needs — all samples, all steps — is evaluated through the perturbation
engine in memory-bounded chunks (one forward pass per chunk, never one per step); the
unperturbed point k = 0 reuses the forward pass on x itself.

Features are the elements of the attribution map as given: a map shaped like x ranks every
element (every channel of every pixel) on its own; a channel-reduced map ``[N, 1, H, W]`` or
``[N, H, W]`` ranks pixels, and a pixel's channels are replaced together. Ties are broken by
position (the first feature in row-major order first), so results are deterministic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..model_call import model_guard
from ..perturbation.engine import resolved_baseline
from ._common import (check_attributions, check_choice, check_fraction, check_inputs, check_int, check_seed,
                      generator_for, output_transform, prepare, target_scores)

ORDERS = ("morf", "lerf", "random")


@dataclass
class PerturbationCurve:
    """The scores of a perturbation curve.

    Attributes:
        scores: ``[N, K+1]`` explained score after k = 0 .. K steps (k = 0: x unperturbed; for
            insertion: nothing inserted yet, i.e. the baseline).
        fractions: ``[K+1]`` fraction of the features perturbed (inserted) after k steps (for
            region perturbation: the fraction of regions).
        order: ``"morf"``, ``"lerf"`` or ``"random"``.
        metric: the name of the curve (``"pixel_flipping"``, ``"region_perturbation"``, ...).
    """

    scores: Tensor
    fractions: Tensor
    order: str
    metric: str

    @property
    def aopc(self) -> Tensor:
        """``[N]`` area over the perturbation curve (Samek et al. 2017):
        ``AOPC = 1/(K+1) Σ_{k=0..K} (f(x^(0)) − f(x^(k)))``. Large for a faithful MoRF curve."""
        return (self.scores[:, :1] - self.scores).mean(dim=1)

    @property
    def auc(self) -> Tensor:
        """``[N]`` area under the curve over the fractions (trapezoidal rule; Petsiuk et al. 2018).
        Small for a faithful deletion (MoRF) curve, large for a faithful insertion curve."""
        return torch.trapezoid(self.scores, self.fractions.to(self.scores.dtype), dim=1)

    @property
    def drops(self) -> Tensor:
        """``[N, K]`` ``f(x^(0)) − f(x^(k))`` for k = 1 .. K (Quantus' RegionPerturbation values)."""
        return self.scores[:, :1] - self.scores[:, 1:]

    def __repr__(self) -> str:
        return (f"PerturbationCurve(metric={self.metric!r}, order={self.order!r}, N={self.scores.shape[0]}, "
                f"K={self.scores.shape[1] - 1}, mean aopc={float(self.aopc.mean()):.4g}, "
                f"mean auc={float(self.auc.mean()):.4g})")


# --------------------------------------------------------------------------- public metrics
def pixel_flipping(model: Any, x: Tensor, attributions: Any, target: Any = None, *, step: int | None = None,
                   n_steps: int | None = None, fraction: float = 1.0, order: str = "morf", baseline: Any = "zeros",
                   softmax: bool = False, seed: int = 0, batch_size: int | None = None, memory_budget: Any = None,
                   forward_kwargs: dict[str, Any] | None = None) -> PerturbationCurve:
    """Pixel flipping (Bach et al. 2015; Samek et al. 2017, "Evaluating the visualization of
    what a deep neural network has learned").

    With the features ranked by attribution (MoRF: most relevant first; LeRF: least relevant
    first; or a seeded random order), step k replaces the first ``t_k`` features by the
    baseline ``b``::

        x^(k) = b ⊙ [rank < t_k] + x ⊙ [rank ≥ t_k],   scores[:, k] = f_c(x^(k)),  k = 0 .. K

    with ``t_k = min(k · step, F_max)`` (``step`` features per step; default 1) or, with
    ``n_steps``, ``t_k = floor(k · F_max / n_steps)``; ``F_max = ceil(fraction · F)``.

    Args:
        model, x, attributions, target: the model, inputs ``[N, ...]``, their attributions
            (shaped like x, or channel-reduced ``[N, 1, H, W]`` / ``[N, H, W]``: pixels) and the
            explained output (``propex.targets``; None: top class on x).
        step / n_steps: features per step, or the number of steps (not both).
        fraction: the fraction of the features perturbed at the end of the curve, in (0, 1].
        order: ``"morf"``, ``"lerf"`` or ``"random"`` (seeded by ``seed``).
        baseline: ``"zeros"``, ``"min"`` (per-sample minimum, Quantus' "black"), ``"max"``,
            ``"mean"``, ``"blur"``, ``"noise"``, ``"uniform"``, a number or a tensor.
        softmax: score the softmax probability instead of the raw output.

    Returns:
        a ``PerturbationCurve`` (``.scores [N, K+1]``, ``.fractions``, ``.aopc``, ``.auc``).
    """
    return _ranked_curve("pixel_flipping", model, x, attributions, target, step=step, n_steps=n_steps,
                         fraction=fraction, order=order, baseline=baseline, softmax=softmax, seed=seed,
                         batch_size=batch_size, memory_budget=memory_budget, forward_kwargs=forward_kwargs,
                         default_step=1)


def deletion(model: Any, x: Tensor, attributions: Any, target: Any = None, *, n_steps: int | None = None,
             step: int | None = None, fraction: float = 1.0, baseline: Any = "zeros", softmax: bool = True,
             seed: int = 0, batch_size: int | None = None, memory_budget: Any = None,
             forward_kwargs: dict[str, Any] | None = None) -> PerturbationCurve:
    """Deletion curve (Petsiuk et al. 2018, RISE): remove the most relevant features first (to
    ``baseline``, zeros by default) and record the class probability (``softmax=True``) after each
    of ``n_steps`` steps (default 100, at most one step per feature; or ``step`` features per
    step). ``.auc`` is the deletion AUC (lower is better). Same options as ``pixel_flipping`` with MoRF order."""
    return _ranked_curve("deletion", model, x, attributions, target, step=step, n_steps=n_steps,
                         fraction=fraction, order="morf", baseline=baseline, softmax=softmax, seed=seed,
                         batch_size=batch_size, memory_budget=memory_budget, forward_kwargs=forward_kwargs,
                         default_step=None)


def insertion(model: Any, x: Tensor, attributions: Any, target: Any = None, *, n_steps: int | None = None,
              step: int | None = None, fraction: float = 1.0, baseline: Any = "blur", softmax: bool = True,
              seed: int = 0, batch_size: int | None = None, memory_budget: Any = None,
              forward_kwargs: dict[str, Any] | None = None) -> PerturbationCurve:
    """Insertion curve (Petsiuk et al. 2018, RISE): start from ``baseline`` (a blurred copy of x
    by default) and insert the features of x, most relevant first::

        x^(k) = x ⊙ [rank < t_k] + b ⊙ [rank ≥ t_k],   scores[:, k] = f_c(x^(k)),  k = 0 .. K

    so ``scores[:, 0]`` is the score of the baseline and ``scores[:, K]`` (fraction 1) that of x.
    ``.auc`` is the insertion AUC (higher is better)."""
    return _ranked_curve("insertion", model, x, attributions, target, step=step, n_steps=n_steps,
                         fraction=fraction, order="morf", baseline=baseline, softmax=softmax, seed=seed,
                         batch_size=batch_size, memory_budget=memory_budget, forward_kwargs=forward_kwargs,
                         default_step=None, insert=True)


def region_perturbation(model: Any, x: Tensor, attributions: Any, target: Any = None, *, patch: Any = 8,
                        n_regions: int | None = None, fraction: float = 1.0, order: str = "morf",
                        baseline: Any = "zeros", softmax: bool = False, seed: int = 0,
                        batch_size: int | None = None, memory_budget: Any = None,
                        forward_kwargs: dict[str, Any] | None = None) -> PerturbationCurve:
    """Region perturbation (Samek et al. 2017): x ``[N, C, H, W]`` is tiled into non-overlapping
    ``patch``-sized regions (a grid centred on the image: when H or W is not a multiple of the
    patch, the border regions are cut, as Quantus' symmetric padding does); a region's relevance
    is the sum of its attributions (over all its channels); the regions are removed to
    ``baseline`` in MoRF / LeRF / random order, one per step::

        scores[:, k] = f_c(x with the k first regions replaced by b),   k = 0 .. K

    ``K = n_regions`` (default: all regions, limited by ``fraction`` of them). ``.fractions`` are
    the fractions of regions removed; ``.aopc`` is Samek's AOPC; ``.drops`` are
    ``f(x) − f(x^(k))`` (Quantus' values, which have no k = 0 point).
    """
    x = check_inputs(x)
    if x.dim() != 4:
        raise ValueError(f"region_perturbation needs images x [N, C, H, W], got shape {tuple(x.shape)}")
    amap = check_attributions(attributions, x, broadcast=False)
    ph, pw = _check_patch(patch, x)
    order = check_choice(order, "order", ORDERS)
    fraction = check_fraction(fraction, "fraction")
    seed = check_seed(seed)
    h, w = x.shape[2:]
    # centred grid: region ids of every pixel
    off_h, off_w = (-(h % ph)) % ph // 2, (-(w % pw)) % pw // 2
    rows = torch.div(torch.arange(h, device=x.device) + off_h, ph, rounding_mode="floor")
    cols = torch.div(torch.arange(w, device=x.device) + off_w, pw, rounding_mode="floor")
    n_bw = int(cols[-1]) + 1
    n_regions_total = (int(rows[-1]) + 1) * n_bw
    rid = rows[:, None] * n_bw + cols[None, :]                      # [H, W]
    n = x.shape[0]
    sums = torch.zeros(n, n_regions_total, dtype=amap.dtype, device=x.device)
    sums.index_add_(1, rid.reshape(-1), amap.sum(dim=1).reshape(n, -1))
    region_rank = _rank(sums, order, seed)                         # [N, P]
    k_max = math.ceil(fraction * n_regions_total)
    if n_regions is not None:
        k_max = min(k_max, check_int(n_regions, "n_regions"))
    rank = region_rank[:, rid.reshape(-1)].reshape(n, 1, h, w)     # rank of each pixel's region
    thresholds = torch.arange(k_max + 1, device=x.device)
    fractions = thresholds.to(torch.float64) / n_regions_total
    return _run_curve("region_perturbation", model, x, rank, thresholds, fractions, target, order, baseline,
                      softmax, seed, batch_size, memory_budget, forward_kwargs, insert=False)


def aopc(model: Any, x: Tensor, attributions: Any, target: Any = None, *, patch: Any = None,
         **options: Any) -> Tensor:
    """``[N]`` AOPC, the area over the MoRF perturbation curve (Samek et al. 2017)::

        AOPC = 1/(K+1) Σ_{k=0..K} (f(x^(0)) − f(x^(k)))

    on the region-perturbation curve with ``patch=`` (Samek's definition), or on the pixel-
    flipping curve when ``patch`` is None. ``options`` go to ``region_perturbation`` /
    ``pixel_flipping`` (``order``, ``n_regions`` / ``step``, ``fraction``, ``baseline``, ...).
    """
    if patch is None:
        return pixel_flipping(model, x, attributions, target, **options).aopc
    return region_perturbation(model, x, attributions, target, patch=patch, **options).aopc


# --------------------------------------------------------------------------- the shared core
def _ranked_curve(metric: str, model: Any, x: Any, attributions: Any, target: Any, *, step: Any, n_steps: Any,
                  fraction: Any, order: str, baseline: Any, softmax: bool, seed: Any, batch_size: Any,
                  memory_budget: Any, forward_kwargs: Any, default_step: int | None,
                  insert: bool = False) -> PerturbationCurve:
    x = check_inputs(x)
    amap = check_attributions(attributions, x, broadcast=False)
    order = check_choice(order, "order", ORDERS)
    fraction = check_fraction(fraction, "fraction")
    seed = check_seed(seed)
    n = x.shape[0]
    flat = amap.reshape(n, -1)
    n_features = flat.shape[1]
    f_max = max(1, math.ceil(fraction * n_features - 1e-9))
    if step is not None and n_steps is not None:
        raise ValueError(f"{metric}: give step (features per step) or n_steps (number of steps), not both; "
                         f"got step={step!r}, n_steps={n_steps!r}")
    device = x.device
    if step is None and n_steps is None:
        if default_step is not None:
            step = default_step
        else:
            n_steps = 100
    if step is not None:
        step = check_int(step, "step")
        k_max = math.ceil(f_max / step)
        thresholds = torch.clamp(torch.arange(k_max + 1, device=device) * step, max=f_max)
    else:
        n_steps = min(check_int(n_steps, "n_steps"), f_max)
        thresholds = torch.div(torch.arange(n_steps + 1, device=device) * f_max, n_steps, rounding_mode="floor")
    rank = _rank(flat, order, seed).reshape(amap.shape)
    fractions = thresholds.to(torch.float64) / n_features
    return _run_curve(metric, model, x, rank, thresholds, fractions, target, order, baseline, softmax, seed,
                      batch_size, memory_budget, forward_kwargs, insert=insert)


def _run_curve(metric: str, model: Any, x: Tensor, rank: Tensor, thresholds: Tensor, fractions: Tensor,
               target: Any, order: str, baseline: Any, softmax: bool, seed: int, batch_size: Any,
               memory_budget: Any, forward_kwargs: Any, insert: bool) -> PerturbationCurve:
    """Scores ``[N, K+1]`` of ``where(rank < t_k, b, x)`` (insertion: ``where(rank < t_k, x, b)``)."""
    transform = output_transform(softmax)
    with model_guard(model):
        engine, prep = prepare(model, x, target, forward_kwargs=forward_kwargs, batch_size=batch_size,
                               memory_budget=memory_budget)
        gen = generator_for(seed + 1, x.device)
        (base,) = resolved_baseline(baseline, prep, gen)
        xs = prep.inputs[0]
        # k = 0 of a deletion-type curve is x itself: its score comes from the forward pass on x
        first = 0 if insert else 1
        thr = thresholds[first:].to(torch.int32)
        rank = rank.to(torch.int32)
        view = (-1,) + (1,) * (rank.dim() - 1)

        def perturb(k: Tensor, s: Tensor) -> Tensor:
            removed = rank.index_select(0, s) < thr.index_select(0, k).view(view)
            x_rows, b_rows = xs.index_select(0, s), base.index_select(0, s)
            return torch.where(removed, x_rows, b_rows) if insert else torch.where(removed, b_rows, x_rows)

        values = engine.evaluate(prep, int(thr.shape[0]), perturb, output_transform=transform)[:, :, 0]
        if not insert:
            values = torch.cat([target_scores(engine, prep, transform)[:, None].to(values.dtype), values], dim=1)
    return PerturbationCurve(values, fractions.to(device=values.device, dtype=values.dtype), order, metric)


def _rank(values: Tensor, order: str, seed: int) -> Tensor:
    """``[N, F]`` rank of each feature (0 = perturbed first): MoRF sorts by decreasing value, LeRF
    by increasing value (ties: the earlier feature first); random: a seeded permutation per sample."""
    n, f = values.shape
    if order == "random":
        gen = generator_for(seed, torch.device("cpu"))
        idx = torch.argsort(torch.rand(n, f, generator=gen), dim=1).to(values.device)
    else:
        key = -values if order == "morf" else values
        idx = torch.sort(key, dim=1, stable=True).indices
    rank = torch.empty_like(idx)
    rank.scatter_(1, idx, torch.arange(f, device=values.device).expand(n, f).contiguous())
    return rank


def _check_patch(patch: Any, x: Tensor, name: str = "patch") -> tuple[int, int]:
    """An int or a pair ``(height, width)`` of ints >= 1 that fits the image of x ``[N, C, H, W]``."""
    if isinstance(patch, (tuple, list)):
        if len(patch) != 2:
            raise ValueError(f"{name} must be an int or a pair (height, width), got {patch!r}")
        ph, pw = (check_int(p, name) for p in patch)
    else:
        ph = pw = check_int(patch, name)
    if ph > x.shape[2] or pw > x.shape[3]:
        raise ValueError(f"{name} {(ph, pw)} is larger than the image {tuple(x.shape[2:])}")
    return ph, pw


__all__ = ["PerturbationCurve", "pixel_flipping", "region_perturbation", "insertion", "deletion", "aopc"]

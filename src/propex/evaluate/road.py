"""ROAD: RemOve And Debias with noisy linear imputation (Rong et al. 2022, "A Consistent and
Efficient Evaluation Strategy for Attribution Methods", ICML).

Removing pixels by setting them to a constant leaks the removed shape to the model (the mask
itself is informative). ROAD instead imputes every removed pixel from its neighbours:

    v_p = Σ_q w_pq u_q / Σ_q w_pq,    u_q = x_q (kept) or v_q (removed),

over the 8 neighbours q of p inside the image, with weight 1/6 for the 4 direct and 1/12 for the
4 diagonal neighbours. All removed pixels of an image are solved jointly, per channel: the
linear system ``(D − W_RR) v = W_RK x_K`` (D: the in-image weight sums) is symmetric and
diagonally dominant. It is solved here in torch, batched over images, channels and removal
fractions, by Jacobi-preconditioned conjugate gradients with the sparse operator applied as a
3×3 stencil, started from the solution on a grid twice as coarse (in float64, to a relative
residual of 1e-8: the direct sparse solve of the ROAD authors' code to float32 precision).
Then Gaussian noise of standard deviation ``noise`` is added to the imputed pixels.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..model_call import model_guard
from ._common import (check_attributions, check_choice, check_fraction, check_inputs, check_number, check_seed,
                      generator_for, hashed_normal, output_transform, prepare, target_scores)
from .curves import PerturbationCurve, _rank

_DIRECT, _DIAGONAL = 1.0 / 6.0, 1.0 / 12.0


def _stencil(device: torch.device) -> Tensor:
    k = torch.tensor([[_DIAGONAL, _DIRECT, _DIAGONAL],
                      [_DIRECT, 0.0, _DIRECT],
                      [_DIAGONAL, _DIRECT, _DIAGONAL]], dtype=torch.float64, device=device)
    return k.reshape(1, 1, 3, 3)


def _neighbour_sum(v: Tensor) -> Tensor:
    """``Σ_q w_pq v_q`` over the 8 neighbours (zero outside the image): the stencil is separable up
    to its centre, W = ([1 2 1]ᵀ[1 2 1]) / 12 − δ / 3."""
    p = F.pad(v, (1, 1, 1, 1))
    rows = p[..., :-2, :] + 2 * p[..., 1:-1, :] + p[..., 2:, :]
    return (rows[..., :-2] + 2 * rows[..., 1:-1] + rows[..., 2:]) * (1.0 / 12.0) - v * (1.0 / 3.0)


def _solve(xd: Tensor, removed: Tensor, tol: float, max_iter: int | None, level: int = 0) -> Tensor:
    """Values ``[B, C, H, W]`` (float64) of the removed pixels (``removed`` ``[B, 1, H, W]``, 1 =
    removed) solving ``(D − W_RR) v = W_RK x_K``, by Jacobi-preconditioned conjugate gradients,
    batched over images and channels, started from the solution of the same problem on a grid
    twice as coarse (removed pixels' known neighbours averaged), interpolated back."""
    h, w = xd.shape[2:]
    weight_sum = F.conv2d(torch.ones(1, 1, h, w, dtype=torch.float64, device=xd.device),
                          _stencil(xd.device), padding=1)
    rhs = removed * _neighbour_sum((1 - removed) * xd)          # W_RK x_K on the removed pixels
    diag = weight_sum.expand_as(rhs)

    def apply(v: Tensor) -> Tensor:                             # (D − W_RR) v, v supported on removed pixels
        return removed * (diag * v - _neighbour_sum(v))

    if min(h, w) >= 16 and level < 8:
        known = 1 - removed
        num = F.avg_pool2d(xd * known, 2, ceil_mode=True)
        den = F.avg_pool2d(known, 2, ceil_mode=True)
        coarse_removed = (den <= 0).to(torch.float64)
        coarse_x = num / torch.where(den > 0, den, torch.ones_like(den))
        if bool(coarse_removed.any()):
            coarse = _solve(coarse_x, coarse_removed, tol, max_iter, level + 1)
        else:
            coarse = coarse_x
        v = removed * F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    else:
        v = removed * rhs / diag                                # Jacobi start
    r = rhs - apply(v)
    z = r / diag
    p = z.clone()
    rz = (r * z).sum(dim=(2, 3), keepdim=True)
    b_norm = rhs.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()
    limit = max_iter if max_iter is not None else 10 * (h + w) + 10 * int(math.sqrt(h * w)) + 100
    for it in range(limit):
        if it % 8 == 0:
            res = r.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()
            if bool((res <= tol * b_norm + 1e-300).all()):
                break
        ap = apply(p)
        pap = (p * ap).sum(dim=(2, 3), keepdim=True)
        alpha = torch.where(pap > 0, rz / torch.where(pap > 0, pap, torch.ones_like(pap)), torch.zeros_like(pap))
        v = v + alpha * p
        r = r - alpha * ap
        z = r / diag
        rz_new = (r * z).sum(dim=(2, 3), keepdim=True)
        beta = torch.where(rz > 0, rz_new / torch.where(rz > 0, rz, torch.ones_like(rz)), torch.zeros_like(rz))
        p = z + beta * p
        rz = rz_new
    return torch.where(removed.bool(), v, xd)


def noisy_linear_impute(x: Tensor, mask: Tensor, noise: float = 0.01, *, seed: int = 0,
                        generator: torch.Generator | None = None, tol: float = 1e-8,
                        max_iter: int | None = None) -> Tensor:
    """Impute the pixels of ``x`` ``[N, C, H, W]`` where ``mask`` (``[N, H, W]`` or ``[N, 1, H, W]``,
    True / 1 = removed) is set, by ROAD's noisy linear imputation (see the module docstring).

    ``noise``: the standard deviation of the Gaussian noise added to the imputed pixels
    (absolute; 0 for the plain linear imputation). Kept pixels are returned unchanged.
    A connected group of removed pixels with no kept neighbour at all is imputed as 0.
    """
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"x must be images [N, C, H, W], got {tuple(x.shape) if isinstance(x, Tensor) else type(x)}")
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a tensor [N, H, W] or [N, 1, H, W], got {type(mask).__name__}")
    n, c, h, w = x.shape
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    if tuple(mask.shape) != (n, 1, h, w):
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit x {tuple(x.shape)}; expected "
                         f"{(n, h, w)} or {(n, 1, h, w)}")
    noise = check_number(noise, "noise", minimum=0.0)
    removed = (mask != 0).to(device=x.device, dtype=torch.float64)
    if not bool(removed.any()):
        return x.clone()
    xd = x.detach().to(torch.float64)
    v = _solve(xd, removed, tol, max_iter)
    out = v
    if noise > 0:
        gen = generator if generator is not None else generator_for(seed, x.device)
        eps = torch.randn(out.shape, generator=gen, dtype=torch.float64, device=x.device)
        out = out + removed * (noise * eps)
    return out.to(x.dtype)


def road(model: Any, x: Tensor, attributions: Any, target: Any = None, *,
         fractions: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), order: str = "morf",
         noise: float = 0.01, softmax: bool = True, seed: int = 0, batch_size: int | None = None,
         memory_budget: Any = None, forward_kwargs: dict[str, Any] | None = None) -> PerturbationCurve:
    """ROAD (Rong et al. 2022): for each fraction p, remove ``round(p · H · W)`` pixels — the most
    relevant first (``order="morf"``) or the least relevant first (``"lerf"``) — impute them with
    noisy linear imputation (``noisy_linear_impute``) and score the model::

        scores[:, 0] = f_c(x),   scores[:, k] = f_c(impute(x, removed_k)),   k = 1 .. K

    A pixel's relevance is its attribution summed over the channels (the imputation works on
    whole pixels). ``softmax=True`` scores class probabilities, as in the paper. The imputed
    copies are made chunk by chunk inside the perturbation engine's loop (bounded memory).

    Returns a ``PerturbationCurve`` with ``fractions = [0, p_1, ..., p_K]``: a faithful map makes
    the MoRF curve fall fast (small ``.auc``) and the LeRF curve stay high.
    """
    x = check_inputs(x)
    if x.dim() != 4:
        raise ValueError(f"road needs images x [N, C, H, W], got shape {tuple(x.shape)}")
    amap = check_attributions(attributions, x, broadcast=False).sum(dim=1)          # [N, H, W]
    order = check_choice(order, "order", ("morf", "lerf"))
    if isinstance(fractions, (int, float)):
        fractions = (fractions,)
    if not isinstance(fractions, (tuple, list)) or len(fractions) == 0:
        raise ValueError(f"fractions must be a non-empty sequence of fractions in (0, 1], got {fractions!r}")
    fracs = [check_fraction(f, "fractions") for f in fractions]
    noise = check_number(noise, "noise", minimum=0.0)
    seed = check_seed(seed)
    n, _, h, w = x.shape
    rank = _rank(amap.reshape(n, -1), order, seed).reshape(n, 1, h, w).to(torch.int32)
    counts = torch.tensor([int(round(p * h * w)) for p in fracs], dtype=torch.int32, device=x.device)
    transform = output_transform(softmax)
    with model_guard(model):
        engine, prep = prepare(model, x, target, forward_kwargs=forward_kwargs, batch_size=batch_size,
                               memory_budget=memory_budget)
        xs = prep.inputs[0]

        def perturb(k: Tensor, s: Tensor) -> Tensor:
            removed = rank.index_select(0, s) < counts.index_select(0, k).view(-1, 1, 1, 1)
            rows = noisy_linear_impute(xs.index_select(0, s), removed, 0.0)
            if noise > 0:   # seeded per (step, sample, feature): independent of the chunking
                eps = hashed_normal(seed, k * n + s, rows[0].numel(), dtype=rows.dtype).reshape(rows.shape)
                rows = rows + removed * (noise * eps)
            return rows

        values = engine.evaluate(prep, len(fracs), perturb, output_transform=transform)[:, :, 0]
        values = torch.cat([target_scores(engine, prep, transform)[:, None].to(values.dtype), values], dim=1)
    fr = torch.tensor([0.0, *[float(c) / (h * w) for c in counts.tolist()]], dtype=torch.float64, device=x.device)
    return PerturbationCurve(values, fr.to(values.dtype), order, "road")


__all__ = ["road", "noisy_linear_impute"]

"""Guided Integrated Gradients."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..api import register
from .base import GradientMethod, completeness_delta
from .engine import Prepared
from .integration import check_steps
from .integrated_gradients import path_baselines

_EPS = 1e-9


@register
class GuidedIG(GradientMethod):
    r"""Guided Integrated Gradients: IG along an adaptive path that avoids high-gradient regions.

    The path starts at the baseline x' and ends at x. At step k of n (target
    :math:`\alpha = k/n`) the features whose gradient magnitude is among the lowest
    ``fraction`` move first toward x, each feature staying within ``max_dist`` of the
    straight-line position :math:`x' + \alpha (x - x')`, until the L1 distance to x
    has shrunk to :math:`(1 - \alpha)\,\lVert x - x'\rVert_1`. Attributions accumulate
    :math:`\phi_i \mathrel{+}= (x^{new}_i - x^{old}_i)\,\partial_i f_y(x^{old})`; the path
    integral gives :math:`\sum_i \phi_i \approx f_y(x) - f_y(x')` (``delta``).

    Kapishnikov et al., "Guided Integrated Gradients: an Adaptive Path Method for Removing
    Noise", CVPR 2021. Only one target per sample (the path depends on the target).

    Options: ``n_steps`` (default 128), ``fraction`` (default 0.25), ``max_dist``
    (default 0.02), ``baseline`` (as for IG; one baseline), ``seed``.
    """

    name = "guided_ig"
    aliases = ("guidedig", "guided_integrated_gradients")
    claims_completeness = True

    def __init__(self, model: Any, *, n_steps: int = 128, fraction: float = 0.25, max_dist: float = 0.02,
                 baseline: Any = None, seed: int | None = None, **options: Any):
        check_steps(n_steps)
        if not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        if not isinstance(max_dist, (int, float)) or not 0 <= max_dist <= 1:
            raise ValueError(f"max_dist must be in [0, 1], got {max_dist!r}")
        if isinstance(baseline, list):
            raise ValueError("guided_ig takes one baseline, not a list")
        super().__init__(model, n_steps=n_steps, fraction=float(fraction), max_dist=float(max_dist),
                         baseline=baseline, seed=seed, **options)
        self.n_steps, self.fraction, self.max_dist = n_steps, float(fraction), float(max_dist)
        self.baseline, self.seed = baseline, seed

    def _attribute(self, prep: Prepared) -> tuple[tuple[Tensor, ...], Tensor]:
        if prep.target.n_targets != 1:
            raise ValueError("guided_ig follows a path that depends on the target: pass one target per sample")
        base = path_baselines(self, prep, self.baseline, self.seed)[0]
        space, n = prep.space, prep.n
        shapes = [t.shape[1:] for t in space]
        sizes = [math.prod(s) for s in shapes]

        def flat(ts: tuple[Tensor, ...]) -> Tensor:
            return torch.cat([t.reshape(n, -1) for t in ts], dim=1)

        def unflat(v: Tensor) -> tuple[Tensor, ...]:
            return tuple(p.reshape(n, *shp) for p, shp in zip(torch.split(v, sizes, dim=1), shapes))

        x_in, x_base = flat(space), flat(base)
        x = x_base.clone()
        attr = torch.zeros_like(x)
        l1_total = (x_in - x_base).abs().sum(dim=1)
        span = x_in - x_base
        idx = torch.arange(n, device=x.device)
        for step in range(self.n_steps):
            grads = self.engine.reduce(prep, 1, lambda k, s, x=x: tuple(t.index_select(0, s) for t in unflat(x)),
                                       lambda g, k, s: list(g))
            grad_actual = flat(tuple(g[:, 0] for g in grads))
            alpha = (step + 1) / self.n_steps
            alpha_min, alpha_max = max(alpha - self.max_dist, 0.0), min(alpha + self.max_dist, 1.0)
            x_min, x_max = x_base + span * alpha_min, x_base + span * alpha_max
            l1_target = l1_total * (1 - alpha)
            for i in range(n):
                self._advance(x[i], attr[i], grad_actual[i], x_in[i], x_base[i], x_min[i], x_max[i],
                              alpha_min, alpha_max, float(l1_target[i]))
        attributions = tuple(a.unsqueeze(1) for a in unflat(attr))
        f_base = self.engine.values(prep, base, idx)
        return attributions, completeness_delta(attributions, prep.target_values(), f_base)

    def _advance(self, x: Tensor, attr: Tensor, grad_actual: Tensor, x_in: Tensor, x_base: Tensor,
                 x_min: Tensor, x_max: Tensor, alpha_min: float, alpha_max: float, l1_target: float) -> None:
        """Move one sample's point x (in place) until its L1 distance to x_in is l1_target."""
        grad = grad_actual.clone()
        denom = x_in - x_base
        moving = denom != 0
        for _ in range(10 * x.numel() + 10):  # every pass moves at least one feature to x_max
            x_old = x.clone()
            x_alpha = torch.full_like(x, alpha_max)
            x_alpha[moving] = (x[moving] - x_base[moving]) / denom[moving]
            behind = x_alpha < alpha_min
            x[behind] = x_min[behind]
            l1_current = float((x - x_in).abs().sum())
            if math.isclose(l1_target, l1_current, rel_tol=_EPS, abs_tol=_EPS):
                attr += (x - x_old) * grad_actual
                return
            grad[x == x_max] = math.inf
            magnitude = grad.abs()
            order = int(self.fraction * (magnitude.numel() - 1))
            threshold = torch.sort(magnitude).values[order]
            selected = (magnitude <= threshold) & torch.isfinite(grad)
            l1_s = float(((x - x_max).abs() * selected).sum())
            gamma = (l1_current - l1_target) / l1_s if l1_s > 0 else math.inf
            if gamma > 1.0:
                x[selected] = x_max[selected]
            else:
                x[selected] = (x + (x_max - x) * gamma)[selected]
            attr += (x - x_old) * grad_actual
            if gamma <= 1.0 or not bool(selected.any()):
                return


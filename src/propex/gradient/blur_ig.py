"""Blur Integrated Gradients."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..api import register
from ..blur import gaussian_blur
from .base import GradientMethod, completeness_delta, per_point
from .engine import Prepared
from .integration import check_steps


@register
class BlurIG(GradientMethod):
    r"""Blur IG: integrate gradients along a path of decreasing Gaussian blur.

    With :math:`x(\sigma)` the input blurred with width σ over its spatial dims and
    :math:`\sigma_k = k\,\sigma_{max}/n` (or :math:`\sigma_{max}\sqrt{k/n}` with
    ``schedule="sqrt"``), the path runs from :math:`x(\sigma_{max})` to :math:`x(0) = x`:

    .. math:: \phi_i = -\sum_{k=0}^{n-1} (\sigma_{k+1} - \sigma_k)\,
              \frac{\partial x_i(\sigma)}{\partial \sigma}\Big|_{\sigma_k}\,
              \partial_i f_y\big(x(\sigma_k)\big)

    with the σ-derivative taken by a forward difference of step ``grad_step``. Completeness
    holds approximately: :math:`\sum_i \phi_i \approx f_y(x) - f_y(x(\sigma_{max}))`
    (reported as ``delta``). No baseline is needed: the maximally blurred image plays its role.

    Xu, Venugopalan & Sundararajan, "Attribution in Scale and Space", CVPR 2020.

    Options: ``n_steps`` (default 100), ``max_sigma`` (default 50 px, as in the paper),
    ``grad_step`` (default 0.01), ``schedule`` (``"linear"`` or ``"sqrt"``). Inputs must be
    ``[N, C, H, W]`` or ``[N, C, L]``.
    """

    name = "blur_ig"
    aliases = ("blurig", "blur_integrated_gradients")
    claims_completeness = True

    def __init__(self, model: Any, *, n_steps: int = 100, max_sigma: float = 50.0, grad_step: float = 0.01,
                 schedule: str = "linear", **options: Any):
        check_steps(n_steps)
        if not isinstance(max_sigma, (int, float)) or isinstance(max_sigma, bool) or max_sigma <= 0:
            raise ValueError(f"max_sigma must be a number > 0, got {max_sigma!r}")
        if not isinstance(grad_step, (int, float)) or isinstance(grad_step, bool) or grad_step <= 0:
            raise ValueError(f"grad_step must be a number > 0, got {grad_step!r}")
        if schedule not in ("linear", "sqrt"):
            raise ValueError(f"schedule must be 'linear' or 'sqrt', got {schedule!r}")
        super().__init__(model, n_steps=n_steps, max_sigma=float(max_sigma), grad_step=float(grad_step),
                         schedule=schedule, **options)
        self.n_steps, self.max_sigma, self.grad_step, self.schedule = n_steps, float(max_sigma), float(grad_step), schedule

    def sigmas(self) -> list[float]:
        """σ_0 = 0 < σ_1 < ... < σ_n = max_sigma."""
        n, top = self.n_steps, self.max_sigma
        if self.schedule == "sqrt":
            return [top * (k / n) ** 0.5 for k in range(n + 1)]
        return [k * top / n for k in range(n + 1)]

    def _attribute(self, prep: Prepared) -> tuple[tuple[Tensor, ...], Tensor]:
        for i, t in enumerate(prep.space):
            if t.dim() not in (3, 4):
                label = "layer output" if self.engine.tap is not None else (f"x[{i}]" if prep.was_tuple else "x")
                raise ValueError(f"blur_ig blurs spatial dims: {label} must be [N, C, H, W] or [N, C, L], "
                                 f"got shape {tuple(t.shape)}")
        sig = self.sigmas()
        space, h = prep.space, self.grad_step
        cache: dict[int, tuple[tuple[Tensor, ...], tuple[Tensor, ...]]] = {}

        def blurred(kk: int) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
            """Blurred inputs at σ_k and their scaled σ-derivative −Δσ_k ∂x/∂σ, for all N."""
            if kk not in cache:
                at = tuple(gaussian_blur(t, sig[kk]) for t in space)
                step = sig[kk + 1] - sig[kk]
                deriv = tuple(-(gaussian_blur(t, sig[kk] + h) - a) / h * step for t, a in zip(space, at))
                cache[kk] = (at, deriv)
            return cache[kk]

        def gather(k: Tensor, s: Tensor, which: int) -> tuple[Tensor, ...]:
            parts = []
            for kk in torch.unique_consecutive(k).tolist():
                ss = s[k == kk]
                parts.append(tuple(t.index_select(0, ss) for t in blurred(kk)[which]))
            return tuple(torch.cat(p) for p in zip(*parts))

        def terms(g: tuple[Tensor, ...], k: Tensor, s: Tensor) -> list[Tensor]:
            return [gi * per_point(d) for gi, d in zip(g, gather(k, s, 1))]

        def points(k: Tensor, s: Tensor) -> tuple[Tensor, ...]:
            first = int(k[0])
            for old in [key for key in cache if key < first]:
                del cache[old]
            return gather(k, s, 0)

        attr = tuple(self.engine.reduce(prep, self.n_steps, points, terms))
        idx = torch.arange(prep.n, device=space[0].device)
        start = tuple(gaussian_blur(t, sig[-1]) for t in space)
        delta = completeness_delta(attr, prep.target_values(), self.engine.values(prep, start, idx))
        return attr, delta

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

    .. math:: \phi_i = \int_{\sigma_{max}}^{0} \partial_i f_y\big(x(\sigma)\big)\,
              \frac{\partial x_i(\sigma)}{\partial \sigma}\, d\sigma
              \approx \sum_{k=0}^{n-1} \big(x_i(\sigma_k) - x_i(\sigma_{k+1})\big)\,
              \partial_i f_y\big(x(\sigma_k)\big)

    The paper (and PAIR's implementation) multiplies :math:`-(\sigma_{k+1}-\sigma_k)` by a
    finite-difference σ-derivative at :math:`\sigma_k`; propex uses the exact path increment
    instead: the same integral, but the sum telescopes, so a linear model gets exactly
    :math:`w \odot (x - x(\sigma_{max}))` and coarse σ steps (``schedule="sqrt"``) stay accurate.
    Completeness: :math:`\sum_i \phi_i \approx f_y(x) - f_y(x(\sigma_{max}))` (``delta``). No
    baseline is needed: the maximally blurred image plays its role.

    Xu, Venugopalan & Sundararajan, "Attribution in Scale and Space", CVPR 2020.

    Options: ``n_steps`` (default 100), ``max_sigma`` (default 50 px, as in the paper),
    ``schedule`` (``"linear"`` or ``"sqrt"``). Inputs must be
    ``[N, C, H, W]`` or ``[N, C, L]``.
    """

    name = "blur_ig"
    aliases = ("blurig", "blur_integrated_gradients")
    claims_completeness = True

    def __init__(self, model: Any, *, n_steps: int = 100, max_sigma: float = 50.0, schedule: str = "linear",
                 **options: Any):
        check_steps(n_steps)
        if not isinstance(max_sigma, (int, float)) or isinstance(max_sigma, bool) or max_sigma <= 0:
            raise ValueError(f"max_sigma must be a number > 0, got {max_sigma!r}")
        if schedule not in ("linear", "sqrt"):
            raise ValueError(f"schedule must be 'linear' or 'sqrt', got {schedule!r}")
        super().__init__(model, n_steps=n_steps, max_sigma=float(max_sigma), schedule=schedule, **options)
        self.n_steps, self.max_sigma, self.schedule = n_steps, float(max_sigma), schedule

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
        space = prep.space
        cache: dict[int, tuple[tuple[Tensor, ...], tuple[Tensor, ...]]] = {}

        def blurred(kk: int) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
            """Blurred inputs at σ_k and the path increment x(σ_k) − x(σ_{k+1}), for all N."""
            if kk not in cache:
                at = tuple(gaussian_blur(t, sig[kk]) for t in space)
                step = tuple(a - gaussian_blur(t, sig[kk + 1]) for t, a in zip(space, at))
                cache[kk] = (at, step)
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

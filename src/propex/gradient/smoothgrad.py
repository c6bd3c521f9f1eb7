"""SmoothGrad and VarGrad: statistics of gradients at noisy copies of the input."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..api import register
from .base import GradientMethod, make_generator
from .engine import Prepared
from .integration import check_steps


class NoiseStream:
    """Gaussian noise for the k-th sample of all N inputs, drawn in order of k.

    Drawing ``[N, ...]`` per k from one seeded generator makes the result independent of
    the chunk size; only the noise of the k values of the current chunk is kept.
    """

    def __init__(self, space: tuple[Tensor, ...], sigmas: tuple[Tensor, ...], generator: torch.Generator):
        self.space, self.sigmas, self.gen = space, sigmas, generator
        self.next_k = 0
        self.cache: dict[int, tuple[Tensor, ...]] = {}

    def get(self, k: int) -> tuple[Tensor, ...]:
        while self.next_k <= k:
            self.cache[self.next_k] = tuple(
                torch.randn(t.shape, generator=self.gen, dtype=t.dtype, device=t.device) * sig
                for t, sig in zip(self.space, self.sigmas))
            self.next_k += 1
        for old in [key for key in self.cache if key < k]:
            del self.cache[old]
        return self.cache[k]

    def points(self, k: Tensor, s: Tensor) -> tuple[Tensor, ...]:
        parts: list[tuple[Tensor, ...]] = []
        for kk in torch.unique_consecutive(k).tolist():
            mask = k == kk
            noise = self.get(kk)
            ss = s[mask]
            parts.append(tuple(t.index_select(0, ss) + n.index_select(0, ss) for t, n in zip(self.space, noise)))
        return tuple(torch.cat(p) for p in zip(*parts))


class _NoisyGradients(GradientMethod):
    """Shared sampling of SmoothGrad and VarGrad."""

    def __init__(self, model: Any, *, n_samples: int = 50, noise_level: float = 0.15, seed: int | None = None,
                 noise: Tensor | tuple[Tensor, ...] | None = None, **options: Any):
        check_steps(n_samples, "n_samples")
        if isinstance(noise_level, bool) or not isinstance(noise_level, (int, float)) or noise_level < 0:
            raise ValueError(f"noise_level must be a number >= 0 (σ / (x_max - x_min)), got {noise_level!r}")
        super().__init__(model, n_samples=n_samples, noise_level=float(noise_level), seed=seed, **options)
        self.n_samples, self.noise_level, self.seed, self.noise = n_samples, float(noise_level), seed, noise

    def _points(self, prep: Prepared):
        space = prep.space
        if self.noise is not None:
            noise = self.noise if isinstance(self.noise, tuple) else (self.noise,)
            if len(noise) != len(space) or any(nz.shape != (t.shape[0], self.n_samples, *t.shape[1:])
                                               for nz, t in zip(noise, space)):
                want = ", ".join(str((t.shape[0], self.n_samples, *t.shape[1:])) for t in space)
                got = ", ".join(str(tuple(nz.shape)) for nz in noise)
                raise ValueError(f"noise must be shaped [N, n_samples, ...] = {want}; got {got}")
            noise = tuple(nz.to(device=t.device, dtype=t.dtype) for nz, t in zip(noise, space))
            return lambda k, s: tuple(t.index_select(0, s) + nz[s, k] for t, nz in zip(space, noise))
        sigmas = tuple(self.noise_level * _value_range(t) for t in space)
        stream = NoiseStream(space, sigmas, make_generator(self.seed, space[0].device))
        return stream.points

    def _moments(self, prep: Prepared, second: bool, first: bool = True) -> list[Tensor]:
        n = self.n_samples

        def terms(g, k, s):
            out = []
            if first:
                out += [gi.double() / n if second else gi / n for gi in g]
            if second:   # float64 sums: E[g²] − E[g]² cancels badly in float32
                out += [gi.double() ** 2 / n for gi in g]
            return out
        return self.engine.reduce(prep, n, self._points(prep), terms)


def _value_range(t: Tensor) -> Tensor:
    """Per-sample ``x_max - x_min``, shaped to broadcast against ``t``."""
    flat = t.reshape(t.shape[0], -1)
    rng = flat.max(dim=1).values - flat.min(dim=1).values
    return rng.reshape(-1, *[1] * (t.dim() - 1))


@register
class SmoothGrad(_NoisyGradients):
    r"""SmoothGrad: the gradient averaged over Gaussian-noised copies of the input.

    .. math:: a = \frac{1}{n}\sum_{k=1}^{n} \nabla f_y(x + \epsilon_k),\quad
              \epsilon_k \sim \mathcal N(0, \sigma^2),\ \sigma = \text{noise\_level}\cdot(x_{max} - x_{min})

    ``squared=True`` averages the squared gradients (SmoothGrad-Squared). The value range is
    taken per sample, as in the paper (10–20 % noise recommended; default 0.15, n = 50).

    Smilkov et al., "SmoothGrad: removing noise by adding noise", 2017 (arXiv:1706.03825).

    Options: ``n_samples``, ``noise_level``, ``squared``, ``seed`` (reproducible draws),
    ``noise`` (explicit noise ``[N, n_samples, ...]`` to reproduce another library's draws).
    """

    name = "smoothgrad"
    aliases = ("smooth_grad", "sg")

    def __init__(self, model: Any, *, squared: bool = False, **options: Any):
        super().__init__(model, **options)
        self.options["squared"] = self.squared = bool(squared)

    def _attribute(self, prep: Prepared) -> tuple[tuple[Tensor, ...], None]:
        if self.squared:
            dtype = prep.space[0].dtype
            return tuple(m.to(dtype) for m in self._moments(prep, second=True, first=False)), None
        return tuple(self._moments(prep, second=False)), None


@register
class VarGrad(_NoisyGradients):
    r"""VarGrad: the variance of the gradient over Gaussian-noised copies of the input.

    .. math:: a = \frac{1}{n}\sum_k g_k^2 - \Big(\frac{1}{n}\sum_k g_k\Big)^2,\quad g_k = \nabla f_y(x + \epsilon_k)

    Adebayo et al., "Local Explanation Methods for Deep Neural Networks Lack Sensitivity to
    Parameter Values", ICLR workshop 2018. Options as for ``smoothgrad``.
    """

    name = "vargrad"
    aliases = ("var_grad",)

    def _attribute(self, prep: Prepared) -> tuple[tuple[Tensor, ...], None]:
        moments = self._moments(prep, second=True)
        k = len(prep.space)
        return tuple((m2 - m1 * m1).clamp(min=0).to(x.dtype)
                     for m1, m2, x in zip(moments[:k], moments[k:], prep.space)), None

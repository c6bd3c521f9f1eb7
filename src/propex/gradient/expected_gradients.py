"""Expected Gradients / GradientSHAP."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..api import register
from ..inputs import check_finite
from .base import GradientMethod, completeness_delta, make_generator, per_point
from .engine import Prepared
from .integration import check_steps
from .integrated_gradients import baseline_space


@register
class ExpectedGradients(GradientMethod):
    r"""Expected Gradients (GradientSHAP): IG averaged over baselines drawn from data.

    .. math:: \phi_i(x) = \mathbb E_{x' \sim D,\ \alpha \sim U(0,1)}
              \Big[(x_i - x'_i)\,\partial_i f_y\big(x' + \alpha (x - x')\big)\Big]

    estimated with ``n_samples`` draws of (reference, α) per input. In expectation
    :math:`\sum_i \phi_i = f_y(x) - \mathbb E_{x'}[f_y(x')]`; ``delta`` reports the
    Monte-Carlo gap ``sum(φ) - (f(x) - mean_k f(x'_k))`` over the drawn references.

    Erion et al., "Improving performance of deep learning models with axiomatic attribution
    priors and expected gradients", Nature Machine Intelligence 2021 (arXiv:1906.10670);
    Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017.

    Options: ``baseline`` (required: a tensor ``[M, ...]`` of M reference samples, or a
    tuple of such for tuple inputs; M need not equal N), ``n_samples`` (default 32),
    ``seed``; ``baseline_indices`` and ``alphas`` (``[N, n_samples]``) fix the draws exactly.
    """

    name = "expected_gradients"
    aliases = ("gradient_shap", "gradientshap", "eg")
    claims_completeness = True

    def __init__(self, model: Any, *, baseline: Any = None, n_samples: int = 32, seed: int | None = None,
                 baseline_indices: Tensor | None = None, alphas: Tensor | None = None, **options: Any):
        check_steps(n_samples, "n_samples")
        super().__init__(model, baseline=baseline, n_samples=n_samples, seed=seed, **options)
        self.baseline, self.n_samples, self.seed = baseline, n_samples, seed
        self.baseline_indices, self.alphas = baseline_indices, alphas

    def _references(self, prep: Prepared) -> tuple[Tensor, ...]:
        spec = self.baseline
        if spec is None:
            raise ValueError("expected_gradients needs baseline= a tensor [M, ...] of M reference samples "
                             "(e.g. a batch of training inputs)")
        refs = spec if isinstance(spec, tuple) else (spec,)
        if len(refs) != len(prep.inputs) or not all(isinstance(r, Tensor) for r in refs):
            raise TypeError(f"baseline must be {len(prep.inputs)} tensor(s) [M, ...] matching x, got {type(spec).__name__}")
        m = refs[0].shape[0]
        for i, (r, x) in enumerate(zip(refs, prep.inputs)):
            label = f"baseline[{i}]" if len(refs) > 1 else "baseline"
            if r.dim() != x.dim() or r.shape[1:] != x.shape[1:] or r.shape[0] != m:
                raise ValueError(f"{label} of shape {tuple(r.shape)} must be [M, {', '.join(map(str, x.shape[1:]))}] "
                                 f"(reference samples shaped like x {tuple(x.shape)})")
            check_finite(r, label)
        refs = tuple(r.detach().to(device=x.device, dtype=x.dtype) for r, x in zip(refs, prep.inputs))
        return refs

    def _draws(self, prep: Prepared, m: int) -> tuple[Tensor, Tensor]:
        n, k = prep.n, self.n_samples
        device, dtype = prep.space[0].device, prep.space[0].dtype
        gen = make_generator(self.seed, device) if (self.baseline_indices is None or self.alphas is None) else None
        if self.baseline_indices is not None:
            idx = torch.as_tensor(self.baseline_indices, device=device).long()
            if idx.shape != (n, k) or int(idx.min()) < 0 or int(idx.max()) >= m:
                raise ValueError(f"baseline_indices must be [N, n_samples] = {(n, k)} ints in [0, {m})")
        else:
            idx = torch.randint(0, m, (n, k), generator=gen, device=device)
        if self.alphas is not None:
            alphas = torch.as_tensor(self.alphas, device=device, dtype=dtype)
            if alphas.shape != (n, k):
                raise ValueError(f"alphas must be [N, n_samples] = {(n, k)}, got {tuple(alphas.shape)}")
        else:
            alphas = torch.rand((n, k), generator=gen, device=device, dtype=dtype)
        return idx, alphas

    def _attribute(self, prep: Prepared) -> tuple[tuple[Tensor, ...], Tensor]:
        refs = baseline_space(self, prep, self._reference_inputs(prep))
        idx, alphas = self._draws(prep, refs[0].shape[0])
        space, n_samples = prep.space, self.n_samples

        def points(k: Tensor, s: Tensor) -> tuple[Tensor, ...]:
            chosen = idx[s, k]
            a = alphas[s, k]
            return tuple(r.index_select(0, chosen) + _bcast(a, x) * (x.index_select(0, s) - r.index_select(0, chosen))
                         for r, x in zip(refs, space))

        def terms(g: tuple[Tensor, ...], k: Tensor, s: Tensor) -> list[Tensor]:
            chosen = idx[s, k]
            return [gi * per_point(x.index_select(0, s) - r.index_select(0, chosen)) / n_samples
                    for gi, x, r in zip(g, space, refs)]

        attr = tuple(self.engine.reduce(prep, n_samples, points, terms))
        f_refs = self._reference_values(prep, refs, idx)
        delta = completeness_delta(attr, prep.target_values(), f_refs)
        return attr, delta

    def _reference_inputs(self, prep: Prepared) -> tuple[Tensor, ...]:
        refs = self._references(prep)
        if self.engine.tap is not None and refs[0].shape[0] != prep.n:
            raise ValueError("expected_gradients with layer= needs as many reference samples as inputs "
                             f"(M = N = {prep.n}); got M = {refs[0].shape[0]}")
        return refs

    def _reference_values(self, prep: Prepared, refs: tuple[Tensor, ...], idx: Tensor) -> Tensor:
        """Mean over the drawn references of the target value, ``[N, T]``."""
        n, k = idx.shape
        flat_s = torch.arange(n, device=idx.device).repeat_interleave(k)
        flat_idx = idx.reshape(-1)
        if self.engine.tap is None and not prep.forward_kwargs:
            # the references' outputs do not depend on the sample: M forward passes suffice
            m = refs[0].shape[0]
            size = self.engine.chunk(prep, m)
            with torch.no_grad():
                outs = torch.cat([self.engine.call(tuple(r[a:b] for r in refs), {})
                                  for a, b in ((a, min(m, a + size)) for a in range(0, m, size))])
            return prep.target.select(outs.index_select(0, flat_idx), flat_s).reshape(n, k, -1).mean(dim=1)
        values = []
        size = self.engine.chunk(prep, n * k)
        for start in range(0, n * k, size):
            s = flat_s[start:start + size]
            chosen = flat_idx[start:start + size]
            values.append(self.engine.values(prep, tuple(r.index_select(0, chosen) for r in refs), s))
        return torch.cat(values).reshape(n, k, -1).mean(dim=1)


def _bcast(a: Tensor, like: Tensor) -> Tensor:
    return a.reshape(-1, *[1] * (like.dim() - 1))

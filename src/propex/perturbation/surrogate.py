"""LIME and Kernel SHAP: a weighted linear surrogate over binary coalitions of feature groups.

Both methods evaluate the model on copies of ``x`` in which some feature groups (a feature
mask of integer ids, e.g. superpixels) keep their values and the others are replaced by the
baseline, then fit one linear model per sample and target:

* ``lime`` (Ribeiro, Singh & Guestrin 2016): coalitions drawn uniformly (each group kept with
  probability 1/2, as Captum does), weighted by an exponential kernel on the distance between
  ``x`` and the perturbed input, a (ridge-)regularised weighted least-squares fit with intercept;
* ``kernel_shap`` (Lundberg & Lee 2017): coalitions weighted by the Shapley kernel, the
  intercept fixed to ``f(baseline)`` and the coefficients constrained to sum to
  ``f(x) - f(baseline)`` (efficiency), so that with every coalition the fit *is* the vector of
  Shapley values.

The fits of all N samples and T targets are one batched solve in torch
(:func:`solve_weighted_linear`), in float64.
"""
from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor

from ..api import register
from ..base import Explanation
from ..gradient.base import make_generator
from .base import PerturbationMethod, baseline_tensors, check_baseline_spec, check_seed
from .engine import PreparedPerturbation
from .feature_ablation import _check_mask_types, feature_masks
from .masks import check_positive_int, check_real
from .superpixels import grid_superpixels


# ---------------------------------------------------------------------------------- the solver
def solve_weighted_linear(z: Tensor, y: Tensor, weights: Tensor, *, present: Tensor | None = None,
                          ridge: float = 0.0, offset: Tensor | None = None, total: Tensor | None = None
                          ) -> tuple[Tensor, Tensor]:
    r"""Batched weighted least squares over shared coalitions.

    For every sample ``n`` and target ``t`` it minimises

    .. math:: \sum_k w_{nk}\,\big(y_{nkt} - b_{nt} - z_k^\top \beta_{nt}\big)^2 + \alpha\,\lVert\beta_{nt}\rVert^2

    * unconstrained (``total is None``, LIME): the intercept ``b`` is fitted, not penalised;
    * constrained (``total`` given, Kernel SHAP): ``b = offset`` is fixed and
      ``sum_g beta_g = total`` is imposed exactly (Lagrange multiplier, KKT system).

    Args:
        z: ``[K, G]`` coalitions (1 = group kept), shared by all samples.
        y: ``[N, K, T]`` model scores on the coalitions.
        weights: ``[K]`` or ``[N, K]`` sample weights (>= 0).
        present: ``[N, G]`` bool, False for a group with no element in that sample: its
            coefficient is 0 and it is left out of the fit (and of the sum constraint).
        ridge: ``alpha >= 0``.
        offset, total: ``[N, T]`` (constrained fit only).

    Returns:
        ``coef [N, G, T]`` and ``intercept [N, T]`` in ``y``'s dtype. Rank-deficient systems
        (fewer useful coalitions than groups) get the minimum-norm solution (pseudo-inverse).
    """
    n, k, t = y.shape
    g = z.shape[1]
    work = _work_dtype(y)
    zz = z.to(device=y.device, dtype=work)
    yy = y.to(work)
    w = weights.to(device=y.device, dtype=work)
    w = w.expand(n, k) if w.dim() == 1 else w
    keep = (torch.ones(n, g, dtype=torch.bool, device=y.device) if present is None
            else present.to(device=y.device, dtype=torch.bool))
    if total is None:
        x = torch.cat([torch.ones(k, 1, dtype=work, device=y.device), zz], dim=1)          # [K, G+1]
        keep = torch.cat([torch.ones(n, 1, dtype=torch.bool, device=y.device), keep], dim=1)
        penalty = torch.full((g + 1,), float(ridge), dtype=work, device=y.device)
        penalty[0] = 0.0
    else:
        x = zz
        yy = yy - offset.to(work).unsqueeze(1)
        penalty = torch.full((g,), float(ridge), dtype=work, device=y.device)
    a = torch.einsum("nk,ki,kj->nij", w, x, x)
    b = torch.einsum("nk,ki,nkt->nit", w, x, yy)
    # groups absent from a sample: drop their rows/columns, pin the coefficient to 0
    both = keep.unsqueeze(2) & keep.unsqueeze(1)
    a = torch.where(both, a, torch.zeros((), dtype=work, device=y.device))
    a = a + torch.diag_embed(penalty.expand(n, -1) * keep + (~keep).to(work))
    b = b * keep.unsqueeze(2)
    if total is None:
        sol = _solve(a, b)
        return sol[:, 1:].to(y.dtype), sol[:, 0].to(y.dtype)
    # KKT: [[A, c], [c^T, 0]] [beta; mu] = [b; total], c = present groups; A scaled to O(1)
    scale = (torch.diagonal(a, dim1=1, dim2=2).sum(dim=1) / g).clamp_min(torch.finfo(work).tiny)
    scale = scale.reshape(n, 1, 1)
    c = keep.to(work).unsqueeze(2)                                                     # [N, G, 1]
    top = torch.cat([a / scale, c], dim=2)
    bottom = torch.cat([c.transpose(1, 2), torch.zeros(n, 1, 1, dtype=work, device=y.device)], dim=2)
    kkt = torch.cat([top, bottom], dim=1)
    rhs = torch.cat([b / scale, total.to(work).unsqueeze(1)], dim=1)
    sol = _solve(kkt, rhs)
    return sol[:, :g].to(y.dtype), offset.to(y.dtype)


def _work_dtype(y: Tensor) -> torch.dtype:
    return torch.float32 if y.device.type == "mps" else torch.float64


def _solve(a: Tensor, b: Tensor) -> Tensor:
    """Solve the symmetric systems ``a x = b``; singular ones by pseudo-inverse (minimum norm)."""
    sol, info = torch.linalg.solve_ex(a, b)
    # LU succeeds on nearly singular systems with huge, meaningless solutions: check the condition
    eig = torch.linalg.eigvalsh(a).abs()
    cond_bad = eig.min(dim=1).values <= eig.max(dim=1).values * (a.shape[1] * torch.finfo(a.dtype).eps * 1e3)
    bad = (info != 0) | cond_bad
    if bool(bad.any()):
        sol = sol.clone()
        sol[bad] = torch.linalg.pinv(a[bad], hermitian=True) @ b[bad]
    return sol


# ---------------------------------------------------------------------------------- coalitions
def bernoulli_coalitions(n_groups: int, n_samples: int, generator: torch.Generator) -> Tensor:
    """``[K, G]`` coalitions, each group kept independently with probability 1/2 (LIME, Captum)."""
    return (torch.rand((n_samples, n_groups), generator=generator, device=generator.device) < 0.5).to(torch.float64)


def shapley_kernel_mass(n_groups: int) -> Tensor:
    r"""Probability of each coalition size ``s = 1..G-1`` under the Shapley kernel,
    :math:`q_s \propto (G-1) / (s (G-s))` (the kernel weight of one coalition times :math:`\binom{G}{s}`)."""
    s = torch.arange(1, n_groups, dtype=torch.float64)
    q = (n_groups - 1) / (s * (n_groups - s))
    return q / q.sum()


def shapley_coalitions(n_groups: int, n_samples: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    r"""Coalitions ``[K, G]`` and regression weights ``[K]`` for Kernel SHAP.

    The Shapley kernel gives a coalition of size ``s`` the weight
    :math:`\pi(s) = \frac{G-1}{\binom{G}{s}\, s\, (G-s)}`. Sizes are taken from the outside in
    (1 and G-1, then 2 and G-2, ...): while the budget ``n_samples`` can hold every coalition of
    a size pair, they are all enumerated with their exact weights (with ``n_samples >= 2^G - 2``
    this is the complete, exact regression). The remaining budget is spent on random
    coalitions of the remaining sizes, drawn with probability proportional to their kernel
    mass and in complementary pairs (z, 1 - z), which share the rest of the kernel mass
    equally. ``K <= n_samples``.
    """
    g = n_groups
    if g < 2:
        return torch.zeros(0, g, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    q = shapley_kernel_mass(g)                        # q[s-1] for sizes s = 1..G-1
    rows: list[Tensor] = []
    wts: list[Tensor] = []
    budget = n_samples
    remaining = list(range(1, g))                     # sizes not enumerated yet
    lo, hi = 1, g - 1
    while lo <= hi:
        sizes = [lo] if lo == hi else [lo, hi]
        count = sum(math.comb(g, s) for s in sizes)
        if count > budget:
            break
        for s in sizes:
            combos = torch.tensor(list(itertools.combinations(range(g), s)), dtype=torch.long)
            z = torch.zeros(combos.shape[0], g, dtype=torch.float64)
            z.scatter_(1, combos, 1.0)
            rows.append(z)
            wts.append(torch.full((combos.shape[0],), float(q[s - 1]) / math.comb(g, s), dtype=torch.float64))
            remaining.remove(s)
        budget -= count
        lo, hi = lo + 1, hi - 1
    if remaining and budget > 0:
        sizes = torch.tensor(remaining, dtype=torch.long)
        mass = q[sizes - 1]
        n_pairs = (budget + 1) // 2
        drawn = sizes[torch.multinomial(mass / mass.sum(), n_pairs, replacement=True, generator=generator)]
        # a uniform random subset of each drawn size: the groups with the smallest random keys
        keys = torch.rand((n_pairs, g), generator=generator, dtype=torch.float64)
        ranks = keys.argsort(dim=1).argsort(dim=1)
        z = (ranks < drawn.unsqueeze(1)).to(torch.float64)
        z = torch.stack([z, 1.0 - z], dim=1).reshape(2 * n_pairs, g)[:budget]
        rows.append(z)
        wts.append(torch.full((z.shape[0],), float(mass.sum()) / z.shape[0], dtype=torch.float64))
    if not rows:
        return torch.zeros(0, g, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    return torch.cat(rows), torch.cat(wts)


# ---------------------------------------------------------------------------------- feature groups
class FeatureGroups:
    """Integer feature masks (one per input tensor) turned into G contiguous groups.

    ``ids[i]`` has input ``i``'s number of dims, first dim 1 or N, other dims 1 or the input's
    (it broadcasts to the input); the ids of all input tensors form one numbering (Captum's
    convention) and are renumbered ``0..G-1`` in increasing order of the given ids.
    ``present[n, g]`` says whether group ``g`` has an element in sample ``n``.
    """

    def __init__(self, ids: tuple[Tensor, ...], inputs: tuple[Tensor, ...]):
        flat = torch.cat([m.reshape(-1) for m in ids])
        unique, inverse = torch.unique(flat, return_inverse=True)
        self.original_ids = unique
        self.n_groups = int(unique.numel())
        parts, start = [], 0
        for m in ids:
            parts.append(inverse[start:start + m.numel()].reshape(m.shape))
            start += m.numel()
        self.ids = tuple(parts)
        self.shapes = tuple(tuple(t.shape) for t in inputs)
        n = inputs[0].shape[0]
        present = torch.zeros(n, self.n_groups, dtype=torch.bool, device=flat.device)
        for m in self.ids:
            present.scatter_(1, m.expand(n, *m.shape[1:]).reshape(n, -1), True)
        self.present = present

    def expanded(self, i: int) -> Tensor:
        """Input ``i``'s group ids at every element, ``[N, ...]`` (a broadcast view)."""
        return self.ids[i].expand(self.shapes[i])

    def masks(self, z: Tensor, s: Tensor) -> tuple[Tensor, ...]:
        """Per input, ``z[b, id]`` at every mask element of sample ``s[b]``: ``[B, *mask dims]``."""
        out = []
        for m in self.ids:
            rows = m if m.shape[0] == 1 else m.index_select(0, s)
            rows = rows.expand(z.shape[0], *m.shape[1:]).reshape(z.shape[0], -1)
            out.append(z.gather(1, rows).reshape(z.shape[0], *m.shape[1:]))
        return tuple(out)

    def group_sums(self, values: tuple[Tensor, ...]) -> Tensor:
        """``[N, G]`` sums of per-element ``values`` (shaped like the inputs) over each group."""
        n = self.shapes[0][0]
        total = torch.zeros(n, self.n_groups, dtype=values[0].dtype, device=values[0].device)
        for i, v in enumerate(values):
            total.scatter_add_(1, self.expanded(i).reshape(n, -1), v.reshape(n, -1))
        return total

    def to_inputs(self, coef: Tensor) -> tuple[Tensor, ...]:
        """Group values ``[N, T, G]`` spread to every element: per input ``[N, T, ...]`` (input's shape)."""
        n, t, _ = coef.shape
        out = []
        for i, shape in enumerate(self.shapes):
            idx = self.expanded(i).reshape(n, 1, -1).expand(n, t, -1)
            out.append(coef.gather(2, idx).reshape(n, t, *shape[1:]))
        return tuple(out)


def resolve_feature_mask(spec: Any, inputs: tuple[Tensor, ...], was_tuple: bool) -> FeatureGroups:
    """``feature_mask`` (as ``feature_ablation`` takes it: integer ids, a tuple for tuple inputs, or a
    callable ``x -> mask``; ``None``: :func:`default_feature_mask`) as ``FeatureGroups``."""
    if spec is None:
        spec = default_feature_mask(inputs)
        spec = spec if was_tuple else spec[0]
    return FeatureGroups(feature_masks(spec, inputs, was_tuple), inputs)


def default_feature_mask(inputs: tuple[Tensor, ...], cells: int = 8) -> tuple[Tensor, ...]:
    """Grid superpixels, about ``cells`` per spatial dim (8×8 for images), for ``[N, C, *spatial]``
    inputs; one group per feature for ``[N, D]``; ids unique across the tensors of a tuple."""
    out, offset = [], 0
    for x in inputs:
        if x.dim() >= 3:
            ids = grid_superpixels(x, [-(-s // min(cells, s)) for s in x.shape[2:]])
        elif x.dim() == 2:
            ids = torch.arange(x.shape[1], device=x.device).reshape(1, -1)
        else:
            raise ValueError(f"no default feature_mask for x of shape {tuple(x.shape)}; pass feature_mask= "
                             "(integer group ids broadcastable to x)")
        out.append(ids + offset)
        offset += int(ids.max()) + 1
    return tuple(out)


# ---------------------------------------------------------------------------------- the methods
class _Surrogate(PerturbationMethod):
    """Shared sampling, evaluation and output formatting of ``lime`` and ``kernel_shap``."""

    def __init__(self, model: Any, *, n_samples: int = 1000, feature_mask: Any = None, baseline: Any = 0.0,
                 seed: int | None = None, return_input_shape: bool = True, **options: Any):
        n_samples = check_positive_int(n_samples, "n_samples")
        if not isinstance(return_input_shape, bool):
            raise TypeError(f"return_input_shape must be a bool, got {type(return_input_shape).__name__}")
        _check_mask_types(feature_mask)
        super().__init__(model, n_samples=n_samples, feature_mask=feature_mask, baseline=check_baseline_spec(baseline),
                         seed=check_seed(seed), return_input_shape=return_input_shape, **options)
        self.n_samples, self.feature_mask, self.baseline = n_samples, feature_mask, baseline
        self.seed, self.return_input_shape = seed, return_input_shape

    def _explain(self, x: Any, target: Any, forward_kwargs: dict[str, Any] | None) -> Explanation:
        prep = self.engine.prepare(x, target, forward_kwargs)
        inputs = prep.inputs
        groups = resolve_feature_mask(self.feature_mask, inputs, prep.was_tuple)
        baselines = baseline_tensors(self.baseline, prep, self.seed)
        gen = make_generator(self.seed, torch.device("cpu"))          # the same coalitions on every device
        z, weights, fixed = self._coalitions(groups.n_groups, gen)
        z_eval = (torch.cat([fixed, z]) > 0.5).to(prep.device)          # evaluated rows (bool): the fixed ones first

        def perturb(k: Tensor, s: Tensor) -> tuple[Tensor, ...]:
            keep = groups.masks(z_eval.index_select(0, k), s)
            return tuple(torch.where(m, x_i.index_select(0, s), b_i.index_select(0, s))
                         for m, x_i, b_i in zip(keep, inputs, baselines))

        scores = self.engine.evaluate(prep, z_eval.shape[0], perturb)                      # [N, K', T]
        coef, delta = self._fit(prep, groups, baselines, z, weights, scores, fixed.shape[0])   # [N, G, T], [N, T]
        coef = coef.transpose(1, 2)                                                          # [N, T, G]
        if self.return_input_shape:
            return self.explanation(prep, tuple(groups.to_inputs(coef)), delta)
        if not prep.target.multi:
            coef, delta = coef[:, 0], None if delta is None else delta[:, 0]
        return Explanation(coef, prep.target.public(), prep.outputs, delta, self.name, dict(self.options))

    def _coalitions(self, n_groups: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Coalitions ``[K, G]``, their weights (``[K]`` or None) and fixed extra rows to evaluate."""
        raise NotImplementedError

    def _fit(self, prep: PreparedPerturbation, groups: FeatureGroups, baselines: tuple[Tensor, ...], z: Tensor,
             weights: Tensor | None, scores: Tensor, n_fixed: int) -> tuple[Tensor, Tensor | None]:
        """Coefficients ``[N, G, T]`` and delta ``[N, T]`` (or None) from the scores ``[N, K', T]``."""
        raise NotImplementedError


@register
class Lime(_Surrogate):
    r"""LIME: a locally weighted linear surrogate over feature groups.

    Coalitions :math:`z_k \in \{0, 1\}^G` keep each feature group (1) or set it to the baseline
    (0), each group independently with probability 1/2 (Captum's sampling), drawn with ``seed``.
    With :math:`x'_k` the perturbed input and :math:`y_k = f(x'_k)` the target score, each
    sample's surrogate solves the weighted ridge regression

    .. math:: \min_{b, \beta} \sum_k \pi_k \big(y_k - b - z_k^\top \beta\big)^2 + \alpha \lVert\beta\rVert^2,
              \qquad \pi_k = \exp\!\Big(-\frac{d(x, x'_k)^2}{2\,w^2}\Big)

    with :math:`d` the cosine distance :math:`1 - \cos(x, x'_k)` (default) or the Euclidean
    distance between the flattened inputs (tuple inputs concatenated), kernel width ``w``
    (Captum's ``get_exp_kernel_similarity_function`` defaults: cosine, 1.0). The distances are
    computed exactly from per-group sums, without materialising the perturbed inputs twice.
    All N·T fits are one batched float64 solve in torch (no per-sample sklearn loop).

    The attribution of an element is its group's coefficient :math:`\beta_g` (Captum's
    ``return_input_shape=True``); ``return_input_shape=False`` returns ``[N, G]`` with the
    groups in increasing order of their ids.

    Ribeiro, Singh & Guestrin, "'Why Should I Trust You?': Explaining the Predictions of Any
    Classifier", KDD 2016 (arXiv:1602.04938).

    Options: ``n_samples`` (1000, the ``lime`` package's image default), ``feature_mask``
    (as for ``feature_ablation``: integer ids broadcastable to x, first dim 1 or N, a tuple for
    tuple inputs, or a callable ``x -> mask`` such as ``lambda x: slic_superpixels(x, 50)``;
    default: grid superpixels of about 8×8 cells, one group per column for ``[N, D]``), ``baseline`` (0), ``distance``
    (``"cosine"``/``"euclidean"``), ``kernel_width`` (1.0), ``alpha`` (ridge, 1.0 as in the
    ``lime`` package; 0 = plain weighted least squares as Captum's ``SkLearnLinearRegression``),
    ``seed``, ``return_input_shape``, ``batch_size``, ``memory_budget``.
    """

    name = "lime"
    aliases = ()

    def __init__(self, model: Any, *, distance: str = "cosine", kernel_width: float = 1.0, alpha: float = 1.0,
                 **options: Any):
        if distance not in ("cosine", "euclidean"):
            raise ValueError(f"distance must be 'cosine' or 'euclidean', got {distance!r}")
        kernel_width = check_real(kernel_width, "kernel_width", low=0.0, low_open=True)
        alpha = check_real(alpha, "alpha", low=0.0)
        super().__init__(model, distance=distance, kernel_width=kernel_width, alpha=alpha, **options)
        self.distance, self.kernel_width, self.alpha = distance, kernel_width, alpha

    def _coalitions(self, n_groups: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        z = bernoulli_coalitions(n_groups, self.n_samples, gen)
        return z, None, torch.zeros(0, n_groups, dtype=torch.float64)

    def _fit(self, prep, groups, baselines, z, weights, scores, n_fixed):
        weights = self.similarity(groups, prep.inputs, baselines, z.to(scores.device))
        coef, _ = solve_weighted_linear(z, scores, weights, present=groups.present, ridge=self.alpha)
        return coef, None

    def similarity(self, groups: FeatureGroups, inputs: tuple[Tensor, ...], baselines: tuple[Tensor, ...],
                   z: Tensor) -> Tensor:
        """Kernel weights ``[N, K]`` of the coalitions ``z`` for every sample."""
        work = torch.float64 if z.device.type != "mps" else torch.float32
        xs = tuple(x.to(work) for x in inputs)
        bs = tuple(b.to(work) for b in baselines)
        z = z.to(work)
        off = 1.0 - z
        if self.distance == "euclidean":
            dd = groups.group_sums(tuple((x - b) ** 2 for x, b in zip(xs, bs)))            # [N, G]
            dist = (dd @ off.T).clamp_min(0).sqrt()
        else:
            xx = groups.group_sums(tuple(x * x for x in xs))
            xb = groups.group_sums(tuple(x * b for x, b in zip(xs, bs)))
            bb = groups.group_sums(tuple(b * b for b in bs))
            dot = xx @ z.T + xb @ off.T                                                        # [N, K]
            norm_x = xx.sum(dim=1, keepdim=True).sqrt().clamp_min(1e-8)
            norm_p = (xx @ z.T + bb @ off.T).clamp_min(0).sqrt().clamp_min(1e-8)
            dist = 1.0 - dot / (norm_x * norm_p)
        return torch.exp(-dist ** 2 / (2 * self.kernel_width ** 2))


@register
class KernelShap(_Surrogate):
    r"""Kernel SHAP: Shapley values of feature groups by a Shapley-kernel weighted regression.

    With the value function :math:`v(S) = f(x_S, b_{\bar S})` (groups outside S at the baseline),
    Kernel SHAP solves

    .. math:: \min_\phi \sum_{z} \pi(z)\,\big(v(z) - v(\emptyset) - z^\top\phi\big)^2
              \quad\text{s.t.}\quad \textstyle\sum_g \phi_g = v(\text{all}) - v(\emptyset),
              \qquad \pi(z) = \frac{G - 1}{\binom{G}{|z|}\,|z|\,(G - |z|)}

    whose solution over all coalitions is exactly the Shapley values. The empty and full
    coalitions, which have infinite kernel weight, enter as exact constraints (a KKT system:
    intercept :math:`v(\emptyset)` and efficiency), not as large finite weights, so the
    attributions sum to :math:`f(x) - f(b)` to rounding (``delta`` reports it). Coalition sizes
    are enumerated completely from the outside in (1 and G-1, 2 and G-2, ...) while
    ``n_samples`` allows, and the rest are sampled in complementary pairs with probability
    proportional to their kernel mass (the ``shap`` package's scheme); with
    ``n_samples >= 2^G - 2`` every coalition is evaluated and the result is exact. All N·T fits
    are one batched float64 solve.

    Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017
    (arXiv:1705.07874).

    Options: ``n_samples`` (1000: exact for up to 9 groups), ``feature_mask`` (as for
    ``lime``), ``baseline`` (0), ``seed``, ``return_input_shape``, ``batch_size``, ``memory_budget``.
    ``Explanation.delta`` = ``sum_g phi_g - (f(x) - f(b))`` per sample (over groups: with
    ``return_input_shape=True`` every element carries its group's value).
    """

    name = "kernel_shap"
    aliases = ("kernelshap", "kernel_shapley")
    claims_completeness = True

    def _coalitions(self, n_groups: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        z, w = shapley_coalitions(n_groups, self.n_samples, gen)
        return z, w, torch.zeros(1, n_groups, dtype=torch.float64)      # the empty coalition: v(∅)

    def _fit(self, prep, groups, baselines, z, weights, scores, n_fixed):
        f_empty = scores[:, 0]
        f_full = prep.target_values().to(scores.dtype)
        coef, _ = solve_weighted_linear(z, scores[:, n_fixed:], weights, present=groups.present,
                                        offset=f_empty, total=f_full - f_empty)
        delta = coef.sum(dim=1) - (f_full - f_empty)
        return coef, delta

"""Integrated Gradients."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..api import register
from ..baselines import LayerBaseline, is_multi_baseline, resolve_baseline
from .base import GradientMethod, completeness_delta, make_generator, per_point
from .engine import Prepared
from .integration import alphas_and_weights, check_rule, check_steps


def baseline_space(method: GradientMethod, prep: Prepared, baseline_inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The baseline in attribution space: the inputs, or the layer's tensor on the baseline inputs."""
    engine = method.engine
    if engine.tap is None:
        return baseline_inputs
    with torch.no_grad(), engine.tap.active():
        engine.call(baseline_inputs, prep.forward_kwargs)
    return (engine.tap.captured.detach(),)


def path_baselines(method: GradientMethod, prep: Prepared, spec: Any, seed: int | None) -> list[tuple[Tensor, ...]]:
    """Resolve ``baseline=`` (one spec or a list of specs) to attribution-space tuples."""
    specs = spec if is_multi_baseline(spec) else [spec]
    if len(specs) == 0:
        raise ValueError("baseline: an empty list of baselines was given")
    needs_rng = any(isinstance(s, str) and s == "uniform" for s in specs)
    gen = make_generator(seed, prep.inputs[0].device) if needs_rng else None
    out = []
    for i, one in enumerate(specs):
        name = f"baseline[{i}]" if len(specs) > 1 else "baseline"
        if isinstance(one, LayerBaseline) and method.engine.tap is not None:   # already in the layer's space
            out.append((one.resolve(prep.space[0], name),))
            continue
        resolved = resolve_baseline(one, prep.inputs, prep.was_tuple, gen, name=name)
        out.append(baseline_space(method, prep, resolved))
    return out


@register
class IntegratedGradients(GradientMethod):
    r"""Integrated Gradients: the gradient integrated along the straight path from a baseline.

    .. math:: \mathrm{IG}_i(x) = (x_i - x'_i)\int_0^1 \frac{\partial f_y(x' + \alpha(x - x'))}{\partial x_i}\,d\alpha
              \approx (x_i - x'_i)\sum_k w_k\, \partial_i f_y(x' + \alpha_k (x - x'))

    Satisfies completeness, :math:`\sum_i \mathrm{IG}_i = f_y(x) - f_y(x')` (reported as
    ``delta``), sensitivity, implementation invariance, dummy, linearity and symmetry.

    Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017.

    Options: ``n_steps`` (default 50), ``integration`` (``riemann_left``, ``riemann_right``,
    ``riemann_middle``, ``riemann_trapezoid``, ``gausslegendre`` — Captum's names, default
    ``gausslegendre``), ``baseline`` (see ``propex.baselines``; a list averages over
    several baselines), ``seed`` (for ``baseline="uniform"``), plus ``layer``/``batch_size``.
    """

    name = "integrated_gradients"
    aliases = ("ig", "intgrad")
    claims_completeness = True

    def __init__(self, model: Any, *, n_steps: int = 50, integration: str = "gausslegendre",
                 baseline: Any = None, seed: int | None = None, **options: Any):
        check_steps(n_steps)
        integration = check_rule(integration)
        alphas_and_weights(integration, n_steps)  # validates n_steps for the rule
        super().__init__(model, n_steps=n_steps, integration=integration, baseline=baseline, seed=seed, **options)
        self.n_steps, self.integration, self.baseline, self.seed = n_steps, integration, baseline, seed

    def _attribute(self, prep: Prepared) -> tuple[tuple[Tensor, ...], Tensor]:
        baselines = path_baselines(self, prep, self.baseline, self.seed)
        total_attr, total_delta = None, None
        for base in baselines:
            attr, delta = self._one_baseline(prep, base)
            total_attr = attr if total_attr is None else tuple(a + b for a, b in zip(total_attr, attr))
            total_delta = delta if total_delta is None else total_delta + delta
        m = len(baselines)
        return tuple(a / m for a in total_attr), total_delta / m

    def _one_baseline(self, prep: Prepared, base: tuple[Tensor, ...]) -> tuple[tuple[Tensor, ...], Tensor]:
        space = prep.space
        alphas, weights = alphas_and_weights(self.integration, self.n_steps)
        dtype, device = space[0].dtype, space[0].device
        alphas, weights = alphas.to(dtype=dtype, device=device), weights.to(dtype=dtype, device=device)
        diffs = tuple(x - b for x, b in zip(space, base))

        def points(k: Tensor, s: Tensor) -> tuple[Tensor, ...]:
            a = alphas[k].reshape(-1, *[1] * (space[0].dim() - 1))
            return tuple(b.index_select(0, s) + _bcast(a, d) * d.index_select(0, s) for b, d in zip(base, diffs))

        def terms(g: tuple[Tensor, ...], k: Tensor, s: Tensor) -> list[Tensor]:
            w = weights[k]
            return [gi * w.reshape(-1, *[1] * (gi.dim() - 1)) for gi in g]

        sums = self.engine.reduce(prep, self.n_steps, points, terms)
        attr = tuple(per_point(d) * sm for d, sm in zip(diffs, sums))
        idx = torch.arange(prep.n, device=device)
        delta = completeness_delta(attr, prep.target_values(), self.engine.values(prep, base, idx))
        return attr, delta


def _bcast(a: Tensor, like: Tensor) -> Tensor:
    return a.reshape(-1, *[1] * (like.dim() - 1))

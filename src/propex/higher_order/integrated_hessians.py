"""Integrated Hessians."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from ..api import register
from ..gradient.integration import check_steps
from .base import InteractionMethod
from .quadrature import log_weight_rule


@register
class IntegratedHessians(InteractionMethod):
    r"""Integrated Hessians: pairwise feature interactions, Integrated Gradients applied to itself.

    With :math:`\Delta x = x - x'` and the straight path from the baseline :math:`x'`,

    .. math:: \Gamma_{ij} = \Delta x_i \Delta x_j \int_0^1\!\!\int_0^1 \alpha\beta\,
              \frac{\partial^2 f}{\partial x_i \partial x_j}(x' + \alpha\beta\,\Delta x)\,d\alpha\,d\beta
              \quad (i \ne j),
    .. math:: \Gamma_{ii} = \Delta x_i \int_0^1\!\!\int_0^1 \frac{\partial f}{\partial x_i}(x' + \alpha\beta\,\Delta x)
              \,d\alpha\,d\beta + \Delta x_i^2 \int_0^1\!\!\int_0^1 \alpha\beta\,
              \frac{\partial^2 f}{\partial x_i^2}(x' + \alpha\beta\,\Delta x)\,d\alpha\,d\beta,

    so that :math:`\sum_j \Gamma_{ij} = \mathrm{IG}_i(x)` and
    :math:`\sum_{ij}\Gamma_{ij} = f(x) - f(x')` (``delta`` reports the quadrature error).
    The integrand depends on :math:`t = \alpha\beta` only, so the double integral is one
    integral with weight :math:`-\log t` (:mod:`propex.higher_order.quadrature`), evaluated with
    an ``n_steps``-node Gauss rule that is exact for integrands polynomial in t of degree
    ``2·n_steps - 1`` (for a quadratic model any ``n_steps`` is exact).

    Janizek, Sturmfels & Lee, "Explaining Explanations: Axiomatic Feature Interactions for
    Deep Networks", JMLR 22 (2021).

    Returns ``[N, d, d]`` over the flattened features of x (all tensors of a tuple x
    concatenated), or ``[N, G, G]`` with ``groups=`` (an integer mask like feature_ablation's
    ``feature_mask``: patches, tokens; group ids in ``options["group_ids"]``); ``[N, T, ...]``
    with several targets. ReLU networks have a zero Hessian almost everywhere: pass
    ``beta_smooth=`` (e.g. 10) to explain the softplus_β network instead, as the paper does.

    Options: ``n_steps`` (default 32), ``baseline`` (see ``propex.baselines``; a list averages),
    ``groups``, ``beta_smooth``, ``layer``, ``batch_size`` / ``memory_budget``, ``seed``.
    """

    name = "integrated_hessians"
    aliases = ("ih",)

    def __init__(self, model: Any, *, n_steps: int = 32, **options: Any):
        check_steps(n_steps)
        super().__init__(model, n_steps=n_steps, **options)
        self.options["n_steps"] = n_steps
        self.n_steps = n_steps

    def nodes(self) -> tuple[Tensor, Tensor, Tensor]:
        t, w = log_weight_rule(self.n_steps)
        return t, w, w * t

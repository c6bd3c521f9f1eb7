"""Quadrature rules for path integrals over α ∈ [0, 1].

The names and point sets are Captum's, so results can be compared one to one (for
``riemann_trapezoid`` see the note below):

* ``riemann_left``   α_k = k/n,        w_k = 1/n   (k = 0..n-1)
* ``riemann_right``  α_k = (k+1)/n,    w_k = 1/n
* ``riemann_middle`` α_k = (k+½)/n,    w_k = 1/n
* ``riemann_trapezoid`` α_k = k/(n-1), w = 1/(n-1) with halved end weights (n ≥ 2)
* ``gausslegendre``  Gauss–Legendre nodes and weights mapped from [-1, 1] to [0, 1]

Note: Captum's ``riemann_trapezoid`` uses the same points α_k = k/(n-1) but weights
1/n (halved at the ends), which sum to (n-1)/n; its attributions are therefore the
trapezoid rule scaled by (n-1)/n and miss completeness by (f(x) - f(x'))/n. propex uses
the trapezoid rule itself, so ``propex == captum * n/(n-1)`` for this rule
(``tests/gradient/test_captum_parity.py`` pins the relation).
"""
from __future__ import annotations

import functools
import numbers

import numpy as np
import torch

INTEGRATION_RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")
_ALIASES = {"left": "riemann_left", "right": "riemann_right", "middle": "riemann_middle",
            "trapezoid": "riemann_trapezoid", "riemann_trapezium": "riemann_trapezoid",
            "gauss_legendre": "gausslegendre"}


def check_rule(integration: str) -> str:
    if not isinstance(integration, str):
        raise TypeError(f"integration must be one of {', '.join(INTEGRATION_RULES)}, got {type(integration).__name__}")
    rule = _ALIASES.get(integration, integration)
    if rule not in INTEGRATION_RULES:
        raise ValueError(f"integration={integration!r} is not a known rule; choose one of {', '.join(INTEGRATION_RULES)}")
    return rule


def check_steps(n_steps: int, name: str = "n_steps") -> int:
    if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral):
        raise TypeError(f"{name} must be an int >= 1, got {type(n_steps).__name__}")
    if n_steps < 1:
        raise ValueError(f"{name} must be >= 1, got {n_steps}")
    return int(n_steps)


def alphas_and_weights(integration: str, n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 tensors ``(alphas [n], weights [n])`` with ``sum(weights) == 1``."""
    rule = check_rule(integration)
    n = check_steps(n_steps)
    alphas, weights = _nodes(rule, n)
    return torch.from_numpy(alphas.copy()), torch.from_numpy(weights.copy())


@functools.lru_cache(maxsize=64)
def _nodes(rule: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    k = np.arange(n, dtype=np.float64)
    if rule == "riemann_left":
        alphas, weights = k / n, np.full(n, 1.0 / n)
    elif rule == "riemann_right":
        alphas, weights = (k + 1) / n, np.full(n, 1.0 / n)
    elif rule == "riemann_middle":
        alphas, weights = (k + 0.5) / n, np.full(n, 1.0 / n)
    elif rule == "riemann_trapezoid":
        if n < 2:
            raise ValueError("n_steps must be >= 2 for integration='riemann_trapezoid'")
        alphas = k / (n - 1)
        weights = np.full(n, 1.0 / (n - 1))
        weights[[0, -1]] /= 2
    else:
        nodes, w = np.polynomial.legendre.leggauss(n)
        alphas, weights = (nodes + 1) / 2, w / 2
    return alphas, weights

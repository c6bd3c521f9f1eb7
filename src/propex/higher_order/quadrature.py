r"""Gauss quadrature for the double path integral of Integrated Hessians.

Integrated Hessians integrate over :math:`\alpha, \beta \in [0, 1]` a function of the product
:math:`t = \alpha\beta` only. Swapping the order of integration,

.. math:: \int_0^1\!\!\int_0^1 g(\alpha\beta)\,d\alpha\,d\beta = \int_0^1 g(t)\,(-\log t)\,dt,

so one 1-D Gauss rule for the weight :math:`w(t) = -\log t` on [0, 1] replaces the
:math:`n^2`-point product rule: ``n`` nodes integrate polynomials in ``t`` of degree
``2n - 1`` exactly (a quadratic model needs one node). The recurrence coefficients come from
the modified Chebyshev algorithm with monic shifted Legendre polynomials, whose modified
moments for this weight are known in closed form (Gautschi, "Orthogonal Polynomials:
Computation and Approximation", 2004, Example 2.27); nodes and weights from the Jacobi matrix
(Golub & Welsch 1969).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch


def log_weight_rule(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Float64 ``(nodes [n], weights [n])`` with :math:`\sum_k w_k p(t_k) = \int_0^1 p(t)(-\log t)\,dt`
    for polynomials of degree :math:`\le 2n-1`; the weights sum to 1."""
    nodes, weights = _rule(int(n))
    return torch.from_numpy(nodes.copy()), torch.from_numpy(weights.copy())


@functools.lru_cache(maxsize=32)
def _rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    if n < 1:
        raise ValueError(f"n_steps must be >= 1, got {n}")
    alpha, beta = _recurrence(n)
    jacobi = np.diag(alpha) + np.diag(np.sqrt(beta[1:]), 1) + np.diag(np.sqrt(beta[1:]), -1)
    nodes, vectors = np.linalg.eigh(jacobi)
    weights = beta[0] * vectors[0] ** 2
    return nodes, weights


def _recurrence(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Recurrence coefficients (α_k, β_k), k < n, of the monic orthogonal polynomials for -log t on [0, 1]."""
    m = 2 * n
    # monic shifted Legendre polynomials: p_{k+1} = (t - 1/2) p_k - b_k p_{k-1}
    a = np.full(m, 0.5)
    b = np.array([0.0] + [k * k / (4.0 * (4.0 * k * k - 1.0)) for k in range(1, m)])
    # modified moments  ∫ p_k(t) (-log t) dt  of the monic p_k: the Legendre ones times k!² / (2k)!
    mom = np.empty(m)
    mom[0] = 1.0
    for k in range(1, m):
        log_scale = 2 * math.lgamma(k + 1) - math.lgamma(2 * k + 1)
        mom[k] = (-1.0) ** k / (k * (k + 1.0)) * math.exp(log_scale)
    alpha, beta = np.zeros(n), np.zeros(n)
    alpha[0], beta[0] = a[0] + mom[1] / mom[0], mom[0]
    sig_prev = np.zeros(m + 1)            # σ_{k-2, l}
    sig = mom.copy()                      # σ_{k-1, l}
    for k in range(1, n):
        new = np.zeros(m)
        for l in range(k, m - k):
            new[l] = (sig[l + 1] - (alpha[k - 1] - a[l]) * sig[l] - beta[k - 1] * sig_prev[l] + b[l] * sig[l - 1])
        alpha[k] = a[k] + new[k + 1] / new[k] - sig[k] / sig[k - 1]
        beta[k] = new[k] / sig[k - 1]
        sig_prev, sig = np.append(sig, 0.0), new
    return alpha, beta

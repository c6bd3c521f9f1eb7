r"""Kernel k-means as a strictly equivalent network (seed 001 §3.e; NEON, Kauffmann et al. 2019).

Cluster c's soft assignment with kernel bandwidth γ and stiffness β is

.. math:: p_c(x) = \frac{\big(Z_c^{-1}\sum_{i \in C_c} e^{-\gamma\|x - x_i\|^2}\big)^{\beta/\gamma}}
                        {\sum_k \big(Z_k^{-1}\sum_{j \in C_k} e^{-\gamma\|x - x_j\|^2}\big)^{\beta/\gamma}},
          \qquad Z_k = |C_k|,

and its log-likelihood ratio is a linear layer followed by three pooling layers,

.. math:: \log\frac{p_c}{1 - p_c} = \beta\,\mathrm{smin}^\beta_{k \ne c}\Big\{\mathrm{smin}^\gamma_{j \in C_k}
          \Big\{\mathrm{smax}^\gamma_{i \in C_c}\{w_{ij}^\top x + b_{ijk}\}\Big\}\Big\},

:math:`w_{ij} = 2(x_i - x_j)`, :math:`b_{ijk} = \|x_j\|^2 - \|x_i\|^2 + \gamma^{-1}(\log Z_k - \log Z_c)`,
:math:`\mathrm{smin}^\gamma = -\gamma^{-1}\log\sum e^{-\gamma\,\cdot}`,
:math:`\mathrm{smax}^\gamma = \gamma^{-1}\log\sum e^{\gamma\,\cdot}`.
scikit-learn has no kernel k-means estimator: build the network from the data and the cluster
labels with :func:`kernel_kmeans`.

NEON relevance: each pooling layer passes relevance on in proportion to its soft-min / soft-max
weights; the linear layer uses the midpoint root :math:`(x_i + x_j)/2`, where
:math:`w_{ij}^\top(x - \frac{x_i + x_j}{2}) = \sum_d (x_d - x_{jd})^2 - (x_d - x_{id})^2`, so input
dimension d receives
:math:`\sum R_{kji}\,\frac{(x_d - x_{jd})^2 - (x_d - x_{id})^2}{h_{ijk} + \epsilon\,\mathrm{sign}}`.
The cluster-size term :math:`b = \gamma^{-1}\log(Z_k/Z_c)` is absorbed by moving the root point
along :math:`w_{ij}` (to the pair's decision boundary): dimension d gets the extra share
:math:`b\,w_{ij,d}^2/\|w_{ij}\|^2`, so relevance is conserved. Exact ties :math:`|h_{ijk}| \approx 0`
(equidistant samples, common in rounded data) would divide by rounding noise: their relevance
goes to the dimensions by the same shares :math:`w_{ij,d}^2/\|w_{ij}\|^2`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .layers import _CHUNK_ELEMENTS, _stabilize
from .model import Neuralized


_TIE = 1e-9     # |h| below this fraction of the largest |h| of the sample counts as a tie


class KernelKMeansNet(Neuralized):
    """``[N, d] -> [N, K]`` log-likelihood ratios of a kernel k-means clustering (see the module doc)."""

    source = "kernel k-means"

    def __init__(self, data: Tensor, labels: Tensor, gamma: float, beta: float, classes: list | None = None):
        super().__init__()
        self.register_buffer("data", data)
        self.register_buffer("labels", labels)
        self.register_buffer("log_z", torch.log(torch.bincount(labels).to(data.dtype)))
        self.gamma, self.beta = float(gamma), float(beta)
        self.classes = classes
        self.output = "log_likelihood_ratio"

    @property
    def n_features(self) -> int:
        return self.data.shape[1]

    @property
    def n_clusters(self) -> int:
        return self.log_z.numel()

    def _members(self, c: int) -> Tensor:
        return (self.labels == c).nonzero()[:, 0]

    def cluster_scores(self, x: Tensor) -> Tensor:
        r""":math:`s_k = \gamma^{-1}\log(Z_k^{-1}\sum_{j \in C_k} e^{-\gamma\|x - x_j\|^2})`, ``[N, K]``."""
        d2 = ((x * x).sum(1, keepdim=True) - 2 * x @ self.data.T + (self.data * self.data).sum(1)).clamp_min(0)
        logits = -self.gamma * d2
        s = torch.stack([torch.logsumexp(logits[:, self._members(k)], dim=1) for k in range(self.n_clusters)], 1)
        return (s - self.log_z) / self.gamma

    def forward(self, x: Tensor) -> Tensor:
        s = self.cluster_scores(self.check_input(x))
        diff = s[:, :, None] - s[:, None, :]                                  # [N, c, k]: s_c - s_k
        eye = torch.eye(self.n_clusters, dtype=torch.bool, device=x.device)
        return -torch.logsumexp((-self.beta * diff).masked_fill(eye, -torch.inf), dim=2)

    def layered(self, x: Tensor) -> Tensor:
        """The same ``[N, K]`` computed through the network's layers (linear, smax, smin, smin)."""
        x = self.check_input(x)
        return torch.stack([self._pass(x, torch.full((x.shape[0],), c, device=x.device), None, 0.0)
                            for c in range(self.n_clusters)], 1)

    def relevance(self, x: Tensor, k: Tensor, epsilon: float = 0.0) -> Tensor:
        out = torch.zeros_like(x)
        self._pass(x, k, out, epsilon)
        return out

    def _pass(self, x: Tensor, target: Tensor, out: Tensor | None, epsilon: float) -> Tensor:
        """Forward through the layers for cluster ``target[N]``; with ``out`` also add the NEON relevance to it."""
        score = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        n, d = x.shape
        step = max(1, _CHUNK_ELEMENTS // max(1, self.data.shape[0] * d))
        for c in target.unique().tolist():
            members_c = self._members(c)
            rows_all = (target == c).nonzero()[:, 0]
            for r0 in range(0, len(rows_all), step):
                rows = rows_all[r0:r0 + step]
                a = (x[rows, None, :] - self.data[None]) ** 2                            # [B, n, d]
                d2 = a.sum(-1)
                rivals = [k for k in range(self.n_clusters) if k != c]
                hs, us, ds = [], [], []
                for k in rivals:
                    members_k = self._members(k)
                    bias = (self.log_z[k] - self.log_z[c]) / self.gamma
                    h = d2[:, members_k, None] - d2[:, None, members_c] + bias           # [B, n_k, n_c]
                    u = torch.logsumexp(self.gamma * h, dim=2) / self.gamma              # smax over i
                    hs.append(h), us.append(u)
                    ds.append(-torch.logsumexp(-self.gamma * u, dim=1) / self.gamma)     # smin over j
                dk = torch.stack(ds, 1)                                                   # [B, K-1]
                ell = -torch.logsumexp(-self.beta * dk, dim=1)                            # β smin^β
                score[rows] = ell
                if out is None:
                    continue
                r_k = torch.softmax(-self.beta * dk, dim=1) * ell[:, None]
                for col, (k, h, u) in enumerate(zip(rivals, hs, us)):
                    r_kji = (r_k[:, col, None, None] * torch.softmax(-self.gamma * u, dim=1)[:, :, None]
                             * torch.softmax(self.gamma * h, dim=2))                       # [B, n_k, n_c]
                    # ties |h| ~ 0 (equidistant samples: common in rounded data) would divide by rounding
                    # noise: a tie's relevance goes to the dimensions by w_d² / ||w||² instead (conserved)
                    tie = h.abs() <= _TIE * h.abs().amax(dim=(1, 2), keepdim=True)
                    rho = torch.where(tie, torch.zeros_like(h), r_kji / _stabilize(h, epsilon))
                    members_k = self._members(k)
                    out[rows] += (torch.einsum("bj,bjd->bd", rho.sum(2), a[:, members_k])
                                  - torch.einsum("bi,bid->bd", rho.sum(1), a[:, members_c]))
                    # the cluster-size bias b is absorbed by the root point moved along w_ij: shares w_d² / ||w||²
                    bias = float(self.log_z[k] - self.log_z[c]) / self.gamma
                    along_w = bias * rho + torch.where(tie, r_kji, torch.zeros_like(h))
                    out[rows] += torch.einsum("bji,jid->bd", along_w, _direction_shares(self.data[members_c],
                                                                                        self.data[members_k]))
        return score

    def extra_repr(self) -> str:
        return f"n={self.data.shape[0]}, clusters={self.n_clusters}, gamma={self.gamma}, beta={self.beta}"


def _direction_shares(xc: Tensor, xk: Tensor) -> Tensor:
    """``[n_k, n_c, d]``: (x_i - x_j)_d² / ||x_i - x_j||² (1/d for identical points)."""
    w2 = (xc[None] - xk[:, None]) ** 2
    norm = w2.sum(-1, keepdim=True)
    even = torch.full_like(w2, 1.0 / w2.shape[-1])
    return torch.where(norm > 0, w2 / norm.clamp_min(torch.finfo(w2.dtype).tiny), even)


def kernel_kmeans(data: Any, labels: Any, *, gamma: float, beta: float | None = None,
                  dtype: torch.dtype = torch.float64) -> KernelKMeansNet:
    """The network of a kernel k-means clustering of ``data`` ``[n, d]`` into ``labels`` ``[n]``.

    ``gamma``: the Gaussian kernel's :math:`\\gamma` (:math:`k(x, x') = e^{-\\gamma\\|x - x'\\|^2}`);
    ``beta``: the assignment stiffness (default ``gamma``: the posterior of per-cluster kernel
    density estimates). Output ``[N, K]``: :math:`\\log(p_c / (1 - p_c))`, clusters in the order of
    ``np.unique(labels)`` (``model.classes``).
    """
    x = np.asarray(data, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2:
        raise ValueError(f"data must be an [n, d] array, got shape {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"labels must be a 1-D array of n={x.shape[0]} cluster labels, got shape {y.shape}")
    classes, index = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError("kernel_kmeans needs at least two clusters in labels")
    for name, value in (("gamma", gamma), ("beta", beta)):
        if value is None and name == "beta":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a number > 0, got {value!r}")
    beta = gamma if beta is None else beta
    return KernelKMeansNet(torch.as_tensor(x).to(dtype), torch.as_tensor(index, dtype=torch.long), gamma, beta,
                           classes=classes.tolist()).eval()

r"""The layers of neuralized models, each with its forward pass and its relevance rule.

* :class:`SquaredDistance` — :math:`h_{kj} = \gamma\|x - u_{kj}\|^2 + b_{kj}` (kernel models):
  relevance goes to the input dimensions in proportion to the squared differences,
  :math:`R_i = \sum_j R_{kj}\,(x_i - u_{kj,i})^2 / \|x - u_{kj}\|^2` (Kauffmann, Müller &
  Montavon, "Towards explaining anomalies", Pattern Recognit. 2020): the bias
  :math:`b = -\log\alpha` is redistributed with the distance, so relevance is conserved.
* :class:`PairwiseLinear` — :math:`h_{kl} = w_{kl}^\top(x - m_{kl}) + b_{kl}` (k-means, softmax):
  LRP-0/ε with the root point :math:`m_{kl}`,
  :math:`R_i = \sum_l \frac{w_{kl,i}(x_i - m_{kl,i})}{h_{kl} + \epsilon\,\mathrm{sign}(h_{kl})} R_{kl}`.
  For k-means :math:`m_{kl} = (\mu_k + \mu_l)/2` and b = 0 (NEON's midpoint rule, exact
  conservation); for logistic regression m = 0 and the bias keeps its share
  :math:`R_{kl} b_{kl} / h_{kl}`.
* :class:`SoftMin` — :math:`\mathrm{smin}^\beta_l h_l = -\frac1\beta\log\sum_l e^{-\beta h_l}`
  (β = ∞: min): relevance is redistributed in proportion to the soft-min weights
  :math:`p_l = e^{-\beta h_l}/\sum_{l'} e^{-\beta h_{l'}}` (NEON, Kauffmann et al. 2019); the
  hard min gives everything to the minimum (ties split equally).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

_CHUNK_ELEMENTS = 1 << 22     # bound the [N, M, d] difference tensors of the relevance rules


class SquaredDistance(nn.Module):
    r"""``[N, d] -> [N, K, M]``: :math:`h_{kj} = \gamma \|x - u_{kj}\|^2 + b_{kj}` (centres ``[K, M, d]``)."""

    def __init__(self, centers: Tensor, gamma: float, bias: Tensor):
        super().__init__()
        self.register_buffer("centers", centers)
        self.register_buffer("bias", bias)
        self.gamma = float(gamma)

    def forward(self, x: Tensor) -> Tensor:
        c = self.centers
        sq = (x * x).sum(1)[:, None, None] - 2 * torch.einsum("nd,kmd->nkm", x, c) + (c * c).sum(-1)[None]
        return self.gamma * sq.clamp_min(0) + self.bias[None]

    def relevance(self, x: Tensor, k: Tensor, r: Tensor, epsilon: float = 0.0) -> Tensor:
        """Input relevance ``[N, d]`` from relevance ``r`` ``[N, M]`` on the units of output ``k[N]``."""
        n, d = x.shape
        centers = self.centers.index_select(0, k)                     # [N, M, d]
        m = centers.shape[1]
        step = max(1, _CHUNK_ELEMENTS // max(1, n * d))
        out = torch.zeros_like(x)
        for j0 in range(0, m, step):
            diff2 = (x[:, None, :] - centers[:, j0:j0 + step]) ** 2           # [N, m, d]
            dist = diff2.sum(-1, keepdim=True)
            share = torch.where(dist > 0, diff2 / dist.clamp_min(torch.finfo(x.dtype).tiny),
                                torch.full_like(diff2, 1.0 / d))
            out += (share * r[:, j0:j0 + step, None]).sum(1)
        return out


class PairwiseLinear(nn.Module):
    r"""``[N, d] -> [N, K, L]``: :math:`h_{kl} = w_{kl}^\top (x - m_{kl}) + b_{kl}`."""

    def __init__(self, weight: Tensor, center: Tensor | None, bias: Tensor | None):
        super().__init__()
        k, l, _ = weight.shape
        self.register_buffer("weight", weight)
        self.register_buffer("center", center if center is not None else torch.zeros_like(weight))
        self.register_buffer("bias", bias if bias is not None else weight.new_zeros(k, l))

    def forward(self, x: Tensor) -> Tensor:
        offset = (self.weight * self.center).sum(-1)
        return torch.einsum("nd,kld->nkl", x, self.weight) - offset[None] + self.bias[None]

    def relevance(self, x: Tensor, k: Tensor, r: Tensor, epsilon: float = 0.0) -> Tensor:
        w = self.weight.index_select(0, k)                                  # [N, L, d]
        z = w * (x[:, None, :] - self.center.index_select(0, k))           # [N, L, d]
        h = z.sum(-1) + self.bias.index_select(0, k)                        # [N, L]
        return (z * (r / _stabilize(h, epsilon))[:, :, None]).sum(1)


class SoftMin(nn.Module):
    r"""``[N, K, L] -> [N, K]``: :math:`-\frac1\beta \log \sum_l e^{-\beta h_{kl}}`; β = ∞ is the min."""

    def __init__(self, beta: float = math.inf):
        super().__init__()
        self.beta = float(beta)

    def forward(self, h: Tensor) -> Tensor:
        if math.isinf(self.beta):
            return h.min(dim=-1).values
        return -torch.logsumexp(-self.beta * h, dim=-1) / self.beta

    def weights(self, h: Tensor) -> Tensor:
        """Soft-min weights ``[..., L]`` (sum to 1): how the pooled relevance is redistributed."""
        if math.isinf(self.beta):
            hit = (h == h.min(dim=-1, keepdim=True).values).to(h.dtype)
            return hit / hit.sum(-1, keepdim=True)
        return torch.softmax(-self.beta * h, dim=-1)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


def _stabilize(h: Tensor, epsilon: float) -> Tensor:
    sign = torch.where(h >= 0, torch.ones_like(h), -torch.ones_like(h))
    return torch.where(h == 0, sign * max(epsilon, torch.finfo(h.dtype).tiny), h + epsilon * sign)

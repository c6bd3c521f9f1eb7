"""Second-order Taylor interactions."""
from __future__ import annotations


import torch
from torch import Tensor

from ..api import register
from .base import InteractionMethod


@register
class TaylorInteractions(InteractionMethod):
    r"""Feature interactions from the second-order Taylor expansion at a reference point.

    Around the reference :math:`\tilde x` (``baseline``, zeros by default), with
    :math:`\Delta x = x - \tilde x`,

    .. math:: f(x) \approx f(\tilde x) + \sum_i [\nabla f(\tilde x)]_i \Delta x_i
              + \sum_{ii'} \tfrac12 [\nabla^2 f(\tilde x)]_{ii'} \Delta x_i \Delta x_{i'} ,

    and the interaction matrix is :math:`R_{ii'} = \frac12 H_{ii'}\Delta x_i \Delta x_{i'}` with the
    first-order term :math:`[\nabla f(\tilde x)]_i \Delta x_i` added on the diagonal, so
    :math:`\sum_{ii'} R_{ii'}` is the second-order Taylor approximation of
    :math:`f(x) - f(\tilde x)`: ``delta`` is the remainder (zero for a quadratic function; the
    method does not claim completeness in general).
    Groups sum their members' terms: :math:`R_{GH} = \sum_{i \in G, i' \in H} R_{ii'}`.

    Montavon et al., "Layer-wise relevance propagation: an overview" (2019) and the seed's
    "Explanation with 2nd-order Taylor expansions"; Bach et al., PLoS ONE 2015 (Taylor
    decomposition). ReLU networks: the Hessian is zero almost everywhere, use ``beta_smooth=``.

    Options: ``baseline`` (the reference point), ``groups``, ``beta_smooth``, ``layer``,
    ``batch_size`` / ``memory_budget``, ``seed``. Output shapes as ``integrated_hessians``.
    """

    name = "taylor_interactions"
    aliases = ("second_order_taylor", "taylor2")
    claims_completeness = False     # exact only for quadratic f; delta reports the Taylor remainder

    def nodes(self) -> tuple[Tensor, Tensor, Tensor]:
        one = torch.ones(1, dtype=torch.float64)
        return torch.zeros(1, dtype=torch.float64), one, 0.5 * one

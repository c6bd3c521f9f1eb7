r"""First-order relevance of the nodes and edges of one graph.

* ``node_relevance``: any propex method on the node features ``[n, f]``, summed over features:
  :math:`R_j = \sum_i R_{ji}` (with LRP and biases excluded, :math:`\sum_j R_j = f(x)`).
* ``edge_relevance``: the same methods with the *adjacency* as the explained input (node features
  fixed): :math:`R_{jk}` for every entry of :math:`\Lambda`. Integrated Gradients (the default)
  scales all edges from 0 to their weight, so :math:`\sum_{jk} R_{jk} = f(x, \Lambda) - f(x, 0)`
  (completeness) — the edge-mask attribution of Sanchez-Lengeling et al. (NeurIPS 2020,
  "Evaluating attribution for graph neural networks").

The model is called as ``model(x, adjacency)`` on a batch of graphs (``[B, n, f]``, ``[B, n, n]``).
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn


def check_graph(model: Any, x: Tensor, adjacency: Tensor) -> int:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module taking (x, adjacency), got {type(model).__name__}")
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"x must be node features [n, f] of one graph, got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    n = x.shape[0]
    if not isinstance(adjacency, Tensor) or adjacency.shape != (n, n):
        raise ValueError(f"adjacency must be a dense tensor [n, n] = [{n}, {n}], got "
                         f"{tuple(adjacency.shape) if isinstance(adjacency, Tensor) else type(adjacency).__name__}")
    return n


def node_relevance(model: nn.Module, x: Tensor, adjacency: Tensor, target: Any = None, *,
                   method: str = "lrp", **options: Any) -> Tensor:
    """Relevance of each node ``[n]``: the method's attributions on the node features, summed per node.

    With ``method="lrp"``, ``ignore_bias=True`` is the default (the relevances sum to the output).
    """
    from ..api import explain
    check_graph(model, x, adjacency)
    if method == "lrp":
        options.setdefault("ignore_bias", True)
    exp = explain(_OnNodes(model), x[None], method, target=target, forward_kwargs={"adjacency": adjacency[None]},
                  **options)
    return exp.attributions[0].reshape(x.shape[0], -1).sum(1)


class _OnNodes(nn.Module):
    """The model with the adjacency passed by keyword (whatever the model names its argument)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, adjacency: Tensor) -> Any:
        return self.model(x, adjacency)


class _OnAdjacency(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, adjacency: Tensor, x: Tensor) -> Any:
        return self.model(x, adjacency)


def edge_relevance(model: nn.Module, x: Tensor, adjacency: Tensor, target: Any = None, *,
                   method: str = "integrated_gradients", **options: Any) -> Tensor:
    """Relevance of each adjacency entry ``[n, n]`` (``[k, j]``: the edge from node j to node k as the
    model's ``adjacency @ h`` uses it), from ``method`` with the adjacency as the explained input."""
    from ..api import explain
    check_graph(model, x, adjacency)
    if not adjacency.is_floating_point():
        raise TypeError(f"adjacency must be a floating-point tensor to attribute edges, got {adjacency.dtype}")
    exp = explain(_OnAdjacency(model), adjacency[None], method, target=target, forward_kwargs={"x": x[None]},
                  **options)
    return exp.attributions[0]

"""The seed's GNN example: Barabási–Albert graphs of growth parameter 1 ("tree") or 2 ("not tree").

``ba_graphs`` draws them with networkx (the ``graph`` extra), ``DenseGIN`` is a small
message-passing network in plain PyTorch (dense adjacency, sum aggregation, Xu et al. 2019's
GIN update :math:`h' = \\mathrm{MLP}((1 + \\epsilon) h + A h)` with ε = 0 folded into A + I), and
``train_ba_classifier`` fits it in about a second on CPU, deterministically.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def ba_graphs(n_graphs: int, n_nodes: int = 12, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n_graphs`` BA graphs alternating m = 1 (label 0, "tree") and m = 2 (label 1, "not tree").

    Returns adjacency ``[G, n, n]`` (0/1, symmetric, no self loops) and labels ``[G]``.
    """
    try:
        import networkx as nx
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError("propex.gnn.ba_graphs needs networkx: pip install 'propex[graph]'") from err
    adjs, labels = [], []
    for g in range(n_graphs):
        m = 1 + g % 2
        graph = nx.barabasi_albert_graph(n_nodes, m, seed=seed * 100003 + g)
        a = torch.zeros(n_nodes, n_nodes)
        for i, j in graph.edges():
            a[i, j] = a[j, i] = 1.0
        adjs.append(a)
        labels.append(m - 1)
    return torch.stack(adjs), torch.tensor(labels)


class GINLayer(nn.Module):
    """``relu(W2 relu(W1 (A + I) h))``: one GIN update with sum aggregation."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.lin1 = nn.Linear(d_in, d_out)
        self.lin2 = nn.Linear(d_out, d_out)

    def forward(self, h: Tensor, adjacency: Tensor) -> Tensor:
        agg = h + adjacency @ h
        return torch.relu(self.lin2(torch.relu(self.lin1(agg))))


class DenseGIN(nn.Module):
    """GIN on a batch of graphs: ``x`` ``[B, n, f]``, ``adjacency`` ``[B, n, n]`` -> logits ``[B, classes]``
    (sum pooling over nodes). Its message-passing layers are ``layers.0``, ``layers.1``, ..."""

    def __init__(self, d_in: int = 1, hidden: int = 16, depth: int = 2, classes: int = 2):
        super().__init__()
        dims = [d_in] + [hidden] * depth
        self.layers = nn.ModuleList(GINLayer(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Linear(hidden, classes)

    @property
    def layer_names(self) -> list[str]:
        return [f"layers.{i}" for i in range(len(self.layers))]

    def forward(self, x: Tensor, adjacency: Tensor) -> Tensor:
        h = x
        for layer in self.layers:
            h = layer(h, adjacency)
        return self.head(h.sum(1))


def train_ba_classifier(seed: int = 0, n_graphs: int = 200, n_nodes: int = 12, depth: int = 2,
                        epochs: int = 150) -> tuple[DenseGIN, Tensor, Tensor, float]:
    """Fit ``DenseGIN`` to tell BA(m=1) from BA(m=2) graphs (constant node features).

    Returns the model (eval mode), test adjacency ``[G, n, n]``, test labels and test accuracy.
    """
    torch.manual_seed(seed)
    adj, y = ba_graphs(2 * n_graphs, n_nodes, seed)
    x = torch.ones(adj.shape[0], n_nodes, 1)
    train, test = slice(0, n_graphs), slice(n_graphs, None)
    model = DenseGIN(1, 16, depth, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(epochs):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[train], adj[train]), y[train])
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x[test], adj[test]).argmax(1) == y[test]).float().mean().item()
    return model, adj[test], y[test], acc

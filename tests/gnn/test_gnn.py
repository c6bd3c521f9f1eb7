"""GNN explanations: relevant walks (closed form, conservation, restrictions), node and edge
relevance, the seed's BA-graph example, bad input."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from propex.gnn import edge_relevance, node_relevance, relevant_walks


class Conv(nn.Module):
    def __init__(self, d_in, d_out, act=True, bias=False):
        super().__init__()
        self.lin = nn.Linear(d_in, d_out, bias=bias)
        self.act = act

    def forward(self, h, adj):
        z = adj @ self.lin(h)
        return torch.relu(z) if self.act else z


class GCN(nn.Module):
    def __init__(self, act=True, bias=False):
        super().__init__()
        self.convs = nn.ModuleList([Conv(3, 4, act, bias), Conv(4, 4, act, bias)])
        self.out = nn.Linear(4, 2, bias=bias)

    def forward(self, x, adj):
        h = x
        for conv in self.convs:
            h = conv(h, adj)
        return self.out(h.sum(1))


LAYERS = ["convs.0", "convs.1"]


def _ring(n=5):
    adj = torch.eye(n, dtype=torch.float64)
    for i in range(n):
        adj[i, (i + 1) % n] = adj[(i + 1) % n, i] = 1.0
    return adj


@pytest.fixture
def graph():
    torch.manual_seed(0)
    return torch.randn(5, 3, dtype=torch.float64), _ring()


def test_walks_of_a_linear_gcn_have_the_closed_form(graph):
    # no nonlinearity: R_W = x_{j0} W1 W2 w_out * adj[j1, j0] * adj[j2, j1] (LRP-0 = gradient x input)
    x, adj = graph
    adj = adj * torch.linspace(0.5, 1.5, 5, dtype=torch.float64)[:, None]      # weighted edges
    model = GCN(act=False).double()
    walks = relevant_walks(model, x, adj, target=0, layers=LAYERS, composite="zero")
    w1, w2, wo = model.convs[0].lin.weight.T, model.convs[1].lin.weight.T, model.out.weight[0]
    assert len(walks) == 5 * 3 * 3          # every node, then 3 choices (itself and 2 ring neighbours) twice
    for (j0, j1, j2), r in walks.items():
        exact = (x[j0] @ w1 @ w2 @ wo).item() * adj[j1, j0].item() * adj[j2, j1].item()
        assert r == pytest.approx(exact, rel=1e-10, abs=1e-12)
    rel = list(walks.values())
    assert all(abs(a) >= abs(b) for a, b in zip(rel, rel[1:]))          # ordered by |relevance|


@pytest.mark.parametrize("composite", ["zero", "gamma"])
def test_walk_relevances_sum_to_the_output(graph, composite):
    x, adj = graph
    torch.manual_seed(1)
    model = GCN(bias=True).double()
    walks = relevant_walks(model, x, adj, target=1, layers=LAYERS, composite=composite, stabilizer=1e-12)
    with torch.no_grad():
        f = model(x[None], adj[None])[0, 1].item()
    # biases are excluded (ignore_bias=True by default), so the relevance of f itself is conserved
    assert sum(walks.values()) == pytest.approx(f, rel=1e-6)       # the sum pooling's ε=1e-6 absorbs ~1e-7
    nodes = node_relevance(model, x, adj, target=1, composite=composite, stabilizer=1e-12)
    per_start = torch.zeros(5, dtype=torch.float64)
    for w, r in walks.items():
        per_start[w[0]] += r
    torch.testing.assert_close(per_start, nodes, rtol=1e-9, atol=1e-12)


def test_restrictions_nodes_and_top_k(graph):
    x, adj = graph
    model = GCN().double()
    every = relevant_walks(model, x, adj, target=0, layers=LAYERS, composite="zero")
    through = relevant_walks(model, x, adj, target=0, layers=LAYERS, composite="zero", nodes=[2])
    assert through and all(2 in w for w in through)
    assert set(through) == {w for w in every if 2 in w}
    for w, r in through.items():
        assert r == pytest.approx(every[w], abs=1e-12)
    best = relevant_walks(model, x, adj, target=0, layers=LAYERS, composite="zero", top_k=6)
    assert len(best) == 6
    for w, r in best.items():                 # the beam returns exact walk relevances
        assert r == pytest.approx(every[w], abs=1e-12)
    full_beam = relevant_walks(model, x, adj, target=0, layers=LAYERS, composite="zero", top_k=10_000)
    assert set(full_beam) == set(every)          # a beam wider than the walk count keeps every walk
    for w, r in full_beam.items():
        assert r == pytest.approx(every[w], abs=1e-12)


def test_edge_relevance_is_complete(graph):
    x, adj = graph
    model = GCN().double()
    edges = edge_relevance(model, x, adj, target=0, n_steps=64)
    assert edges.shape == (5, 5)
    assert torch.all(edges[adj == 0] == 0)     # absent edges: zero input, zero attribution
    with torch.no_grad():
        diff = model(x[None], adj[None])[0, 0] - model(x[None], torch.zeros_like(adj)[None])[0, 0]
    assert edges.sum().item() == pytest.approx(diff.item(), rel=1e-3)


def test_model_left_as_found(graph, model_snapshot):
    x, adj = graph
    model = GCN().double()
    snap = model_snapshot(model)
    relevant_walks(model, x, adj, layers=LAYERS, top_k=3)
    node_relevance(model, x, adj)
    snap.assert_unchanged()


def test_bad_input(graph):
    x, adj = graph
    model = GCN().double()
    with pytest.raises(ValueError, match="node features \\[n, f\\]"):
        relevant_walks(model, x[None], adj, layers=LAYERS)
    with pytest.raises(ValueError, match="adjacency must be a dense tensor \\[n, n\\]"):
        relevant_walks(model, x, adj[:3], layers=LAYERS)
    with pytest.raises(ValueError, match="layers must be a non-empty list"):
        relevant_walks(model, x, adj, layers=[])
    with pytest.raises(ValueError, match="not_a_layer"):
        relevant_walks(model, x, adj, layers=["not_a_layer"])
    with pytest.raises(ValueError, match="must output node states"):
        relevant_walks(model, x, adj, layers=["out"])
    with pytest.raises(ValueError, match="top_k"):
        relevant_walks(model, x, adj, layers=LAYERS, top_k=0)
    with pytest.raises(ValueError, match="nodes must be node indices"):
        relevant_walks(model, x, adj, layers=LAYERS, nodes=[7])
    with pytest.raises(TypeError, match="nn.Module"):
        relevant_walks(lambda a, b: a, x, adj, layers=LAYERS)
    with pytest.raises(TypeError, match="floating-point"):
        edge_relevance(model, x, adj.long())


def test_ba_graphs_walks_on_cycles_carry_the_not_tree_evidence():
    # seed 001, 3.d: BA graphs with growth parameter 1 ("tree") or 2 ("not tree"); a GIN trained here
    nx = pytest.importorskip("networkx")
    from propex.gnn.ba import train_ba_classifier
    model, adj, y, acc = train_ba_classifier(seed=0, n_graphs=120, epochs=120)
    assert acc >= 0.95
    x = torch.ones(adj.shape[1], 1)
    fractions, tree_evidence = [], []
    for g in range(8):
        walks = relevant_walks(model, x, adj[g], target=1, layers=model.layer_names, composite="gamma",
                                 stabilizer=1e-9)
        with torch.no_grad():
            f = model(x[None], adj[g][None])[0, 1].item()
        assert sum(walks.values()) == pytest.approx(f, rel=1e-4, abs=1e-5)      # conservation
        if y[g] == 0:
            tree_evidence.append(f)
            continue
        graph = nx.from_numpy_array(adj[g].numpy())
        bridges = {frozenset(e) for e in nx.bridges(graph)}

        def on_cycle(walk):
            steps = [frozenset(s) for s in zip(walk, walk[1:]) if s[0] != s[1]]
            return bool(steps) and not any(s in bridges for s in steps)

        top = [(w, r) for w, r in walks.items() if r > 0][:10]
        fractions.append(sum(r for w, r in top if on_cycle(w)) / sum(r for _, r in top))
    # the walks that carry "not tree" evidence run along the graph's cycles (measured: 0.65-0.75 of
    # the top-10 positive relevance; the rest sits on walks that stay at one node)
    assert min(fractions) >= 0.5, fractions
    assert max(tree_evidence) < 0                    # trees carry evidence against "not tree"


def test_draw_walks(graph):
    pytest.importorskip("matplotlib")
    from propex.gnn import draw_walks
    x, adj = graph
    walks = relevant_walks(GCN().double(), x, adj, target=0, layers=LAYERS, composite="zero")
    pic = draw_walks(adj, walks, top=4, title="walks")
    assert pic.array.shape == (420, 420, 3)
    assert pic.info["walks"] == [list(w) for w in list(walks)[:4]]
    red = (pic.array[..., 0] > 180) & (pic.array[..., 1] < 90) & (pic.array[..., 2] < 90)
    blue = (pic.array[..., 2] > 150) & (pic.array[..., 0] < 90)
    signs = {r > 0 for r in list(walks.values())[:4]}
    assert red.any() == (True in signs) and blue.any() == (False in signs)


def test_report_shows_walk_drawings(graph, tmp_path):
    pytest.importorskip("matplotlib")
    from propex.gnn import draw_walks
    from propex.report import build_report
    x, adj = graph
    walks = relevant_walks(GCN().double(), x, adj, target=0, layers=LAYERS, composite="zero")
    path = build_report(tmp_path / "r.html", inputs=torch.rand(1, 1, 8, 8), explanations={"saliency": torch.rand(1, 1, 8, 8)},
                        figures={"walks for class 0": draw_walks(adj, walks, top=4)})
    page = open(path).read()
    assert page.count('class="px-figure"') == 1 and 'data-title="walks for class 0"' in page
    assert "data:image/png;base64," in page.split('class="px-figures"')[1]

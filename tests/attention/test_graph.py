"""Rollout and attention flow against hand computation and networkx."""
import pytest
import torch

from propex.attention import attention_flow, max_flow, residual_attention, rollout
from propex.attention.graph import layered_capacity


def test_rollout_equals_hand_computed_product_on_two_layers():
    a1 = torch.tensor([[[0.5, 0.5, 0.0], [0.2, 0.2, 0.6], [1.0, 0.0, 0.0]]], dtype=torch.float64)
    a2 = torch.tensor([[[0.0, 1.0, 0.0], [0.3, 0.3, 0.4], [0.1, 0.8, 0.1]]], dtype=torch.float64)
    # by hand: Â = 0.5 A + 0.5 I (rows already sum to 1), R = Â2 Â1
    h1 = [[0.75, 0.25, 0.0], [0.1, 0.6, 0.3], [0.5, 0.0, 0.5]]
    h2 = [[0.5, 0.5, 0.0], [0.15, 0.65, 0.2], [0.05, 0.4, 0.55]]
    expected = [[sum(h2[i][k] * h1[k][j] for k in range(3)) for j in range(3)] for i in range(3)]
    got = rollout([a1, a2])
    assert torch.allclose(got[0], torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(got.sum(-1), torch.ones(1, 3, dtype=torch.float64))


def test_residual_attention_renormalises_rows():
    a = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])
    got = residual_attention(a)
    assert torch.allclose(got, torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))
    with pytest.raises(ValueError, match=r"square"):
        residual_attention(torch.ones(1, 2, 3))


def _nx_value(cap, s, t):
    nx = pytest.importorskip("networkx")
    g = nx.DiGraph()
    g.add_nodes_from(range(cap.shape[0]))
    for u in range(cap.shape[0]):
        for v in range(cap.shape[1]):
            if cap[u, v] > 0:
                g.add_edge(u, v, capacity=float(cap[u, v]))
    return nx.maximum_flow_value(g, s, t)


def test_max_flow_equals_networkx_on_random_graphs():
    gen = torch.Generator().manual_seed(0)
    b, v = 25, 10
    cap = torch.rand(b, v, v, generator=gen, dtype=torch.float64) * (torch.rand(b, v, v, generator=gen) < 0.35)
    src = torch.randint(0, v, (b,), generator=gen)
    snk = (src + 1 + torch.randint(0, v - 1, (b,), generator=gen)) % v
    got = max_flow(cap, src, snk)
    ref = torch.tensor([_nx_value(cap[i], int(src[i]), int(snk[i])) for i in range(b)], dtype=torch.float64)
    assert torch.allclose(got, ref, atol=1e-10)
    assert (ref > 0).sum() > 5            # the test graphs are not trivially disconnected


def test_attention_flow_equals_networkx_on_layered_graph():
    gen = torch.Generator().manual_seed(1)
    n, t, layers = 2, 5, 3
    maps = [residual_attention(torch.softmax(2 * torch.randn(n, t, t, generator=gen, dtype=torch.float64), -1))
            for _ in range(layers)]
    position = torch.tensor([0, 3])
    got = attention_flow(maps, position)
    cap = layered_capacity(maps)
    for i in range(n):
        for j in range(t):
            ref = _nx_value(cap[i], j, layers * t + int(position[i]))
            assert abs(float(got[i, j]) - ref) < 1e-10


def test_max_flow_bad_input():
    with pytest.raises(ValueError, match=r"\[B, V, V\]"):
        max_flow(torch.ones(3, 3), torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="non-negative"):
        max_flow(-torch.ones(1, 3, 3), torch.tensor([0]), torch.tensor([1]))

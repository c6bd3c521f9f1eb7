"""BiLRP: closed form on a linear embedding, conservation on a CNN, pooling, projection, bad input."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import propex
from propex.pair_relevance import bilrp


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(32, 10)).double().eval()


def test_linear_embedding_closed_form():
    # phi(x) = W x: R^(k)_i(x) = W_ki x_i under LRP-0, so R_ij = x_i (W^T W)_ij x'_j exactly
    torch.manual_seed(1)
    emb = nn.Linear(6, 5, bias=False).double()
    x1, x2 = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    res = bilrp(emb, x1, x2, composite="zero")
    w = emb.weight.detach()
    exact = x1[:, :, None] * (w.T @ w)[None] * x2[:, None, :]
    torch.testing.assert_close(res.relevance, exact, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(res.similarity, (emb(x1) * emb(x2)).sum(1).detach())


@pytest.mark.parametrize("composite, tol", [("zero", 1e-9), ("epsilon_plus", 5e-4)])
def test_conservation_on_a_cnn(composite, tol):
    model = _cnn()
    torch.manual_seed(2)
    x1, x2 = torch.rand(2, 3, 8, 8, dtype=torch.float64), torch.rand(2, 3, 8, 8, dtype=torch.float64)
    # LRP-ε's stabilizer (1e-6, also in the average pooling) absorbs ~1e-5 of the relevance by design
    res = bilrp(model, x1, x2, composite=composite, pool=2, chunk=4)
    assert res.relevance.shape == (2, 16, 16)
    with torch.no_grad():
        sim = (model(x1) * model(x2)).sum(1)
    torch.testing.assert_close(res.similarity, sim)
    with torch.no_grad():
        scale = (model(x1) * model(x2)).abs().sum(1)      # sum_k |phi_k(x1) phi_k(x2)|
    assert (res.delta.abs() < tol * scale).all()
    torch.testing.assert_close(res.relevance.sum((1, 2)) - res.delta, sim)


def test_chunking_and_pooling_are_consistent():
    model = _cnn()
    x1, x2 = torch.rand(1, 3, 8, 8, dtype=torch.float64), torch.rand(1, 3, 8, 8, dtype=torch.float64)
    pixels = bilrp(model, x1, x2, chunk=10)               # one pass for all 10 dimensions
    one_by_one = bilrp(model, x1, x2, chunk=1)
    torch.testing.assert_close(pixels.relevance, one_by_one.relevance, rtol=1e-10, atol=1e-12)
    assert pixels.relevance.shape == (1, 64, 64)
    patches = bilrp(model, x1, x2, pool=4)
    # patch relevance = sum of the pixel relevances of the two patches
    r = pixels.relevance.reshape(1, 2, 4, 2, 4, 2, 4, 2, 4).sum((2, 4, 6, 8)).reshape(1, 4, 4)
    torch.testing.assert_close(patches.relevance, r, rtol=1e-10, atol=1e-12)
    ids = torch.arange(4).repeat_interleave(16).reshape(8, 8)     # rows 0-1 -> 0, 2-3 -> 1, ...
    rows = bilrp(model, x1, x2, pool=ids)
    rr = pixels.relevance.reshape(1, 4, 16, 4, 16).sum((2, 4))
    torch.testing.assert_close(rows.relevance, rr, rtol=1e-10, atol=1e-12)


def test_projection_conserves_the_projected_similarity():
    model = _cnn()
    x1, x2 = torch.rand(2, 3, 8, 8, dtype=torch.float64), torch.rand(2, 3, 8, 8, dtype=torch.float64)
    a = bilrp(model, x1, x2, projection=3, seed=5, composite="zero")
    b = bilrp(model, x1, x2, projection=3, seed=5, composite="zero")
    c = bilrp(model, x1, x2, projection=3, seed=6, composite="zero")
    assert a.first.shape == (2, 3, 64)
    torch.testing.assert_close(a.relevance, b.relevance)
    assert not torch.allclose(a.relevance, c.relevance)
    assert a.delta.abs().max() < 1e-9                      # sums to <P^T phi, P^T phi'>
    g = torch.Generator().manual_seed(5)
    p = torch.randn(10, 3, generator=g, dtype=torch.float64) / 3 ** 0.5
    with torch.no_grad():
        torch.testing.assert_close(a.similarity, ((model(x1) @ p) * (model(x2) @ p)).sum(1))


def test_token_pairs_at_the_embedding_layer():
    # a bias-free ReLU text encoder is positively homogeneous in its token embeddings, so
    # gradient x input at the embedding layer is conservative (Euler) and BiLRP sums to the similarity
    torch.manual_seed(3)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 6)
            self.mlp = nn.Sequential(nn.Linear(6, 8, bias=False), nn.ReLU(), nn.Linear(8, 4, bias=False))

        def forward(self, ids):
            return self.mlp(self.emb(ids)).sum(1)

    enc = Encoder().double()
    a, b = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[5, 6, 7]])
    res = bilrp(enc, a, b, method="input_x_gradient", layer="emb")
    assert res.relevance.shape == (1, 4, 3)
    with torch.no_grad():
        sim = (enc(a) * enc(b)).sum(1)
    torch.testing.assert_close(res.relevance.sum((1, 2)), sim, rtol=1e-10, atol=1e-10)


def test_model_left_as_found(model_snapshot):
    model = _cnn()
    snap = model_snapshot(model)
    bilrp(model, torch.rand(1, 3, 8, 8, dtype=torch.float64), torch.rand(1, 3, 8, 8, dtype=torch.float64), chunk=3)
    snap.assert_unchanged()


def test_bad_input():
    model = _cnn()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="same number of pairs"):
        bilrp(model, x, x[:1])
    with pytest.raises(ValueError, match="must return \\[N, D\\]"):
        bilrp(nn.Identity(), x, x)
    with pytest.raises(ValueError, match="dividing the image size"):
        bilrp(model, x, x, pool=3)
    with pytest.raises(ValueError, match="projection"):
        bilrp(model, x, x, projection=0)
    with pytest.raises(ValueError, match="chunk"):
        bilrp(model, x, x, chunk=0)
    with pytest.raises(TypeError, match="x2 must be a tensor"):
        bilrp(model, x, [1, 2])
    with pytest.raises(TypeError, match="integer group ids"):
        bilrp(model, x, x, pool=torch.zeros(8, 8))
    with pytest.raises(ValueError, match="pool mask"):
        bilrp(model, x, x, pool=torch.zeros(4, 4, dtype=torch.long))


def test_top_pairs():
    torch.manual_seed(1)
    emb = nn.Linear(4, 3, bias=False).double()
    res = bilrp(emb, torch.randn(1, 4, dtype=torch.float64), torch.randn(1, 4, dtype=torch.float64), composite="zero")
    (i, j, v), *_ = res.top_pairs(3)
    assert v == pytest.approx(res.relevance[0].max().item())
    assert res.relevance[0, i, j].item() == pytest.approx(v)
    assert propex.bilrp is bilrp


def test_draw_pairs_joins_the_most_relevant_patches():
    pytest.importorskip("matplotlib")
    from propex.pair_relevance import draw_pairs
    model = _cnn()
    x1, x2 = torch.rand(1, 3, 8, 8, dtype=torch.float64), torch.rand(1, 3, 8, 8, dtype=torch.float64)
    res = bilrp(model, x1, x2, pool=2, composite="zero")
    pic = draw_pairs(x1[0], x2[0], res, top=5)
    assert pic.array.shape == (300, 600, 3) and pic.array.std() > 0
    best = res.relevance[0].abs().flatten().argmax().item()
    assert tuple(pic.info["pairs"][0]) == divmod(best, 16)
    with pytest.raises(ValueError, match="square layout"):
        draw_pairs(x1[0], x2[0], bilrp(model, x1, x2, pool=(2, 4), composite="zero"))

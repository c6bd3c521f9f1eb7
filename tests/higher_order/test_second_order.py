"""Integrated Hessians and second-order Taylor interactions: closed forms, finite differences, axioms."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import propex
from propex.higher_order import base as ho_base
from propex.higher_order import log_weight_rule

D = torch.float64


class Quadratic(nn.Module):
    """f(x) = xᵀAx + bᵀx + c, two outputs (the second with -A and 2b)."""

    def __init__(self, d: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A = torch.randn(d, d, generator=g, dtype=D)
        self.b = torch.randn(d, generator=g, dtype=D)

    def forward(self, x):
        q = ((x @ self.A) * x).sum(1)
        return torch.stack([q + x @ self.b + 0.5, -q + 2 * (x @ self.b)], dim=1)


def _mlp(seed: int = 0, act=nn.Tanh, d: int = 5) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 8), act(), nn.Linear(8, 6), act(), nn.Linear(6, 3)).to(D).eval()


def _quadratic_closed_form(model: Quadratic, x, base):
    s = model.A + model.A.T
    dx = x - base
    grad0 = base @ s + model.b
    ih = dx[:, :, None] * dx[:, None, :] * s / 4 + torch.diag_embed(dx * (grad0 + 0.25 * dx @ s))
    taylor = 0.5 * dx[:, :, None] * dx[:, None, :] * s + torch.diag_embed(dx * grad0)
    return ih, taylor


@pytest.mark.parametrize("n_steps", [1, 5])
def test_integrated_hessians_exact_for_a_quadratic(n_steps):
    model = Quadratic(6)
    x, base = torch.randn(4, 6, dtype=D), torch.randn(4, 6, dtype=D)
    exp = propex.explain(model, x, "integrated_hessians", target=0, baseline=base, n_steps=n_steps)
    ih, _ = _quadratic_closed_form(model, x, base)
    assert exp.attributions.shape == (4, 6, 6)
    torch.testing.assert_close(exp.attributions, ih, rtol=0, atol=1e-12)
    assert exp.delta.abs().max() < 1e-12
    f = model(x)[:, 0] - model(base)[:, 0]
    torch.testing.assert_close(exp.attributions.sum((1, 2)), f, rtol=0, atol=1e-12)


def test_taylor_exact_for_a_quadratic_and_multi_target():
    model = Quadratic(5, seed=1)
    x, base = torch.randn(3, 5, dtype=D), torch.randn(3, 5, dtype=D)
    exp = propex.explain(model, x, "taylor_interactions", target=[[0, 1]] * 3, baseline=base)
    assert exp.attributions.shape == (3, 2, 5, 5) and exp.delta.shape == (3, 2)
    _, taylor = _quadratic_closed_form(model, x, base)
    torch.testing.assert_close(exp.attributions[:, 0], taylor, rtol=0, atol=1e-12)
    assert exp.delta.abs().max() < 1e-12          # a quadratic has no remainder
    single = propex.explain(model, x, "taylor_interactions", target=1, baseline=base)
    torch.testing.assert_close(exp.attributions[:, 1], single.attributions, rtol=0, atol=1e-12)


def test_taylor_terms_match_finite_differences():
    model = _mlp(1)
    x, ref = torch.randn(2, 5, dtype=D), 0.3 * torch.randn(2, 5, dtype=D)
    exp = propex.explain(model, x, "taylor_interactions", target=2, baseline=ref)
    h, e = 1e-4, torch.eye(5, dtype=D)
    f = lambda z: model(z)[:, 2]                                   # noqa: E731
    hess = torch.zeros(2, 5, 5, dtype=D)
    for i in range(5):
        for j in range(5):
            hess[:, i, j] = (f(ref + h * (e[i] + e[j])) - f(ref + h * (e[i] - e[j])) - f(ref - h * (e[i] - e[j]))
                             + f(ref - h * (e[i] + e[j]))) / (4 * h * h)
    grad = torch.stack([(f(ref + h * e[i]) - f(ref - h * e[i])) / (2 * h) for i in range(5)], dim=1)
    dx = x - ref
    expected = 0.5 * hess * dx[:, :, None] * dx[:, None, :] + torch.diag_embed(grad * dx)
    torch.testing.assert_close(exp.attributions, expected, rtol=1e-5, atol=1e-7)
    off = exp.attributions - torch.diag_embed(exp.attributions.diagonal(dim1=1, dim2=2))
    assert off.abs().max() > 1e-3                                   # a real interaction was measured


def test_completeness_symmetry_and_rows_equal_integrated_gradients():
    model = _mlp(2)
    x = torch.randn(3, 5, dtype=D)
    exp = propex.explain(model, x, "integrated_hessians", target=1, n_steps=32)
    gamma = exp.attributions
    assert exp.delta.abs().max() < 1e-8
    torch.testing.assert_close(gamma, gamma.transpose(1, 2), rtol=0, atol=1e-12)      # Γ_ij = Γ_ji
    ig = propex.explain(model, x, "integrated_gradients", target=1, n_steps=64)
    torch.testing.assert_close(gamma.sum(2), ig.attributions, rtol=0, atol=1e-8)       # Σ_j Γ_ij = IG_i
    coarse = propex.explain(model, x, "integrated_hessians", target=1, n_steps=2)
    assert coarse.delta.abs().max() > exp.delta.abs().max()                          # delta is the quadrature error


def test_groups_sum_member_interactions_shared_and_per_sample():
    model = _mlp(3, d=6)
    x = torch.randn(2, 6, dtype=D)
    full = propex.explain(model, x, "integrated_hessians", target=0, n_steps=6).attributions
    shared = torch.tensor([[4, 4, 7, 7, 7, 9]])
    per_sample = torch.tensor([[0, 1, 0, 1, 0, 1], [2, 2, 2, 3, 3, 3]])
    for groups in (shared, per_sample):
        exp = propex.explain(model, x, "integrated_hessians", target=0, n_steps=6, groups=groups)
        ids = torch.unique(groups)
        onehot = (groups.expand(2, 6).unsqueeze(2) == ids).to(D)                       # [N, d, G]
        expected = onehot.transpose(1, 2) @ full @ onehot
        assert exp.attributions.shape == (2, len(ids), len(ids))
        assert exp.options["group_ids"] == ids.tolist()
        torch.testing.assert_close(exp.attributions, expected, rtol=0, atol=1e-12)


def test_tuple_inputs_and_image_patches():
    torch.manual_seed(0)

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.fc = nn.Linear(2 * 4 * 4 + 3, 2)

        def forward(self, img, tab):
            return self.fc(torch.cat([torch.tanh(self.conv(img)).flatten(1), tab], 1)).tanh()

    model = Two().to(D).eval()
    img, tab = torch.randn(2, 1, 4, 4, dtype=D), torch.randn(2, 3, dtype=D)
    full = propex.explain(model, (img, tab), "integrated_hessians", target=1, n_steps=4)
    assert full.attributions.shape == (2, 19, 19)
    patches = (torch.arange(4) // 2)[:, None] * 2 + (torch.arange(4) // 2)[None, :]     # four 2x2 patches
    groups = (patches.reshape(1, 1, 4, 4), torch.tensor([[10, 10, 11]]))
    grouped = propex.explain(model, (img, tab), "integrated_hessians", target=1, n_steps=4, groups=groups)
    member = torch.cat([patches.reshape(-1), torch.tensor([4, 4, 5])])
    onehot = torch.nn.functional.one_hot(member, 6).to(D)
    torch.testing.assert_close(grouped.attributions, onehot.T @ full.attributions @ onehot, rtol=0, atol=1e-12)
    torch.testing.assert_close(grouped.delta, full.delta, rtol=0, atol=1e-12)


def test_relu_nets_need_beta_smooth():
    relu = _mlp(4, act=nn.ReLU)
    x = torch.randn(3, 5, dtype=D)
    plain = propex.explain(relu, x, "integrated_hessians", target=0, n_steps=8).attributions
    off = plain - torch.diag_embed(plain.diagonal(dim1=1, dim2=2))
    assert off.abs().max() == 0                                    # Hessian zero almost everywhere
    smooth = propex.explain(relu, x, "integrated_hessians", target=0, n_steps=32, beta_smooth=5.0)
    soft = nn.Sequential(*[nn.Softplus(beta=5.0) if isinstance(m, nn.ReLU) else m for m in relu])
    reference = propex.explain(soft, x, "integrated_hessians", target=0, n_steps=32)
    torch.testing.assert_close(smooth.attributions, reference.attributions, rtol=0, atol=1e-12)
    torch.testing.assert_close(smooth.outputs, soft(x).detach())
    assert (smooth.attributions - torch.diag_embed(smooth.attributions.diagonal(dim1=1, dim2=2))).abs().max() > 1e-4
    assert smooth.delta.abs().max() < 1e-6
    assert all(isinstance(m, (nn.Linear, nn.ReLU)) for m in relu)   # the model itself is unchanged
    torch.testing.assert_close(relu(x), propex.explain(relu, x, "saliency", target=0).outputs)


def test_layer_attribution_and_chunking_do_not_change_results():
    model = _mlp(5)
    x = torch.randn(3, 5, dtype=D)
    exp = propex.explain(model, x, "integrated_hessians", target=2, n_steps=6, layer=model[0])
    h0 = model[0](x).detach()
    tail = nn.Sequential(*list(model)[1:])
    # with layer=, the baseline (zeros) is taken through the model up to the layer
    base = model[0](torch.zeros_like(x)).detach()
    direct = propex.explain(tail, h0, "integrated_hessians", target=2, n_steps=6, baseline=base)
    torch.testing.assert_close(exp.attributions, direct.attributions, rtol=0, atol=1e-12)
    small = propex.explain(model, x, "integrated_hessians", target=2, n_steps=6, layer=model[0], batch_size=1)
    torch.testing.assert_close(small.attributions, exp.attributions, rtol=0, atol=1e-12)


def test_log_weight_rule_is_gaussian():
    for n in (1, 3, 12):
        t, w = log_weight_rule(n)
        assert ((t > 0) & (t < 1)).all() and (w > 0).all()
        for k in range(2 * n):                        # ∫ t^k (-log t) dt = 1/(k+1)²
            assert abs(float((w * t ** k).sum()) - 1 / (k + 1) ** 2) < 1e-13
    with pytest.raises(ValueError, match="n_steps"):
        log_weight_rule(0)


def test_bad_options(monkeypatch):
    model = _mlp(6)
    x = torch.randn(2, 5, dtype=D)
    with pytest.raises(TypeError, match="integer group ids"):
        propex.explain(model, x, "integrated_hessians", groups=torch.zeros(1, 5))
    with pytest.raises(TypeError, match="groups must be"):
        propex.explain(model, x, "taylor_interactions", groups=[1, 2])
    with pytest.raises(ValueError, match="does not broadcast"):
        propex.explain(model, x, "integrated_hessians", groups=torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="n_steps must be >= 1"):
        propex.explain(model, x, "integrated_hessians", n_steps=0)
    with pytest.raises(ValueError, match="beta_smooth"):
        propex.explain(model, x, "integrated_hessians", beta_smooth=-1.0)
    with pytest.raises(TypeError, match="unknown option"):
        propex.explain(model, x, "integrated_hessians", n_step=3)
    with pytest.raises(TypeError, match="dtype torch.int64"):
        propex.explain(lambda z: z.double() @ torch.ones(5, 2, dtype=D), torch.ones(2, 5, dtype=torch.long),
                       "integrated_hessians")
    monkeypatch.setattr(ho_base, "MAX_FEATURES", 4)
    with pytest.raises(ValueError, match="pass groups="):
        propex.explain(model, x, "integrated_hessians")


def test_forward_over_reverse_hvp_matches_double_backward():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(),
                        nn.Linear(3 * 4 * 4, 2)).to(D).eval()
    x = torch.randn(2, 1, 4, 4, dtype=D)
    groups = torch.arange(4).repeat_interleave(4).reshape(1, 1, 4, 4)        # rows as groups
    opts = dict(target=1, n_steps=4, beta_smooth=4.0, groups=groups)
    rev = propex.explain(net, x, "integrated_hessians", hvp="reverse", **opts)
    fwd = propex.explain(net, x, "integrated_hessians", hvp="forward", **opts)
    torch.testing.assert_close(fwd.attributions, rev.attributions, rtol=0, atol=1e-12)
    assert (rev.attributions - torch.diag_embed(rev.attributions.diagonal(dim1=1, dim2=2))).abs().max() > 1e-6
    with pytest.raises(ValueError, match="hvp='jvp'"):
        propex.explain(net, x, "taylor_interactions", hvp="jvp")


def test_token_groups_through_an_embedding_layer_with_attention():
    torch.manual_seed(0)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 8)
            self.enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, ids):
            return self.head(self.enc(self.emb(ids)).mean(1))

    model = Tiny().to(D).eval()
    ids = torch.randint(1, 20, (2, 4))
    opts = dict(layer=model.emb, target=1, n_steps=4)
    full = propex.explain(model, ids, "integrated_hessians", **opts)          # [2, 32, 32]
    tokens = propex.explain(model, ids, "integrated_hessians", groups=torch.arange(4).reshape(1, 4, 1), **opts)
    assert full.attributions.shape == (2, 32, 32) and tokens.attributions.shape == (2, 4, 4)
    onehot = torch.nn.functional.one_hot(torch.arange(32) // 8, 4).to(D)
    torch.testing.assert_close(tokens.attributions, onehot.T @ full.attributions @ onehot, rtol=0, atol=1e-12)
    torch.testing.assert_close(tokens.attributions, tokens.attributions.transpose(1, 2), rtol=0, atol=1e-10)

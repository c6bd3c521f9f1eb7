"""Transformer rules of the propagation engine on tiny hand-checkable examples (propagation/transformer.py):
the softmax rule (AttnLRP and its bias-excluded form), the 50/50 product rule, CP-LRP's constant
attention, the LayerNorm/RMSNorm rule, the identity rule for hand-written activation modules, DeepLIFT's
exact decompositions, nn.MultiheadAttention / nn.TransformerEncoderLayer, and the errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import propex
from propex.propagation import LRP, DeepLift, UnsupportedOpError

DT = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class SoftmaxHead(nn.Module):
    """f(x) = w · softmax(x) (no bias)."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return (F.softmax(x, dim=-1) * self.w).sum(-1, keepdim=True)


def test_softmax_attnlrp_rule_by_hand():
    x = torch.tensor([[0.5, -1.0, 2.0, 0.3]], dtype=DT)
    w = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=DT)
    e = LRP(SoftmaxHead(w), composite="zero").explain(x, target=0)
    s = torch.softmax(x[0], 0)
    r = s * w                                  # relevance of s: the ε-rule of the weighted sum
    expected = torch.tensor([x[0, i] * (r[i] - s[i] * r.sum()) for i in range(4)], dtype=DT)
    torch.testing.assert_close(e.attributions[0], expected, rtol=1e-9, atol=1e-12)


def test_softmax_rule_with_bias_excluded_conserves_and_matches_hand_formula():
    x = torch.tensor([[0.5, -1.0, 2.0, 0.3]], dtype=DT)
    w = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=DT)
    e = LRP(SoftmaxHead(w), composite="zero", ignore_bias=True, epsilon=1e-12).explain(x, target=0)
    s = torch.softmax(x[0], 0)
    r = s * w
    attn = x[0] * (r - s * r.sum())                     # the AttnLRP rule
    expected = attn + s * (r.sum() - attn.sum())        # + the bias's relevance, spread by s
    torch.testing.assert_close(e.attributions[0], expected, rtol=1e-9, atol=1e-12)
    assert abs(e.attributions.sum().item() - e.outputs[0, 0].item()) < 1e-10
    assert abs(e.delta.item()) < 1e-10


class Product(nn.Module):
    """y = a @ b for two inputs (both on the explained graph), flattened."""

    def __init__(self, how: str = "matmul"):
        super().__init__()
        self.how = how

    def forward(self, a, b):
        if self.how == "einsum":
            y = torch.einsum("nik,nkj->nij", a, b)
        elif self.how == "bmm":
            y = torch.bmm(a, b)
        else:
            y = a @ b
        return y.flatten(1)


@pytest.mark.parametrize("how", ["matmul", "einsum", "bmm"])
def test_bilinear_product_splits_relevance_fifty_fifty(how):
    a = torch.randn(1, 2, 3, dtype=DT, generator=_gen(0))
    b = torch.randn(1, 3, 2, dtype=DT, generator=_gen(1))
    i, j = 1, 0
    e = LRP(Product(how), composite="zero", epsilon=1e-12).explain((a, b), target=i * 2 + j)
    ra, rb = e.attributions
    terms = a[0, i, :] * b[0, :, j]            # the products a_ik b_kj that make up y_ij
    expected_a = torch.zeros(2, 3, dtype=DT)
    expected_a[i] = terms / 2
    expected_b = torch.zeros(3, 2, dtype=DT)
    expected_b[:, j] = terms / 2
    torch.testing.assert_close(ra[0], expected_a, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(rb[0], expected_b, rtol=1e-9, atol=1e-12)


class TinyAttention(nn.Module):
    """out = (softmax(x xᵀ) x) flattened: the queries, keys and values are x itself."""

    def forward(self, x):
        a = torch.softmax(x @ x.transpose(-1, -2), dim=-1)
        return (a @ x).flatten(1)


def test_cp_lrp_treats_attention_probabilities_as_constants():
    x = torch.randn(1, 3, 2, dtype=DT, generator=_gen(2))
    target = 1 * 2 + 0                                    # output row 1, feature 0
    e = LRP(TinyAttention(), composite="zero", attention="cp", epsilon=1e-12).explain(x, target=target)
    a = torch.softmax(x[0] @ x[0].T, -1)
    y = (a @ x[0])[1, 0]
    expected = torch.zeros(3, 2, dtype=DT)
    expected[:, 0] = a[1, :] * x[0, :, 0] * y / y         # the ε-rule of y = Σ_k A_1k v_k0, A fixed
    torch.testing.assert_close(e.attributions[0], expected, rtol=1e-9, atol=1e-12)
    # AttnLRP also sends relevance through the attention weights: a different, still conservative result
    attn = LRP(TinyAttention(), composite="zero", ignore_bias=True, epsilon=1e-12).explain(x, target=target)
    assert not torch.allclose(attn.attributions, e.attributions)
    assert abs(attn.delta.item()) < 1e-9 * abs(attn.outputs[0, target].item()) + 1e-12


class NormHead(nn.Module):
    def __init__(self, kind: str, n: int = 5):
        super().__init__()
        g = _gen(3)
        self.kind = kind
        self.gamma = nn.Parameter(torch.rand(n, dtype=DT, generator=g) + 0.5)
        self.beta = nn.Parameter(torch.randn(n, dtype=DT, generator=g))
        self.w = nn.Parameter(torch.randn(2, n, dtype=DT, generator=g))

    def forward(self, x):
        if self.kind == "layer_norm":
            h = F.layer_norm(x, (x.shape[-1],), self.gamma, self.beta, 1e-5)
        elif self.kind == "rms_norm":
            h = F.rms_norm(x, (x.shape[-1],), self.gamma, 1e-6)
        elif self.kind == "normalize":
            h = F.normalize(x, dim=-1) * self.gamma
        else:      # Hugging Face's hand-written RMSNorm
            h = self.gamma * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
        return F.linear(h, self.w)


def test_layer_norm_rule_is_the_epsilon_rule_of_the_centring_with_sigma_constant():
    x = torch.randn(1, 5, dtype=DT, generator=_gen(4))
    model = NormHead("layer_norm")
    e = LRP(model, composite="zero", ignore_bias=True, epsilon=1e-12).explain(x, target=1)
    mu, sigma = x[0].mean(), torch.sqrt(x[0].var(unbiased=False) + 1e-5)
    y = F.layer_norm(x, (5,), model.gamma, model.beta, 1e-5)[0].detach()
    r_y = y * model.w[1].detach() * e.outputs[0, 1] / (y @ model.w[1].detach())   # LRP-0 of the dense layer
    z = model.gamma.detach() * (x[0] - mu) / sigma                                  # bias-free LayerNorm output
    expected = torch.stack([sum(x[0, i] * ((i == k) - 1 / 5) * model.gamma[k].detach() / sigma * r_y[k] / z[k]
                                for k in range(5)) for i in range(5)])
    torch.testing.assert_close(e.attributions[0], expected, rtol=1e-8, atol=1e-12)
    assert abs(e.delta.item()) < 1e-10


@pytest.mark.parametrize("kind", ["rms_norm", "hand_written_rms_norm", "normalize"])
def test_rms_norm_rule_is_the_identity(kind):
    x = torch.randn(2, 5, dtype=DT, generator=_gen(5))
    model = NormHead(kind)
    e = LRP(model, composite="zero", epsilon=1e-12).explain(x, target=0)
    if kind == "normalize":
        h = model.gamma.detach() * x / x.norm(dim=-1, keepdim=True)
    else:
        h = model.gamma.detach() * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    expected = h * model.w[0].detach()            # R_h by LRP-0 (no bias), passed unchanged to x
    torch.testing.assert_close(e.attributions, expected, rtol=1e-9, atol=1e-12)


class NewGELUActivation(nn.Module):
    """Hugging Face's hand-written GELU (same class name: the engine recognises activation modules)."""

    def forward(self, x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def test_hand_written_activation_modules_get_the_identity_rule():
    g = _gen(6)
    lin1, lin2 = nn.Linear(4, 6).double(), nn.Linear(6, 3).double()
    hand = nn.Sequential(lin1, NewGELUActivation(), lin2).eval()
    native = nn.Sequential(lin1, nn.GELU(approximate="tanh"), lin2).eval()
    x = torch.randn(3, 4, dtype=DT, generator=g)
    a = LRP(hand, composite="epsilon").explain(x, target=2)
    b = LRP(native, composite="epsilon").explain(x, target=2)
    torch.testing.assert_close(a.outputs, b.outputs)
    torch.testing.assert_close(a.attributions, b.attributions, rtol=1e-9, atol=1e-12)
    assert not hand[1]._forward_hooks and not hand[1]._forward_pre_hooks


def test_deeplift_product_rule_by_hand():
    a, b = torch.tensor([[[2.0]]], dtype=DT), torch.tensor([[[3.0]]], dtype=DT)
    a0, b0 = torch.tensor([[[0.5]]], dtype=DT), torch.tensor([[[-1.0]]], dtype=DT)
    e = DeepLift(Product(), baseline=(a0, b0)).explain((a, b), target=0)
    ca, cb = e.attributions
    assert ca.item() == pytest.approx((2.0 - 0.5) * (3.0 - 1.0) / 2)       # Δa · (b + b')/2
    assert cb.item() == pytest.approx((2.0 + 0.5) / 2 * (3.0 + 1.0))       # (a + a')/2 · Δb
    assert abs(e.delta.item()) < 1e-12


@pytest.mark.parametrize("model", [SoftmaxHead(torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=DT)), NormHead("layer_norm"),
                                   NormHead("rms_norm"), NormHead("hand_written_rms_norm"), NormHead("normalize")],
                         ids=["softmax", "layer_norm", "rms_norm", "hand_rms_norm", "normalize"])
def test_deeplift_summation_to_delta_is_exact(model):
    n = 4 if isinstance(model, SoftmaxHead) else 5
    x = torch.randn(3, n, dtype=DT, generator=_gen(7))
    base = torch.randn(3, n, dtype=DT, generator=_gen(8))
    e = DeepLift(model, baseline=base).explain(x, target=0)
    diff = model(x)[:, 0] - model(base)[:, 0]
    assert diff.abs().min() > 1e-3
    assert e.delta.abs().max().item() < 1e-12
    torch.testing.assert_close(e.attributions.sum(1), diff.detach(), rtol=1e-10, atol=1e-12)


def _mha_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
            self.out = nn.Linear(8, 3)

        def forward(self, x, mask=None):
            y, _ = self.mha(x, x, x, key_padding_mask=mask)
            return self.out(y.mean(1))
    return Model().double().eval()


def _encoder_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, activation="gelu")
    return nn.Sequential(layer, nn.Flatten(), nn.Linear(8 * 4, 3)).double().eval()


@pytest.mark.parametrize("build", [_mha_model, _encoder_model], ids=["mha", "encoder_layer"])
@pytest.mark.parametrize("attention", ["attnlrp", "cp"])
def test_lrp_conserves_on_torch_attention(build, attention):
    model = build()
    x = torch.randn(2, 4, 8, dtype=DT, generator=_gen(9))
    e = LRP(model, composite="zero", ignore_bias=True, attention=attention, epsilon=1e-12).explain(x, target=1)
    torch.testing.assert_close(e.outputs, model(x).detach())          # the traced pass computes the true output
    assert (e.delta.abs() / e.outputs[:, 1].abs()).max().item() < 1e-8
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


@pytest.mark.parametrize("build", [_mha_model, _encoder_model], ids=["mha", "encoder_layer"])
def test_deeplift_summation_to_delta_on_torch_attention(build):
    model = build()
    x = torch.randn(2, 4, 8, dtype=DT, generator=_gen(10))
    e = DeepLift(model).explain(x, target=0)
    assert e.delta.abs().max().item() < 1e-12


def test_mha_key_padding_mask_and_weights():
    model = _mha_model()
    x = torch.randn(2, 4, 8, dtype=DT, generator=_gen(11))
    mask = torch.tensor([[False, False, True, True], [False, False, False, True]])
    e = LRP(model, composite="zero", ignore_bias=True, epsilon=1e-12).explain(x, target=2,
                                                                             forward_kwargs={"mask": mask})
    torch.testing.assert_close(e.outputs, model(x, mask).detach())
    assert (e.delta.abs() / e.outputs[:, 2].abs()).max().item() < 1e-8
    cp = LRP(model, composite="zero", attention="cp").explain(x, target=2, forward_kwargs={"mask": mask})
    # a masked-out token is still a query, but with the attention fixed only the value path carries
    # relevance: masked keys' values get none, so a masked token's relevance comes from its own query row
    assert torch.isfinite(cp.attributions).all()


def test_bad_attention_option_and_unsupported_ops():
    with pytest.raises(ValueError, match="attention must be one of 'attnlrp', 'cp'"):
        LRP(nn.Linear(2, 2), attention="softmax")

    class Var(nn.Module):
        def forward(self, x):
            return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + 1e-5)
    x = torch.randn(2, 5, dtype=DT, generator=_gen(12))
    with pytest.raises(UnsupportedOpError, match="var/std"):
        DeepLift(nn.Sequential(Var(), nn.Linear(5, 2).double())).explain(x, target=0)
    # LRP treats the normaliser of a hand-written LayerNorm as a constant
    e = LRP(nn.Sequential(Var(), nn.Linear(5, 2, bias=False).double()), composite="zero",
            ignore_bias=True).explain(x, target=0)
    assert e.delta.abs().max().item() < 1e-10
    with pytest.raises(UnsupportedOpError, match="RevealCancel has no rule for op torch.nn.functional.softmax"):
        propex.explain(SoftmaxHead(torch.ones(4, dtype=DT)), torch.randn(1, 4, dtype=DT), "deeplift",
                       rule="reveal_cancel", target=0)


def test_mha_in_training_mode_with_dropout_is_refused():
    model = _mha_model()
    model.mha.dropout = 0.5
    model.train()
    with pytest.raises(UnsupportedOpError, match="attention dropout in training mode"):
        LRP(model).explain(torch.randn(1, 4, 8, dtype=DT), target=0)
    assert model.training

"""LRP rules, one by one, and LRP-0 = gradient × input on ReLU networks.

1. Every rule for linear ops is re-implemented slowly in matrix form (a conv is turned into
   its dense matrix first) and compared with the engine on a single layer, with signed
   inputs, with and without bias, with ``ignore_bias`` on and off.
2. LRP-0 (``composite="zero"``) equals ``input_x_gradient`` on piecewise-linear ReLU networks
   written in every style the engine must see through: functional ``F.relu``, in-place
   ``nn.ReLU(inplace=True)``, one ReLU module reused, residual ``out += identity``, max and
   average pooling, ``torch.cat``, flatten/view, batch norm after a conv (merged); with and
   without biases; and on torchvision's resnet18 / vgg11 (random weights).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import propex
from propex.propagation import rules

DT = torch.float64


# ------------------------------------------------------------------ slow matrix references
def _stab(z: torch.Tensor, eps: float) -> torch.Tensor:
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def _div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den == 0, torch.zeros_like(num), num / torch.where(den == 0, torch.ones_like(den), den))


def reference_lrp(rule, x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, R: torch.Tensor,
                  ignore_bias: bool) -> torch.Tensor:
    """Relevance at the input of z = x Wᵀ + b for output relevance R (all dense, [N, in] / [out, in]).
    (LRP-γ: ``gamma_reference``.)"""
    zero_b = torch.zeros(W.shape[0], dtype=W.dtype)
    b = zero_b if (b is None or ignore_bias) else b
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    Wp, Wn = W.clamp(min=0), W.clamp(max=0)
    bp, bn = b.clamp(min=0), b.clamp(max=0)
    if isinstance(rule, rules.Epsilon):          # also LRP-0
        s = _div(R, _stab(x @ W.T + b, rule.epsilon))
        return x * (s @ W)
    if isinstance(rule, rules.ZPlus):
        s = _div(R, _stab(xp @ Wp.T + xn @ Wn.T + bp, rule.stabilizer))
        return xp * (s @ Wp) + xn * (s @ Wn)
    if isinstance(rule, rules.AlphaBeta):
        sp = _div(R, _stab(xp @ Wp.T + xn @ Wn.T + bp, rule.stabilizer))
        sn = _div(R, _stab(xp @ Wn.T + xn @ Wp.T + bn, rule.stabilizer))
        return rule.alpha * (xp * (sp @ Wp) + xn * (sp @ Wn)) - rule.beta * (xp * (sn @ Wn) + xn * (sn @ Wp))
    if isinstance(rule, rules.ZBox):
        low = torch.full_like(x, rule.low)
        high = torch.full_like(x, rule.high)
        z = x @ W.T + b - (low @ Wp.T + bp) - (high @ Wn.T + bn)
        s = _div(R, _stab(z, rule.stabilizer))
        return x * (s @ W) - low * (s @ Wp) - high * (s @ Wn)
    if isinstance(rule, rules.WSquare):
        W2 = W ** 2
        s = _div(R, _stab(torch.ones_like(x) @ W2.T + b ** 2, rule.stabilizer))
        return s @ W2
    if isinstance(rule, rules.Flat):
        ones = (W != 0).to(W.dtype) if FLAT_RESPECTS_SPARSITY else torch.ones_like(W)
        s = _div(R, _stab(torch.ones_like(x) @ ones.T, rule.stabilizer))
        return s @ ones
    raise NotImplementedError(rule)


# a conv's dense matrix has structural zeros; the flat rule spreads relevance over the
# receptive field, i.e. over the non-zero pattern of that matrix
FLAT_RESPECTS_SPARSITY = True


def gamma_reference(rule, x, W, b, b_true, R, ignore_bias):
    """Generalised LRP-γ (Zennit's definition): sign masks from the true output (bias included)."""
    g = rule.gamma
    zero_b = torch.zeros(W.shape[0], dtype=W.dtype)
    bb = zero_b if (b is None or ignore_bias) else b
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    Wup, Wdn = W + g * W.clamp(min=0), W + g * W.clamp(max=0)
    bup, bdn = bb + g * bb.clamp(min=0), bb + g * bb.clamp(max=0)
    true_z = x @ W.T + (zero_b if b_true is None else b_true)
    sp = (true_z > 0) * _div(R, _stab(xp @ Wup.T + xn @ Wdn.T + bup, rule.stabilizer))
    sn = (true_z < 0) * _div(R, _stab(xp @ Wdn.T + xn @ Wup.T + bdn, rule.stabilizer))
    return xp * (sp @ Wup) + xn * (sp @ Wdn) + xp * (sn @ Wdn) + xn * (sn @ Wup)


def dense_matrix(layer: nn.Module, in_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(W, b) of a conv/linear layer as a dense map of the flattened input."""
    bias = layer.bias
    with torch.no_grad():
        saved = None if bias is None else bias.clone()
        if bias is not None:
            bias.zero_()
        eye = torch.eye(int(torch.tensor(in_shape).prod()), dtype=DT).reshape(-1, *in_shape)
        W = layer(eye).reshape(eye.shape[0], -1).T.contiguous()     # [out, in]
        if bias is not None:
            bias.copy_(saved)
            out_shape = layer(torch.zeros(1, *in_shape, dtype=DT)).shape[1:]
            b = saved.reshape(-1, *[1] * (len(out_shape) - 1)).expand(out_shape).reshape(-1).clone()
        else:
            b = None
    return W, b


RULES = [
    rules.Epsilon(0.0), rules.Epsilon(1e-6), rules.Epsilon(0.5), rules.ZPlus(1e-6), rules.AlphaBeta(2.0, 1.0),
    rules.AlphaBeta(1.0, 0.0), rules.Gamma(0.25), rules.Gamma(1.0), rules.ZBox(-2.0, 3.0), rules.WSquare(),
    rules.Flat(),
]


def _layers():
    torch.manual_seed(3)
    return {
        "linear": (nn.Linear(7, 5).to(DT), (7,)),
        "conv": (nn.Conv2d(2, 3, 3, stride=1, padding=1).to(DT), (2, 4, 4)),
        "conv_strided_nobias": (nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False).to(DT), (2, 5, 5)),
    }


@pytest.mark.parametrize("ignore_bias", [False, True], ids=["bias", "ignore_bias"])
@pytest.mark.parametrize("layer_name", ["linear", "conv", "conv_strided_nobias"])
@pytest.mark.parametrize("rule", RULES, ids=repr)
def test_rule_matches_matrix_reference(rule, layer_name, ignore_bias):
    layer, in_shape = _layers()[layer_name]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, *in_shape, generator=gen, dtype=DT)              # signed inputs
    n_out = layer(x[:1]).numel()
    targets = torch.tensor([0, n_out // 2, n_out - 1])
    model = nn.Sequential(layer, nn.Flatten()).eval()
    exp = propex.explain(model, x, "lrp", target=targets, composite={"linear": rule}, ignore_bias=ignore_bias)

    W, b = dense_matrix(layer, in_shape)
    xf = x.reshape(3, -1)
    z = xf @ W.T + (0 if b is None else b)
    R = torch.zeros_like(z)
    R[torch.arange(3), targets] = z[torch.arange(3), targets]            # propex starts from R = f_y(x)
    if isinstance(rule, rules.Gamma):
        expected = gamma_reference(rule, xf, W, b, b, R, ignore_bias)
    else:
        expected = reference_lrp(rule, xf, W, b, R, ignore_bias)
    torch.testing.assert_close(exp.attributions.reshape(3, -1), expected, rtol=1e-9, atol=1e-12)


def test_rules_have_readable_parameters():
    assert "gamma=0.5" in repr(rules.Gamma(0.5))
    assert "epsilon=0.25" in repr(rules.Epsilon(0.25))
    assert "alpha=2.0" in repr(rules.AlphaBeta(2.0, 1.0)) and "beta=1.0" in repr(rules.AlphaBeta(2.0, 1.0))
    assert rules.Gamma(0.5).gamma == 0.5 and rules.ZBox(-1.0, 2.0).high == 2.0
    with pytest.raises(ValueError, match="alpha"):
        rules.AlphaBeta(2.0, 2.0)


# ------------------------------------------------------------------ LRP-0 = gradient x input
class FunctionalMLP(nn.Module):
    def __init__(self, bias: bool):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(6, 8, bias=bias), nn.Linear(8, 8, bias=bias), nn.Linear(8, 4, bias=bias)

    def forward(self, x):
        return self.l3(F.relu(self.l2(torch.relu(self.l1(x)))))


class InplaceCNN(nn.Module):
    """nn.ReLU(inplace=True), max pooling, flatten, view."""

    def __init__(self, bias: bool):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1, bias=bias), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1, bias=bias), nn.ReLU(inplace=True), nn.MaxPool2d(2, stride=1),
        )
        self.fc = nn.Linear(8 * 3 * 3, 5, bias=bias)

    def forward(self, x):
        h = self.features(x)
        return self.fc(h.view(h.shape[0], -1))


class ReusedReLU(nn.Module):
    """One ReLU module called four times, as torchvision's ResNet blocks do."""

    def __init__(self, bias: bool):
        super().__init__()
        self.relu = nn.ReLU()
        self.layers = nn.ModuleList(nn.Linear(6, 6, bias=bias) for _ in range(4))
        self.head = nn.Linear(6, 3, bias=bias)

    def forward(self, x):
        for layer in self.layers:
            x = self.relu(layer(x))
        return self.head(x)


class Residual(nn.Module):
    """conv-BN-ReLU-conv-BN, ``out += identity``, an in-place ReLU, a torch.add skip, avg pooling."""

    def __init__(self, bias: bool):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=bias)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(4, affine=bias)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(4, affine=bias)
        self.relu = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(4, 4, 1, bias=bias)
        self.fc = nn.Linear(4, 3, bias=bias)

    def forward(self, x):
        identity = self.relu(self.stem(x))
        out = self.relu(self.bn1(self.conv1(identity)))
        out = self.bn2(self.conv2(out))
        out += identity
        out = self.relu(out)
        out = torch.add(out, F.relu(self.conv3(out)))
        out = F.avg_pool2d(out, 2)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


class CatNet(nn.Module):
    """Two branches joined with torch.cat, a mean, a reshape."""

    def __init__(self, bias: bool):
        super().__init__()
        self.a = nn.Conv1d(2, 3, 3, padding=1, bias=bias)
        self.b = nn.Conv1d(2, 3, 5, padding=2, bias=bias)
        self.head = nn.Linear(6, 4, bias=bias)

    def forward(self, x):
        h = torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], dim=1)
        return self.head(h.mean(dim=2).reshape(x.shape[0], 6))


ZOO = {
    "functional_mlp": (FunctionalMLP, (6,)),
    "inplace_cnn_maxpool": (InplaceCNN, (3, 8, 8)),
    "reused_relu": (ReusedReLU, (6,)),
    "residual_bn": (Residual, (3, 6, 6)),
    "cat": (CatNet, (2, 9)),
}


def _zoo_model(name: str, bias: bool) -> tuple[nn.Module, torch.Tensor]:
    cls, shape = ZOO[name]
    torch.manual_seed(1)
    model = cls(bias).to(DT)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.3, 0.3) if bias else m.running_mean.zero_()   # a mean is a bias
                m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(2), dtype=DT)
    return model.eval(), x


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("name", list(ZOO))
def test_lrp_zero_equals_input_x_gradient(name, bias, model_snapshot):
    model, x = _zoo_model(name, bias)
    snap = model_snapshot(model)
    lrp = propex.explain(model, x, "lrp", composite="zero")
    ixg = propex.explain(model, x, "input_x_gradient", target=lrp.target)
    scale = ixg.attributions.abs().max()
    assert (lrp.attributions - ixg.attributions).abs().max() <= 1e-6 * scale
    snap.assert_unchanged()
    if not bias:   # nothing absorbs relevance: conservation is exact
        torch.testing.assert_close(lrp.delta, torch.zeros_like(lrp.delta), atol=1e-9 * lrp.outputs.abs().max().item(),
                                   rtol=0)


@pytest.mark.parametrize("name", ["resnet18", "vgg11"])
def test_lrp_zero_equals_input_x_gradient_torchvision(name, torchvision_model, image, relative_error):
    model = torchvision_model(name)
    x = image(1)
    lrp = propex.explain(model, x, "lrp", composite="zero")
    ixg = propex.explain(model, x, "input_x_gradient", target=lrp.target)
    assert relative_error(lrp.attributions, ixg.attributions) <= 1e-6
    # the traced pass (batch norm merged into the convolutions) reports the model's own outputs
    torch.testing.assert_close(lrp.outputs, model(x).detach(), rtol=1e-9, atol=1e-9)


def test_lrp_epsilon_zero_is_the_zero_rule():
    model, x = _zoo_model("inplace_cnn_maxpool", True)
    a = propex.explain(model, x, "lrp", target=1, composite="zero").attributions
    b = propex.explain(model, x, "lrp", target=1, composite="epsilon", epsilon=0.0).attributions
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)

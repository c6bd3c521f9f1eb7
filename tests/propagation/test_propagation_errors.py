"""Errors of the propagation methods: clear ``ValueError``/``TypeError`` naming the culprit, and
the model left exactly as it was (state dict bit-identical, no hooks, ``requires_grad``,
``.grad`` and training flags restored, no torch-function mode left active).

* an op without a rule (``torch.cumsum`` / ``torch.cos`` in the middle of the model) names
  the op, the module path and ``register_op``; ``unknown_ops="warn"`` warns instead;
* ``register_op`` makes a custom activation function work;
* unknown composite name (lists the presets), bad options, DeepLIFT baseline of the wrong
  shape, unknown DeepLIFT rule;
* the forward pass raising midway (on the model's 2nd call, the traced one);
* batch norm in training mode: LRP refuses it.
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as nn_module

import propex
from propex.propagation import UnsupportedOpError, register_op
from propex.propagation import ops as propagation_ops

PROPAGATION = ["lrp", "deeplift", "guided_backprop", "deconvnet"]


def _global_state():
    hooks = tuple(len(getattr(nn_module, name, {})) for name in (
        "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
        "_global_backward_pre_hooks"))
    return hooks, torch._C._len_torch_function_stack()


class Attention(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.proj = nn.Linear(6, 6)
        self.op = op

    def forward(self, x):
        return self.op(self.proj(x))


class WithOp(nn.Module):
    """conv/dense layers with an op in a nested module (``block.attn``)."""

    def __init__(self, op):
        super().__init__()
        self.stem = nn.Linear(4, 6)
        self.block = nn.Sequential()
        self.block.add_module("attn", Attention(op))
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.block(F.relu(self.stem(x))))


def _prepared(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for p in model.parameters():
        p.data.normal_(0, 0.5)
    first = next(model.parameters())
    first.requires_grad_(False)                      # a frozen parameter stays frozen
    model.head.bias.grad = torch.full_like(model.head.bias, 3.0)   # an existing .grad stays
    return model.eval()


# ops with no rule (softmax and exp have transformer rules since issue 7)
OPS = {"cumsum": lambda h: torch.cumsum(h, dim=-1), "cos": torch.cos}


@pytest.mark.parametrize("method", ["lrp", "deeplift"])
@pytest.mark.parametrize("op", list(OPS))
def test_op_without_rule_is_named(op, method, model_snapshot):
    model = _prepared(WithOp(OPS[op]))
    snap, state = model_snapshot(model), _global_state()
    with pytest.raises(ValueError) as info:
        propex.explain(model, torch.randn(2, 4), method, target=0)
    assert isinstance(info.value, UnsupportedOpError)
    message = str(info.value)
    assert op in message
    assert "block.attn" in message                     # the module path
    assert "register_op" in message and "unknown_ops" in message
    snap.assert_unchanged()
    assert _global_state() == state


@pytest.mark.parametrize("method", ["lrp", "deeplift"])
def test_unknown_ops_warn_falls_back_with_a_warning(method, model_snapshot):
    model = _prepared(WithOp(torch.cos))
    snap = model_snapshot(model)
    with pytest.warns(UserWarning, match=r"cos.*block\.attn"):
        exp = propex.explain(model, torch.randn(2, 4), method, target=0, unknown_ops="warn")
    assert torch.isfinite(exp.attributions).all() and exp.attributions.shape == (2, 4)
    snap.assert_unchanged()


class Sinh(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2 = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.l2(torch.sinh(self.l1(x)))


@pytest.fixture
def registered_sinh():
    """register_op(torch.sinh, "activation") for one test, undone afterwards (the registry is global)."""
    assert propagation_ops.kind_of(torch.sinh) is None
    register_op(torch.sinh, "activation")
    yield
    propagation_ops._KIND.pop(torch.sinh, None)


def test_register_op_makes_a_custom_activation_work(registered_sinh):
    torch.manual_seed(0)
    model = Sinh().double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    dl = propex.explain(model, x, "deeplift", target=1, baseline=0.2)
    assert dl.delta.abs().max() <= 1e-10 * (model(x) - model(torch.full_like(x, 0.2)))[:, 1].abs().max()
    lrp = propex.explain(model, x, "lrp", target=1, composite="epsilon", ignore_bias=True)
    assert (lrp.delta.abs() <= 1e-4 * lrp.outputs[:, 1].abs()).all()
    guided = propex.explain(model, x, "guided_backprop", target=1).attributions
    z = model.l1(x)
    expected = (model.l2.weight[1].clamp(min=0) * torch.cosh(z)) @ model.l1.weight
    torch.testing.assert_close(guided, expected.detach())


def test_unregistered_custom_activation_raises():
    model = Sinh().eval()
    with pytest.raises(UnsupportedOpError, match="sinh"):
        propex.explain(model, torch.randn(2, 4), "lrp", target=0)


def test_register_op_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        register_op(torch.sinh, "nonlinear")
    assert propagation_ops.kind_of(torch.sinh) is None


def test_unknown_composite_name_lists_presets():
    model = nn.Sequential(nn.Linear(3, 2)).eval()
    with pytest.raises(ValueError) as info:
        propex.explain(model, torch.rand(1, 3), "lrp", composite="epsilon_plus_flatt")
    message = str(info.value)
    assert "epsilon_plus_flatt" in message
    for name in ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1", "zero"):
        assert name in message


@pytest.mark.parametrize("method,options,match", [
    ("lrp", dict(epsilonn=0.1), "epsilon"),
    ("lrp", dict(unknown_ops="ignore"), "unknown_ops"),
    ("deeplift", dict(rule="revealcancel"), "rule"),
    ("lrp", dict(composite=7), "composite"),
])
def test_bad_options(method, options, match):
    model = nn.Sequential(nn.Linear(3, 2)).eval()
    with pytest.raises((ValueError, TypeError), match=match):
        propex.explain(model, torch.rand(1, 3), method, **options)


@pytest.mark.parametrize("baseline", [torch.zeros(2, 3, 8, 8), torch.zeros(3, 7, 7), torch.zeros(4, 3, 8)])
def test_deeplift_baseline_of_wrong_shape(baseline, model_snapshot):
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 2)).eval()
    snap = model_snapshot(model)
    with pytest.raises(ValueError, match=r"baseline.*shape"):
        propex.explain(model, torch.rand(4, 3, 8, 8), "deeplift", baseline=baseline)
    snap.assert_unchanged()


class RaisesOnCall(nn.Module):
    """BatchNorm, an in-place ReLU used twice, a frozen layer; raises on call ``raise_on``."""

    def __init__(self, raise_on: int):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4 * 4 * 4, 3)
        self.calls, self.raise_on = 0, raise_on

    def forward(self, x):
        self.calls += 1
        h = self.relu(self.bn(self.conv(x)))
        if self.calls == self.raise_on:                # midway through the forward pass
            raise RuntimeError("boom: the model failed on purpose")
        h = F.max_pool2d(self.relu(h + 0.1), 2)
        return self.fc(h.flatten(1))


def _raising_model(raise_on) -> RaisesOnCall:
    model = RaisesOnCall(raise_on)
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 1.5)
    model.conv.weight.requires_grad_(False)
    model.fc.bias.grad = torch.full_like(model.fc.bias, 7.0)
    return model.eval()


@pytest.mark.parametrize("method", PROPAGATION + ["deeplift_reveal_cancel", "lrp_position_last"])
def test_forward_raising_midway_leaves_the_model_unchanged(method, model_snapshot):
    """The model raises halfway through its forward, on each of the calls a method makes in turn
    (the traced pass included; the brief's "2nd call" where a method makes two)."""
    name = method.split("_")[0] if method.startswith(("deeplift_", "lrp_")) else method
    options = {"deeplift_reveal_cancel": dict(rule="reveal_cancel"),
               "lrp_position_last": dict(composite="epsilon_plus_flat")}.get(method, {})
    if method == "lrp_position_last":          # needs an extra counting pass
        from propex.propagation import Position, rules
        options = dict(composite=[(Position("last"), rules.Epsilon(0.0)), ("linear", rules.ZPlus())])
    x = torch.rand(2, 3, 8, 8)
    dry = _raising_model(None)
    propex.explain(dry, x, name, target=0, **options)
    assert dry.calls >= 1
    for k in range(1, dry.calls + 1):
        model = _raising_model(k)
        snap, state = model_snapshot(model), _global_state()
        with pytest.raises((RuntimeError, ValueError), match="boom"):   # the first call wraps it in a ValueError
            propex.explain(model, x, name, target=0, **options)
        assert model.calls == k
        snap.assert_unchanged()
        assert _global_state() == state
        model.raise_on = None                          # the model still works with propex afterwards
        again = propex.explain(model, x, name, target=0, **options)
        torch.testing.assert_close(again.attributions, propex.explain(dry, x, name, target=0, **options).attributions)
        snap.assert_unchanged()


def test_lrp_refuses_batch_norm_in_training_mode(model_snapshot):
    model = RaisesOnCall(raise_on=-1).train()
    snap = model_snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                # propex warns about training mode first
        with pytest.raises(ValueError) as info:
            propex.explain(model, torch.rand(4, 3, 8, 8), "lrp", target=0)
    message = str(info.value).lower()
    assert "batch_norm" in message or "batchnorm" in message
    assert "train" in message and "eval" in message
    assert "'bn'" in message                           # the module path
    snap.assert_unchanged()                           # running statistics untouched, still in train mode
    assert model.training and model.bn.training


def test_deeplift_refuses_batch_norm_in_training_mode():
    model = RaisesOnCall(raise_on=-1).train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="(?i)batch.?norm"):
            propex.explain(model, torch.rand(4, 3, 8, 8), "deeplift", target=0)


def test_nonfinite_input_is_refused():
    model = nn.Sequential(nn.Linear(3, 2)).eval()
    x = torch.rand(2, 3)
    x[1, 2] = float("nan")
    for method in PROPAGATION:
        with pytest.raises(ValueError, match="NaN"):
            propex.explain(model, x, method)


def test_target_outside_the_output():
    model = nn.Sequential(nn.Linear(3, 2)).eval()
    for method in PROPAGATION:
        with pytest.raises(ValueError, match="target"):
            propex.explain(model, torch.rand(2, 3), method, target=5)

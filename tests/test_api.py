"""The public API of DESIGN.md: ``explain``, ``Explanation``, ``methods``, the method classes."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

import propex
from propex import api

GRADIENT_METHODS = ["saliency", "input_x_gradient", "smoothgrad", "vargrad", "integrated_gradients",
                    "expected_gradients", "blur_ig", "guided_ig"]
COMPLETE = {"integrated_gradients", "expected_gradients", "blur_ig", "guided_ig"}


def _opts(method, refs):
    return {"expected_gradients": dict(baseline=refs, n_samples=4, seed=0),
            "smoothgrad": dict(n_samples=3, seed=0), "vargrad": dict(n_samples=3, seed=0),
            "integrated_gradients": dict(n_steps=8), "blur_ig": dict(n_steps=8), "guided_ig": dict(n_steps=4),
            }.get(method, {})


def test_public_names_exist():
    for name in propex.__all__:
        assert hasattr(propex, name), name
    for name in ("explain", "methods", "Explanation", "IntegratedGradients", "Saliency", "SmoothGrad", "VarGrad",
                 "InputXGradient", "ExpectedGradients", "BlurIG", "GuidedIG"):
        assert name in propex.__all__


def test_methods_lists_the_gradient_family_in_design_order():
    names = propex.methods()
    assert len(names) == len(set(names))
    assert [n for n in names if n in GRADIENT_METHODS] == GRADIENT_METHODS
    assert propex.methods("gradient") == GRADIENT_METHODS
    assert propex.methods("no_such_family") == []
    for name in names:
        assert name == name.lower() and " " not in name and "-" not in name
        cls = propex.get_method(name)
        assert cls.name == name


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_explain_returns_a_full_explanation(digits_model, digits_x, digits_refs, method):
    x = digits_x[:3]
    exp = propex.explain(digits_model, x, method, **_opts(method, digits_refs))
    assert isinstance(exp, propex.Explanation)
    assert exp.method == method
    assert isinstance(exp.attributions, torch.Tensor) and exp.attributions.shape == x.shape
    assert exp.attributions.dtype == x.dtype
    assert torch.isfinite(exp.attributions).all()
    with torch.no_grad():
        out = digits_model(x)
    assert torch.allclose(exp.outputs, out) and exp.outputs.grad_fn is None
    assert exp.target.dtype == torch.long and torch.equal(exp.target, out.argmax(dim=1))
    if method in COMPLETE:
        assert exp.delta is not None and exp.delta.shape == (3,)
        assert propex.get_method(method).claims_completeness
    else:
        assert exp.delta is None
    assert method in repr(exp)
    for key, value in _opts(method, digits_refs).items():
        assert key in exp.options
        if not isinstance(value, torch.Tensor):
            assert exp.options[key] == value


@pytest.mark.parametrize("alias,canonical", [
    ("ig", "integrated_gradients"), ("IG", "integrated_gradients"), ("Integrated-Gradients", "integrated_gradients"),
    ("sg", "smoothgrad"), ("gradient_shap", "expected_gradients"), ("gradient", "saliency"),
    ("grad_x_input", "input_x_gradient"), ("blurig", "blur_ig"), ("guidedig", "guided_ig"),
])
def test_aliases_resolve_to_canonical_names(digits_model, digits_x, alias, canonical):
    assert propex.get_method(alias).name == canonical
    opts = {"integrated_gradients": dict(n_steps=4), "smoothgrad": dict(n_samples=2)}.get(canonical)
    if opts is not None:
        assert propex.explain(digits_model, digits_x[:2], alias, **opts).method == canonical


def test_get_method_accepts_a_class():
    assert propex.get_method(propex.IntegratedGradients) is propex.IntegratedGradients


def test_method_class_attribute_returns_a_tensor(digits_model, digits_x):
    ig = propex.IntegratedGradients(digits_model, n_steps=64)
    attr = ig.attribute(digits_x, target=3)
    assert type(attr) is torch.Tensor and attr.shape == digits_x.shape
    exp = propex.explain(digits_model, digits_x, "integrated_gradients", target=3, n_steps=64)
    assert torch.equal(attr, exp.attributions)
    assert torch.equal(ig.explain(digits_x, target=3).target, torch.full((8,), 3))
    assert "n_steps=64" in repr(ig)


def test_default_method_is_saliency(digits_model, digits_x):
    assert propex.explain(digits_model, digits_x[:2]).method == "saliency"


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(4, 3)
        self.b = nn.Conv1d(2, 3, 3)

    def forward(self, a, b):
        return self.a(a) * self.b(b).mean(dim=2)


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "smoothgrad", "integrated_gradients"])
def test_tuple_input_gives_tuple_attributions(method):
    model = TwoInputs().eval()
    a, b = torch.randn(3, 4), torch.randn(3, 2, 7)
    opts = {"smoothgrad": dict(n_samples=2, seed=0), "integrated_gradients": dict(n_steps=16)}.get(method, {})
    exp = propex.explain(model, (a, b), method, target=1, **opts)
    assert isinstance(exp.attributions, tuple) and len(exp.attributions) == 2
    assert exp.attributions[0].shape == a.shape and exp.attributions[1].shape == b.shape
    as_list = propex.explain(model, [a, b], method, target=1, **opts)
    assert all(torch.equal(p, q) for p, q in zip(exp.attributions, as_list.attributions))
    if method == "saliency":
        aa, bb = a.clone().requires_grad_(), b.clone().requires_grad_()
        ga, gb = torch.autograd.grad(model(aa, bb)[:, 1].sum(), (aa, bb))
        assert torch.allclose(exp.attributions[0], ga, atol=1e-6)
        assert torch.allclose(exp.attributions[1], gb, atol=1e-6)
    if method == "integrated_gradients":
        gap = (model(a, b) - model(torch.zeros_like(a), torch.zeros_like(b)))[:, 1].detach()
        total = exp.attributions[0].sum(dim=1) + exp.attributions[1].sum(dim=(1, 2))
        assert torch.allclose(total, gap, atol=1e-3)
    # a one-element tuple is still a tuple
    single = propex.explain(model.a, (a,), "saliency", target=0)
    assert isinstance(single.attributions, tuple) and len(single.attributions) == 1


# ---------------------------------------------------------------- model forms
W = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])


def _linear(x):
    return x @ W.T


class DictModel(nn.Module):
    def forward(self, x):
        return {"logits": _linear(x), "hidden": x}


@dataclass
class Output:
    logits: torch.Tensor
    loss: torch.Tensor | None = None


class ObjModel(nn.Module):
    def forward(self, x):
        return Output(logits=_linear(x))


@pytest.mark.parametrize("model", [_linear, lambda x: _linear(x), DictModel().eval(), ObjModel().eval()],
                         ids=["function", "lambda", "dict_logits", "object_logits"])
def test_model_forms(model):
    x = torch.randn(4, 3)
    exp = propex.explain(model, x, "integrated_gradients", target=1, n_steps=4)
    assert torch.allclose(exp.attributions, x * W[1], atol=1e-6)
    assert torch.allclose(exp.outputs, _linear(x))
    assert torch.equal(propex.explain(model, x, "saliency").target, _linear(x).argmax(dim=1))


# ---------------------------------------------------------------- registry
def test_register_a_custom_method(monkeypatch, digits_model, digits_x):
    monkeypatch.setattr(api, "_REGISTRY", dict(api._REGISTRY))
    monkeypatch.setattr(api, "_ALIASES", dict(api._ALIASES))

    @propex.register
    class Doubled(propex.Saliency):
        name = "doubled_saliency"
        aliases = ("dsal",)

        def _attribute(self, prep):
            (a,), d = super()._attribute(prep)
            return (2 * a,), d

    assert "doubled_saliency" in propex.methods()
    exp = propex.explain(digits_model, digits_x[:2], "dsal")
    assert exp.method == "doubled_saliency"
    assert torch.allclose(exp.attributions, 2 * propex.explain(digits_model, digits_x[:2]).attributions)
    with pytest.raises(ValueError, match="already taken"):
        @propex.register
        class Clash(propex.Saliency):
            name = "saliency2"
            aliases = ("ig",)


def test_register_needs_a_name():
    class NoName(propex.Method):
        pass

    with pytest.raises(ValueError, match="name"):
        propex.register(NoName)


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "blur_ig"])
def test_results_are_detached_from_the_callers_graph(method):
    """x computed with grad (a preprocessing step, a learned input) must not leak its graph into
    the explanation."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(32, 3)).eval()
    raw = torch.rand(2, 1, 4, 4, requires_grad=True)
    x = raw * 2 - 1                                           # non-leaf, requires grad
    base = torch.zeros(1, 4, 4, requires_grad=True)
    opts = {"integrated_gradients": dict(n_steps=4, baseline=base), "smoothgrad": dict(n_samples=2, seed=0),
            "blur_ig": dict(n_steps=4)}.get(method, {})
    exp = propex.explain(net, x, method, **opts)
    for t in (exp.attributions, exp.outputs, exp.delta):
        assert t is None or (not t.requires_grad and t.grad_fn is None)
    assert raw.grad is None and base.grad is None

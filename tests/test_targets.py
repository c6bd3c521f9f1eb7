"""Every documented form of ``target=`` (see ``propex.targets``), and ``forward_kwargs=``."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import propex


def _grad(model, x, select):
    """Manual d select(model(x)).sum() / dx."""
    x = x.clone().requires_grad_()
    return torch.autograd.grad(select(model(x)).sum(), x)[0]


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4)).eval()


@pytest.fixture
def x6():
    return torch.randn(5, 6)


class Seg(nn.Module):
    """A segmentation-like model: ``[N, 2, 6, 6] -> [N, 3, 6, 6]`` per-pixel class scores."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x):
        return self.conv2(torch.tanh(self.conv1(x)))


# ---------------------------------------------------------------- class-index targets
def test_none_is_top_class(mlp, x6):
    exp = propex.explain(mlp, x6, "saliency")
    top = mlp(x6).argmax(dim=1)
    assert exp.target.dtype == torch.long and exp.target.shape == (5,)
    assert torch.equal(exp.target, top)
    assert torch.allclose(exp.attributions, _grad(mlp, x6, lambda o: o.gather(1, top[:, None])), atol=1e-6)


@pytest.mark.parametrize("form", ["int", "tensor0d", "numpy_int", "list", "tensor", "numpy", "tuple1"])
def test_int_and_per_sample_forms(mlp, x6, form):
    per_sample = [0, 3, 1, 1, 2]
    target = {
        "int": 2, "tensor0d": torch.tensor(2), "numpy_int": np.int64(2), "tuple1": (2,),
        "list": per_sample, "tensor": torch.tensor(per_sample, dtype=torch.int32), "numpy": np.array(per_sample),
    }[form]
    want_t = torch.full((5,), 2) if form in ("int", "tensor0d", "numpy_int", "tuple1") else torch.tensor(per_sample)
    exp = propex.explain(mlp, x6, "saliency", target=target)
    want = _grad(mlp, x6, lambda o: o.gather(1, want_t[:, None]))
    assert torch.allclose(exp.attributions, want, atol=1e-6)
    if form != "tuple1":                      # a tuple index has no class per sample to report
        assert torch.equal(exp.target, want_t) and exp.target.dtype == torch.long


@pytest.mark.parametrize("method,opts", [("saliency", {}), ("integrated_gradients", dict(n_steps=8))])
def test_two_dim_target_equals_t_single_calls(mlp, x6, method, opts):
    targets = [[0, 1, 3], [2, 2, 0], [3, 1, 0], [0, 0, 1], [1, 3, 2]]      # nested lists work too
    exp = propex.explain(mlp, x6, method, target=targets, **opts)
    assert exp.attributions.shape == (5, 3, 6)
    assert torch.equal(exp.target, torch.tensor(targets))
    for t in range(3):
        single = propex.explain(mlp, x6, method, target=[row[t] for row in targets], **opts)
        assert torch.allclose(exp.attributions[:, t], single.attributions, atol=1e-6)
        if single.delta is not None:
            assert torch.allclose(exp.delta[:, t], single.delta, atol=1e-5)


# ---------------------------------------------------------------- multi-dim outputs
def test_tuple_index_into_segmentation_output():
    model = Seg().eval()
    x = torch.randn(3, 2, 6, 6)
    exp = propex.explain(model, x, "saliency", target=(2, 1, 4))
    want = _grad(model, x, lambda o: o[:, 2, 1, 4])
    assert exp.attributions.shape == x.shape
    assert torch.allclose(exp.attributions, want, atol=1e-6)
    assert exp.attributions[:, :, 4:, :].abs().max() == 0          # 2 stacked 3×3 convs: receptive field ±2
    neg = propex.explain(model, x, "saliency", target=(-1, 1, -2)).attributions
    assert torch.allclose(neg, exp.attributions, atol=0)


def test_callable_target_on_segmentation_output():
    model = Seg().eval()
    x = torch.randn(3, 2, 6, 6)
    mask = torch.zeros(6, 6)
    mask[1:3, 2:5] = 1

    def region_score(out):
        return (out[:, 0] * mask).sum(dim=(1, 2))

    exp = propex.explain(model, x, "integrated_gradients", target=region_score, n_steps=16)
    assert exp.target is None
    want_gap = region_score(model(x)) - region_score(model(torch.zeros_like(x)))
    assert torch.allclose(exp.attributions.sum(dim=(1, 2, 3)), want_gap.detach(), atol=1e-3)
    sal = propex.explain(model, x, "saliency", target=region_score).attributions
    assert torch.allclose(sal, _grad(model, x, region_score), atol=1e-6)


def test_list_of_per_sample_callables():
    """pytorch-grad-cam's convention: one callable per sample, each seeing that sample's output."""
    model = Seg().eval()
    x = torch.randn(3, 2, 6, 6)
    fns = [lambda o: o[0, 0, 0], lambda o: o[1].sum(), lambda o: o[2, 3:, 3:].mean()]
    exp = propex.explain(model, x, "saliency", target=fns)
    assert exp.target is None
    out_select = lambda o: torch.stack([fns[i](o[i]) for i in range(3)])   # noqa: E731
    assert torch.allclose(exp.attributions, _grad(model, x, out_select), atol=1e-6)
    # chunked evaluation must route each point to its own sample's callable
    ig_a = propex.explain(model, x, "ig", target=fns, n_steps=6, batch_size=4).attributions
    ig_b = propex.explain(model, x, "ig", target=fns, n_steps=6).attributions
    assert torch.allclose(ig_a, ig_b, atol=1e-6)


def test_class_index_on_segmentation_output_is_a_clear_error():
    model = Seg().eval()
    x = torch.randn(2, 2, 6, 6)
    for target in (None, 1):
        with pytest.raises(ValueError, match="target"):
            propex.explain(model, x, "saliency", target=target)
    with pytest.raises(ValueError, match="tuple index"):
        propex.explain(model, x, "saliency", target=(0, 6, 0))


def test_callable_returning_wrong_shape_is_a_clear_error(mlp, x6):
    with pytest.raises(ValueError, match="target"):
        propex.explain(mlp, x6, "saliency", target=lambda out: out)
    with pytest.raises(TypeError, match="target"):
        propex.explain(mlp, x6, "saliency", target=lambda out: 3.0)
    with pytest.raises(ValueError, match="one per sample"):
        propex.explain(mlp, x6, "saliency", target=[lambda o: o[0]] * 2)


# ---------------------------------------------------------------- regression-style output
def test_callable_on_scalar_regression_output():
    class Reg(nn.Module):
        def forward(self, x):
            return (x ** 2).sum(dim=1)                      # [N]: no class dimension

    x = torch.randn(4, 3)
    exp = propex.explain(Reg().eval(), x, "saliency", target=lambda out: out)
    assert torch.allclose(exp.attributions, 2 * x)
    with pytest.raises(ValueError, match="callable"):
        propex.explain(Reg().eval(), x, "saliency")


# ---------------------------------------------------------------- forward_kwargs
class Masked(nn.Module):
    """Scores depend on a per-sample mask (non-attributed) and a shared scale."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.lin = nn.Linear(6, 3)

    def forward(self, x, mask, scale=1.0):
        return self.lin(torch.tanh(x) * mask) * scale


def test_forward_kwargs_per_sample_tensor_is_indexed_per_chunk():
    model = Masked().eval()
    x = torch.randn(5, 6)
    mask = (torch.rand(5, 6) > 0.4).float()
    kw = dict(mask=mask, scale=2.0)
    full = propex.explain(model, x, "ig", target=1, n_steps=8, forward_kwargs=kw)
    chunked = propex.explain(model, x, "ig", target=1, n_steps=8, batch_size=3, forward_kwargs=kw)
    assert torch.allclose(full.attributions, chunked.attributions, atol=1e-6)
    # the mask really went to its own sample: masked-out features get exactly 0
    assert torch.all(full.attributions[mask == 0] == 0)
    assert full.attributions[mask == 1].abs().min() > 0
    assert torch.allclose(full.outputs, model(x, **kw).detach())
    # and completeness holds with the kwargs applied to the baseline too
    gap = (model(x, **kw) - model(torch.zeros_like(x), **kw))[:, 1].detach()
    assert torch.allclose(full.attributions.sum(dim=1), gap, atol=1e-4)
    sal = propex.explain(model, x, "saliency", target=1, batch_size=2, forward_kwargs=kw).attributions
    assert torch.allclose(sal, _grad(lambda t: model(t, **kw), x, lambda o: o[:, 1]), atol=1e-6)


def test_forward_kwargs_must_be_a_mapping(mlp, x6):
    with pytest.raises(TypeError, match="forward_kwargs"):
        propex.explain(mlp, x6, "saliency", forward_kwargs=[1, 2])

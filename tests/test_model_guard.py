"""``explain`` leaves the model exactly as it found it: parameters, buffers (BatchNorm running
statistics), ``requires_grad``, ``.grad``, training flags and hooks — for every method, with
``layer=``, and when the forward pass raises midway."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.modules import module as nn_module

import propex

KNOWN_OPTIONS = {
    "saliency": {}, "input_x_gradient": {},
    "smoothgrad": dict(n_samples=3, seed=0), "vargrad": dict(n_samples=3, seed=0),
    "integrated_gradients": dict(n_steps=4), "blur_ig": dict(n_steps=4, max_sigma=3.0),
    "guided_ig": dict(n_steps=3),
    "expected_gradients": dict(n_samples=3, seed=0, baseline=torch.rand(3, 1, 8, 8,
                                                                        generator=torch.Generator().manual_seed(0))),
}
GRADIENT = ["saliency", "input_x_gradient", "smoothgrad", "vargrad", "integrated_gradients",
            "expected_gradients", "blur_ig", "guided_ig"]


class Net(nn.Module):
    """BatchNorm, Dropout, an in-place ReLU used twice, a frozen layer; raises on call ``raise_on``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(4 * 4 * 4, 5)
        self.calls = 0
        self.raise_on: int | None = None

    def forward(self, x):
        self.calls += 1
        if self.raise_on is not None and self.calls == self.raise_on:
            raise RuntimeError("boom: the model failed on purpose")
        h = self.relu(self.bn(self.conv1(x)))
        h = self.relu(self.conv2(h))
        h = nn.functional.avg_pool2d(h, 2)
        return self.fc(self.drop(h.flatten(1)))


def _global_hooks():
    return tuple(len(getattr(nn_module, name, {})) for name in (
        "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
        "_global_backward_pre_hooks", "_global_module_registration_hooks"))


def _prepare(train: bool) -> Net:
    net = Net()
    with torch.no_grad():                      # non-trivial running statistics
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 1.5)
    net.conv1.weight.requires_grad_(False)     # a frozen parameter stays frozen
    net.fc.bias.grad = torch.full_like(net.fc.bias, 7.0)   # an existing .grad stays as it was
    return net.train(train)


def _explain(net, x, method, **extra):
    opts = dict(KNOWN_OPTIONS.get(method, {}))
    opts.update(extra)
    return propex.explain(net, x, method, **opts)


@pytest.mark.parametrize("method", propex.methods())
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_model_unchanged_after_explain(method, train, model_snapshot):
    net = _prepare(train)
    snap, hooks = model_snapshot(net), _global_hooks()
    x = torch.rand(3, 1, 8, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _explain(net, x, method)
        except (ValueError, TypeError):
            if method in GRADIENT:
                raise
            # a method needing options this generic test does not know: it must still leave the model alone
    snap.assert_unchanged()
    assert _global_hooks() == hooks
    train_warnings = [w for w in caught if "training mode" in str(w.message)]
    assert len(train_warnings) == (1 if train else 0)
    if train:
        assert train_warnings[0].filename == __file__        # points at the caller, not into propex


@pytest.mark.parametrize("method", GRADIENT)
def test_model_unchanged_with_layer(method, model_snapshot):
    net = _prepare(train=False)
    snap = model_snapshot(net)
    x = torch.rand(3, 1, 8, 8)
    extra = dict(layer="conv2")
    if method == "expected_gradients":
        extra["baseline"] = torch.rand(3, 1, 8, 8)            # layer= needs M = N references
    for layer_input in (False, True):
        exp = _explain(net, x, method, layer_input=layer_input, **extra)
        assert exp.attributions.shape == (3, 4, 8, 8)
        snap.assert_unchanged()


# layer= exists for the gradient methods only; the other methods are run without it
_RAISE_CASES = [(m, None) for m in propex.methods()] + [(m, "conv2") for m in propex.methods() if m in GRADIENT]


@pytest.mark.parametrize("method,layer", _RAISE_CASES)
def test_model_unchanged_when_forward_raises_midway(method, layer, model_snapshot):
    net = _prepare(train=True)
    snap, hooks = model_snapshot(net), _global_hooks()
    net.raise_on = 3
    x = torch.rand(3, 1, 8, 8)
    extra = {"batch_size": 1}
    if layer is not None:
        extra["layer"] = layer
        if method == "expected_gradients":
            extra["baseline"] = torch.rand(3, 1, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _explain(net, x, method, **extra)
        except RuntimeError as err:
            assert "boom" in str(err)
        except (ValueError, TypeError):
            if method in GRADIENT:
                raise
        else:
            if method in GRADIENT:
                pytest.fail(f"{method} made fewer than 3 model calls with batch_size=1")
    assert net.calls >= 3 or method not in GRADIENT
    net.raise_on, net.calls = None, 0
    snap.assert_unchanged()
    assert _global_hooks() == hooks


def test_model_still_works_and_explains_after_a_failure(model_snapshot):
    net = _prepare(train=False)
    x = torch.rand(2, 1, 8, 8)
    ref = propex.explain(net, x, "ig", n_steps=4).attributions
    net.raise_on, net.calls = 2, 0
    with pytest.raises(RuntimeError, match="boom"):
        propex.explain(net, x, "ig", n_steps=4)
    net.raise_on = None
    assert torch.equal(propex.explain(net, x, "ig", n_steps=4).attributions, ref)


def test_batchnorm_statistics_in_train_mode_are_restored():
    """A train-mode BatchNorm updates its running stats on every forward; propex must undo that."""
    net = _prepare(train=True)
    before = (net.bn.running_mean.clone(), net.bn.running_var.clone(), net.bn.num_batches_tracked.clone())
    with pytest.warns(UserWarning, match="training mode"):
        propex.explain(net, torch.rand(4, 1, 8, 8) * 5 + 3, "integrated_gradients", n_steps=8, batch_size=4)
    assert torch.equal(net.bn.running_mean, before[0])
    assert torch.equal(net.bn.running_var, before[1])
    assert torch.equal(net.bn.num_batches_tracked, before[2])
    # sanity: a plain forward in train mode does change them (so the check above is meaningful)
    net(torch.rand(4, 1, 8, 8) * 5 + 3)
    assert not torch.equal(net.bn.running_mean, before[0])


def test_user_hooks_survive_and_run(model_snapshot):
    net = _prepare(train=False)
    seen = []
    h = net.conv2.register_forward_hook(lambda m, a, o: seen.append(o.shape[0]))
    try:
        snap = model_snapshot(net)
        propex.explain(net, torch.rand(2, 1, 8, 8), "ig", n_steps=3, layer="conv2")
        snap.assert_unchanged()
        assert len(seen) >= 2 and len(net.conv2._forward_hooks) == 1
    finally:
        h.remove()


@pytest.mark.parametrize("wrap", ["bound_method", "partial"])
def test_bound_method_and_partial_of_a_module_are_guarded(wrap, model_snapshot):
    import functools
    net = _prepare(train=True)
    snap = model_snapshot(net)
    model = net.forward if wrap == "bound_method" else functools.partial(net)
    with pytest.warns(UserWarning, match="training mode"):
        propex.explain(model, torch.rand(3, 1, 8, 8) * 4 + 1, "integrated_gradients", n_steps=4)
    snap.assert_unchanged()


def test_no_train_mode_warning_for_models_without_mode_dependent_layers():
    """A fresh nn.Linear is in training mode but behaves the same in eval: no warning."""
    import warnings as _warnings

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    assert model.training
    with _warnings.catch_warnings():
        _warnings.simplefilter("error")
        propex.explain(model, torch.randn(2, 4), "saliency")
    with pytest.warns(UserWarning, match="training mode"):
        propex.explain(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.1)), torch.randn(2, 4),
                       "saliency")

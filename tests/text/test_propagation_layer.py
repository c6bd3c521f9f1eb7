"""layer= in the propagation engine (DeepLIFT, LRP): attributing at a layer equals running the
method on the rest of the network with the layer's tensor as its input."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import propex
from propex.baselines import LayerBaseline


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


@pytest.mark.parametrize("method, options", [("deeplift", {}), ("lrp", {"composite": "epsilon"}),
                                             ("lrp", {"composite": "alpha1_beta0"})])
def test_layer_attribution_equals_the_tail_network(mlp, method, options, model_snapshot):
    x = torch.randn(5, 6)
    snap = model_snapshot(mlp)
    at_layer = propex.explain(mlp, x, method, target=2, layer=mlp[1], **options)
    snap.assert_unchanged()
    tail = mlp[2:]
    with torch.no_grad():
        h = mlp[1](mlp[0](x))
        h0 = mlp[1](mlp[0](torch.zeros(1, 6)))      # DeepLIFT's default reference x' = 0, at the layer
    if method == "deeplift":
        options = {**options, "baseline": h0}
    direct = propex.explain(tail, h, method, target=2, **options)
    assert at_layer.attributions.shape == (5, 8)
    torch.testing.assert_close(at_layer.attributions, direct.attributions, atol=1e-6, rtol=1e-5)


def test_deeplift_layer_baselines(mlp):
    x, x0 = torch.randn(4, 6), torch.randn(4, 6)
    with torch.no_grad():
        h, h0 = mlp[0](x), mlp[0](x0)
    # input-space baseline: its layer tensor is the reference
    via_inputs = propex.explain(mlp, x, "deeplift", target=0, layer=mlp[0], baseline=x0)
    direct = propex.explain(mlp[1:], h, "deeplift", target=0, baseline=h0)
    torch.testing.assert_close(via_inputs.attributions, direct.attributions, atol=1e-6, rtol=1e-5)
    # layer-space baseline
    in_layer = propex.explain(mlp, x, "deeplift", target=0, layer=mlp[0], baseline=LayerBaseline(h0))
    torch.testing.assert_close(in_layer.attributions, direct.attributions, atol=1e-6, rtol=1e-5)
    assert float(in_layer.delta.abs().max()) < 1e-5
    # chunked = one pass
    chunked = propex.explain(mlp, x, "deeplift", target=0, layer=mlp[0], baseline=x0, batch_size=3)
    torch.testing.assert_close(chunked.attributions, via_inputs.attributions)


def test_layer_errors(mlp):
    x = torch.randn(2, 6)
    with pytest.raises(ValueError, match="reveal_cancel"):
        propex.explain(mlp, x, "deeplift", layer=mlp[0], rule="reveal_cancel")
    with pytest.raises(ValueError, match="LayerBaseline"):
        propex.explain(mlp, x, "deeplift", baseline=LayerBaseline(torch.zeros(8)))
    with pytest.raises(ValueError, match="layer='nope'"):
        propex.explain(mlp, x, "lrp", layer="nope")

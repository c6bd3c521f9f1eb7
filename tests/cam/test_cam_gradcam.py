"""GradCAM, GradCAM++, HiResCAM, LayerCAM: closed forms, options, batching, layers, bad input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import propex
from propex.cam import default_layer

GRADIENT_CAMS = ["gradcam", "gradcam_pp", "hirescam", "layercam"]




class PooledLinear(nn.Module):
    """conv -> ReLU (the CAM layer, 6x5 map) -> global average pooling -> linear: f = W mean(A) + b."""

    def __init__(self, channels: int = 5, classes: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))


@pytest.fixture
def pooled() -> tuple[PooledLinear, torch.Tensor]:
    torch.manual_seed(1)
    model = PooledLinear().double().eval()
    with torch.no_grad():
        model.conv.bias.add_(0.3)         # most units active
    x = torch.randn(3, 3, 6, 5, dtype=torch.float64)
    return model, x


def _activations(model: PooledLinear, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.act(model.conv(x))


def test_gradcam_closed_form_on_a_pooled_linear_head(pooled, model_snapshot):
    """f_y = sum_k W_yk mean(A^k) + b_y: dF/dA^k_ij = W_yk / (h w), so GradCAM = (1/hw) sum_k W_yk A^k."""
    model, x = pooled
    snap = model_snapshot(model)
    a = _activations(model, x)
    hw = a.shape[2] * a.shape[3]
    target = torch.tensor([0, 3, 2])
    expected = torch.einsum("nk,nkhw->nhw", model.fc.weight[target].detach(), a) / hw
    for method in ("gradcam", "hirescam"):   # the gradient is constant over positions: both are the CAM
        got = propex.explain(model, x, method, target=target, layer="act", relu=False, upsample=False)
        assert got.attributions.shape == (3, 1, 6, 5)
        torch.testing.assert_close(got.attributions[:, 0], expected, rtol=1e-12, atol=1e-12)
    relu = propex.explain(model, x, "gradcam", target=target, layer="act", upsample=False).attributions
    torch.testing.assert_close(relu[:, 0], expected.clamp(min=0), rtol=1e-12, atol=1e-12)
    assert (expected < 0).any() and (expected > 0).any()     # the ReLU matters in this case
    # HiResCAM sums to the score minus the bias (its faithfulness property)
    total = propex.explain(model, x, "hirescam", target=target, layer="act", relu=False, upsample=False)
    with torch.no_grad():
        scores = model(x).gather(1, target[:, None])[:, 0] - model.fc.bias[target]
    torch.testing.assert_close(total.attributions.sum(dim=(1, 2, 3)), scores, rtol=1e-12, atol=1e-12)
    snap.assert_unchanged()


def test_gradcam_pp_and_layercam_closed_forms(pooled):
    """With g_k = W_yk / hw constant over positions: GradCAM++ weights are hw * relu(g_k) * g_k^2 /
    (2 g_k^2 + S_k g_k^3), S_k = sum_ij A^k_ij; LayerCAM = sum_k relu(g_k) A^k."""
    model, x = pooled
    a = _activations(model, x)
    hw = a.shape[2] * a.shape[3]
    target = torch.tensor([1, 1, 2])
    g = model.fc.weight[target].detach() / hw                          # [N, C]
    s = a.sum(dim=(2, 3))
    alpha = g ** 2 / (2 * g ** 2 + s * g ** 3)
    w = hw * alpha * g.clamp(min=0)
    expected_pp = torch.einsum("nk,nkhw->nhw", w, a)
    got = propex.explain(model, x, "gradcam_pp", target=target, layer="act", relu=False, upsample=False)
    torch.testing.assert_close(got.attributions[:, 0], expected_pp, rtol=1e-10, atol=1e-14)
    expected_layer = torch.einsum("nk,nkhw->nhw", g.clamp(min=0), a)
    got = propex.explain(model, x, "layercam", target=target, layer="act", relu=False, upsample=False)
    torch.testing.assert_close(got.attributions[:, 0], expected_layer, rtol=1e-12, atol=1e-12)
    # eps is added to the denominator (pytorch-grad-cam's 1e-6)
    eps = 1e-3
    w_eps = hw * g.clamp(min=0) * g ** 2 / (2 * g ** 2 + s * g ** 3 + eps)
    got = propex.explain(model, x, "gradcam_pp", target=target, layer="act", relu=False, upsample=False, eps=eps)
    torch.testing.assert_close(got.attributions[:, 0], torch.einsum("nk,nkhw->nhw", w_eps, a), rtol=1e-10, atol=1e-14)


def test_gradcam_on_a_spatial_head_differs_from_hirescam():
    """A head that weighs positions differently: GradCAM averages the gradient, HiResCAM keeps it."""
    torch.manual_seed(2)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    head = nn.Linear(3 * 4 * 4, 2)
    model = nn.Sequential(conv, nn.Flatten(), head).double().eval()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        a = conv(x)
    weights = head.weight.detach().reshape(2, 3, 4, 4)[1]              # dF_1 / dA, [C, h, w]
    hires = propex.explain(model, x, "hirescam", target=1, layer="0", relu=False, upsample=False).attributions
    torch.testing.assert_close(hires[:, 0], (weights * a).sum(dim=1), rtol=1e-12, atol=1e-12)
    grad = propex.explain(model, x, "gradcam", target=1, layer="0", relu=False, upsample=False).attributions
    torch.testing.assert_close(grad[:, 0], torch.einsum("k,nkhw->nhw", weights.mean(dim=(1, 2)), a),
                               rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def resnet():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    return model, x


@pytest.mark.parametrize("method", GRADIENT_CAMS)
def test_options_shapes_batching_and_targets(resnet, method, model_snapshot):
    model, x = resnet
    snap = model_snapshot(model)
    base = propex.explain(model, x, method, target=[1, 5, 9], upsample=False, relu=False)
    raw = base.attributions
    assert raw.shape == (3, 1, 2, 2) and base.options["layer"] == "layer4.1"
    assert base.target.tolist() == [1, 5, 9] and base.delta is None and base.method == method
    # relu, upsampling and normalisation are the finishing steps, in that order
    relu = propex.explain(model, x, method, target=[1, 5, 9], upsample=False).attributions
    torch.testing.assert_close(relu, raw.clamp(min=0))
    up = propex.explain(model, x, method, target=[1, 5, 9]).attributions
    assert up.shape == (3, 1, 64, 64)
    torch.testing.assert_close(up, F.interpolate(raw.clamp(min=0), size=(64, 64), mode="bilinear"))
    sized = propex.explain(model, x, method, target=[1, 5, 9], upsample=(5, 7), interpolation="nearest").attributions
    torch.testing.assert_close(sized, F.interpolate(raw.clamp(min=0), size=(5, 7), mode="nearest"))
    norm = propex.explain(model, x, method, target=[1, 5, 9], normalize=True, relu=False).attributions
    assert norm.shape == (3, 1, 64, 64)
    torch.testing.assert_close(norm.amin(dim=(1, 2, 3)), torch.zeros(3))
    torch.testing.assert_close(norm.amax(dim=(1, 2, 3)), torch.ones(3))
    # each sample's map depends on that sample only, and chunking (batch_size=1: the reduce path) changes nothing
    for i, t in enumerate([1, 5, 9]):
        one = propex.explain(model, x[i:i + 1], method, target=t, upsample=False, relu=False).attributions
        torch.testing.assert_close(one[0], raw[i], rtol=1e-5, atol=1e-7)
    chunked = propex.explain(model, x, method, target=[1, 5, 9], upsample=False, relu=False, batch_size=1)
    torch.testing.assert_close(chunked.attributions, raw, rtol=1e-5, atol=1e-7)
    # T targets per sample in one backward: [N, T, 1, h, w], each column as its own call
    multi = propex.explain(model, x, method, target=torch.tensor([[1, 2], [5, 6], [9, 0]]), upsample=False,
                           relu=False)
    assert multi.attributions.shape == (3, 2, 1, 2, 2) and multi.target.shape == (3, 2)
    torch.testing.assert_close(multi.attributions[:, 0], raw, rtol=1e-5, atol=1e-7)
    second = propex.explain(model, x, method, target=[2, 6, 0], upsample=False, relu=False).attributions
    torch.testing.assert_close(multi.attributions[:, 1], second, rtol=1e-5, atol=1e-7)
    # a callable target is the same scalar
    fn = propex.explain(model, x, method, target=lambda out: out[:, 5], upsample=False, relu=False).attributions
    ref = propex.explain(model, x, method, target=5, upsample=False, relu=False).attributions
    torch.testing.assert_close(fn, ref)
    snap.assert_unchanged()


def test_default_target_and_class_api(resnet):
    model, x = resnet
    with torch.no_grad():
        top = model(x).argmax(dim=1)
    exp = propex.cam.GradCAM(model).explain(x)
    assert exp.target.tolist() == top.tolist()
    explicit = propex.cam.GradCAM(model, layer=model.layer4[-1]).attribute(x, target=top)
    torch.testing.assert_close(exp.attributions, explicit)
    same_tensor = propex.cam.GradCAM(model, layer="layer4").attribute(x, target=top)   # layer4 returns layer4[-1]'s output
    torch.testing.assert_close(same_tensor, explicit)
    assert propex.get_method("grad-cam") is propex.cam.GradCAM


def test_default_layer_rule_on_torchvision_architectures():
    """The layers pytorch-grad-cam's README recommends (model.layer4[-1], model.features[-1], ...)."""
    torchvision = pytest.importorskip("torchvision")
    expected = {"resnet18": "layer4.1", "mobilenet_v2": "features.18", "densenet121": "features.norm5",
                "efficientnet_b0": "features.8", "convnext_tiny": "features.7", "squeezenet1_1": "classifier.2",
                "mobilenet_v3_small": "features.12"}
    x = torch.randn(1, 3, 64, 64)
    for arch, name in expected.items():
        model = getattr(torchvision.models, arch)(weights=None).eval()
        found, module = default_layer(model, (x,), {})
        assert found == name, arch
        assert dict(model.named_modules())[name] is module


def test_default_layer_skips_one_by_one_maps_and_is_cached():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None).eval()
    # at 32x32 layer4's map is 1x1: the last map with positions to show is layer3's
    assert default_layer(model, (torch.randn(1, 3, 32, 32),), {})[0] == "layer3.1"
    calls = []
    handle = model.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        x = torch.randn(2, 3, 64, 64)
        propex.explain(model, x, "gradcam", target=0)
        propex.explain(model, x, "gradcam", target=0)
    finally:
        handle.remove()
    assert calls in ([1, 2, 2], [2, 2])        # a one-sample probe pass at most once, then one pass per call


class TinyViT(nn.Module):
    """Patch embedding (a conv) followed by token computations, as in a vision transformer."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.norm = nn.LayerNorm(8)
        self.mix = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)             # [N, 4, 8]
        cls = tokens.mean(dim=1, keepdim=True)
        tokens = torch.cat([cls, tokens], dim=1)                       # [N, 5, 8]: a class token first
        tokens = torch.relu(self.mix(self.norm(tokens)))
        return self.head(tokens.mean(dim=1))


def test_reshape_options_on_token_layers(model_snapshot):
    torch.manual_seed(4)
    model = TinyViT().double().eval()
    snap = model_snapshot(model)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    grid = propex.explain(model, x, "hirescam", target=1, layer="norm", reshape=(2, 2), relu=False, upsample=False)
    assert grid.attributions.shape == (2, 1, 2, 2)
    # the same with an explicit callable, and by hand: tokens 1..4 are the 2x2 grid, channels last

    def to_grid(t: torch.Tensor) -> torch.Tensor:
        return t[:, 1:, :].reshape(t.shape[0], 2, 2, t.shape[2]).permute(0, 3, 1, 2)

    fn = propex.explain(model, x, "hirescam", target=1, layer="norm", reshape=to_grid, relu=False, upsample=False)
    torch.testing.assert_close(fn.attributions, grid.attributions)
    tokens = propex.explain(model, x, "saliency", target=1, layer="norm").attributions     # dF/dA [N, 5, 8]
    with torch.no_grad():
        a = model.norm(model.patch(x).flatten(2).transpose(1, 2))
    a_full = None
    with torch.no_grad():
        t = model.patch(x).flatten(2).transpose(1, 2)
        a_full = model.norm(torch.cat([t.mean(dim=1, keepdim=True), t], dim=1))
    by_hand = (tokens * a_full)[:, 1:].sum(dim=2).reshape(2, 2, 2)
    torch.testing.assert_close(grid.attributions[:, 0], by_hand)
    assert a.shape == (2, 4, 8)
    up = propex.explain(model, x, "gradcam", target=1, layer="norm", reshape=(2, 2))
    assert up.attributions.shape == (2, 1, 8, 8)
    snap.assert_unchanged()
    # no default layer: the only 4-D output (the patch embedding) is followed by token computations
    with pytest.raises(ValueError, match="token-shaped.*reshape"):
        propex.explain(model, x, "gradcam")
    snap.assert_unchanged()


def test_vit_from_torchvision_with_reshape():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(5)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                               hidden_dim=32, mlp_dim=64, num_classes=10).eval()
    nn.init.normal_(vit.heads.head.weight, std=0.2)      # torchvision zero-initialises the head
    x = torch.randn(2, 3, 32, 32)
    layer = vit.encoder.layers[-1].ln_1
    exp = propex.explain(vit, x, "layercam", target=[3, 4], layer=layer, reshape=(4, 4))
    assert exp.attributions.shape == (2, 1, 32, 32) and exp.attributions.amax() > 0
    assert exp.options["layer"] == "encoder.layers.encoder_layer_1.ln_1" and exp.options["reshape"] == (4, 4)
    with pytest.raises(ValueError, match="not a spatial.*reshape=\\(h, w\\)"):
        propex.explain(vit, x, "gradcam", layer=layer)
    with pytest.raises(ValueError, match="17 tokens, fewer than h\\*w = 25"):
        propex.explain(vit, x, "gradcam", layer=layer, reshape=(5, 5))
    with pytest.raises(ValueError, match="layer=None.*conv_proj.*token-shaped"):
        propex.explain(vit, x, "gradcam")


def test_bad_input(resnet, model_snapshot):
    model, x = resnet
    snap = model_snapshot(model)
    with pytest.raises(ValueError, match="'layer9' is not a module name of the model"):
        propex.explain(model, x, "gradcam", layer="layer9")
    with pytest.raises(ValueError, match="not part of the model"):
        propex.explain(model, x, "gradcam", layer=nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="'fc' has output shape \\[3, 1000\\], not a spatial.*reshape"):
        propex.explain(model, x, "gradcam", layer="fc")
    with pytest.raises(ValueError, match="reshape=\\(h, w\\) lays token outputs"):
        propex.explain(model, x, "gradcam", reshape=(2, 2))
    with pytest.raises(ValueError, match="reshape: the callable must turn"):
        propex.explain(model, x, "gradcam", reshape=lambda t: t.flatten(1))
    with pytest.raises(ValueError, match="reshape must be a pair \\(h, w\\) of positive ints, got \\(2, 0\\)"):
        propex.explain(model, x, "gradcam", reshape=(2, 0))
    with pytest.raises(ValueError, match="reshape must be a pair"):
        propex.explain(model, x, "gradcam", reshape="vit")
    with pytest.raises(TypeError, match="relu must be True or False, got 'yes'"):
        propex.explain(model, x, "gradcam", relu="yes")
    with pytest.raises(ValueError, match="upsample must be a pair"):
        propex.explain(model, x, "gradcam", upsample=(64,))
    with pytest.raises(ValueError, match="interpolation must be one of"):
        propex.explain(model, x, "gradcam", interpolation="cubic")
    with pytest.raises(ValueError, match="eps must be a finite number >= 0, got -1"):
        propex.explain(model, x, "gradcam_pp", eps=-1)
    with pytest.raises(TypeError, match="unknown option.*'nomalize' \\(did you mean 'normalize'"):
        propex.explain(model, x, "gradcam", nomalize=True)
    with pytest.raises(ValueError, match="target 1000 is outside"):
        propex.explain(model, x, "gradcam", target=1000)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        propex.explain(model, x, "gradcam", batch_size=0)
    snap.assert_unchanged()


def test_bad_input_without_images():
    mlp = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(2, 16)
    with pytest.raises(ValueError, match="no submodule with a spatial \\[N, C, H, W\\] output"):
        propex.explain(mlp, x, "gradcam")

    class Grid(nn.Module):          # vectors laid out as 4x4 images inside the model
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.fc = nn.Linear(32, 2)

        def forward(self, v):
            return self.fc(self.conv(v.reshape(-1, 1, 4, 4)).flatten(1))

    grid = Grid().eval()
    with pytest.raises(ValueError, match="upsample=True resizes the map to x's spatial size.*upsample=False"):
        propex.explain(grid, x, "gradcam")
    assert propex.explain(grid, x, "gradcam", upsample=False).attributions.shape == (2, 1, 4, 4)
    assert propex.explain(grid, x, "gradcam", upsample=(8, 8)).attributions.shape == (2, 1, 8, 8)


def test_guided_gradcam_targets_options_and_bad_input(resnet, model_snapshot):
    model, x = resnet
    snap = model_snapshot(model)
    multi = propex.explain(model, x, "guided_gradcam", target=torch.tensor([[1, 2], [5, 6], [9, 0]]))
    assert multi.attributions.shape == (3, 2, 3, 64, 64) and multi.method == "guided_gradcam"
    single = propex.explain(model, x, "guided_gradcam", target=[2, 6, 0]).attributions
    torch.testing.assert_close(multi.attributions[:, 1], single, rtol=1e-5, atol=1e-9)
    # target=None explains the top class in both passes; normalize=True gates with the [0, 1] map
    with torch.no_grad():
        top = model(x).argmax(dim=1)
    auto = propex.explain(model, x, "guided_gradcam", normalize=True)
    assert auto.target.tolist() == top.tolist()
    gb = propex.explain(model, x, "guided_backprop", target=top).attributions
    cam = propex.explain(model, x, "gradcam", target=top, normalize=True).attributions
    torch.testing.assert_close(auto.attributions, gb * cam, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="upsample must be True, got False"):
        propex.explain(model, x, "guided_gradcam", upsample=False)
    with pytest.raises(ValueError, match="unknown_ops must be one of raise, warn"):
        propex.explain(model, x, "guided_gradcam", unknown_ops="ignore")
    snap.assert_unchanged()


def test_gradient_engine_keeps_the_graph_from_the_layer_on(resnet):
    """The engine feature the CAMs use: with layer= and keep_graph=True the layer's output is the leaf of the
    first pass, so d target / d layer comes from that pass; same values as the reduce path (second forward)."""
    from propex.gradient.base import rows
    from propex.gradient.engine import GradientEngine
    model, x = resnet
    flags = [p.requires_grad for p in model.parameters()]
    engine = GradientEngine(model, layer="layer3")
    prep = engine.prepare(x, [1, 2, 3], None, keep_graph=True)
    assert [p.requires_grad for p in model.parameters()] == flags          # frozen only during the pass
    kept = engine.gradients_at_inputs(prep)
    assert kept is not None and kept[0].shape == (3, 1, 256, 4, 4)
    again = GradientEngine(model, layer="layer3")
    prep2 = again.prepare(x, [1, 2, 3], None)
    (reduced,) = again.reduce(prep2, 1, lambda k, s: rows(prep2.space, s), lambda g, k, s: [g[0]])
    torch.testing.assert_close(kept[0], reduced, rtol=1e-5, atol=1e-8)
    # only the layers after layer3 recorded a graph: far fewer saved bytes than a pass from the input
    assert 0 < prep.bytes_per_point < prep2.bytes_per_point / 3

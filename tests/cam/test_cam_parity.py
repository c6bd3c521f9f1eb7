"""Parity of the CAM family with pytorch-grad-cam and Captum on torchvision resnet18, vgg16 and a small ViT.

How the pipelines line up. pytorch-grad-cam computes the map at the layer's resolution, applies
ReLU, min-max normalises it (``img - min``, ``/ (max + 1e-7)``), resizes it with
``cv2.resize`` (bilinear, half-pixel centres: the same as ``F.interpolate(mode="bilinear",
align_corners=False)`` for upsampling) and, in ``aggregate_multi_layers``, min-max normalises
the resized map again. Normalising is affine, so the result is ReLU -> resize -> min-max:
propex's ``relu=True, upsample=True, normalize=True``. The tests compare that directly, and
also propex's map at the layer's resolution (``upsample=False``) pushed through
pytorch-grad-cam's own ``scale_cam_image`` (so cv2 does the resizing on both sides). Measured
differences: at most 2.1e-6 (float32 round-off of maps in [0, 1]).
GradCAM++ is compared with ``eps=1e-6``, the constant pytorch-grad-cam adds to its denominator
(propex's default is the paper's formula, eps=0). Captum's ``LayerGradCam`` is compared after
``LayerAttribution.interpolate`` (bilinear) with ``relu_attributions=True``; Captum's
``GuidedGradCam`` resizes with ``"nearest"``, so propex gets ``interpolation="nearest"`` there.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import propex

torchvision = pytest.importorskip("torchvision")
pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.image import scale_cam_image  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

REFERENCES = {"gradcam": ("GradCAM", {}), "gradcam_pp": ("GradCAMPlusPlus", {"eps": 1e-6}),
              "hirescam": ("HiResCAM", {}), "layercam": ("LayerCAM", {})}




def reference(cls_name: str, model: nn.Module, layer: nn.Module, x: torch.Tensor, targets: list[int],
              **kwargs) -> np.ndarray:
    cls = getattr(pgc, cls_name)
    with cls(model=model, target_layers=[layer], **kwargs) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])


def through_reference_scaling(maps: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """pytorch-grad-cam's own finishing (normalise, cv2 resize, normalise) applied to propex's layer map."""
    return scale_cam_image(scale_cam_image(maps[:, 0].numpy(), size[::-1]))


def _model(arch: str) -> nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, arch)(weights=None).eval()


@pytest.fixture(scope="module")
def resnet18():
    return _model("resnet18")


@pytest.fixture(scope="module")
def vgg16():
    return _model("vgg16")


CASES = [("resnet18", lambda m: m.layer4[-1], 3), ("vgg16", lambda m: m.features[-1], 1)]


@pytest.mark.parametrize("arch,layer_of,n", CASES, ids=[c[0] for c in CASES])
def test_gradient_cams_match_pytorch_grad_cam(arch, layer_of, n, request, model_snapshot):
    model = request.getfixturevalue(arch)
    x = torch.randn(n, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    targets = [3, 100, 999][:n]
    layer = layer_of(model)
    refs = {m: reference(cls, model, layer, x, targets) for m, (cls, _) in REFERENCES.items()}
    # after the references, which leave .grad on the parameters (vgg16's 138M parameters take 2 s to snapshot)
    snap = model_snapshot(model) if arch == "resnet18" else None
    for method, (_, extra) in REFERENCES.items():
        ref = refs[method]
        assert ref.shape == (n, 96, 96) and (ref.reshape(n, -1).max(axis=1) > 0.99).all()
        exp = propex.explain(model, x, method, target=targets, normalize=True, **extra)   # the default layer
        assert exp.options["layer"] == {"resnet18": "layer4.1", "vgg16": "features.30"}[arch]
        np.testing.assert_allclose(exp.attributions[:, 0].numpy(), ref, atol=1e-5, err_msg=method)
        raw = propex.explain(model, x, method, target=targets, upsample=False, layer=layer, **extra).attributions
        assert raw.shape == (n, 1, 3, 3)
        np.testing.assert_allclose(through_reference_scaling(raw, (96, 96)), ref, atol=1e-5, err_msg=method)
    # GradCAM++ without pytorch-grad-cam's eps is the paper's formula: close, not equal
    paper = propex.explain(model, x, "gradcam_pp", target=targets, normalize=True).attributions[:, 0].numpy()
    assert 1e-4 < np.abs(paper - refs["gradcam_pp"]).max() < 0.2
    if snap is not None:
        snap.assert_unchanged()


@pytest.mark.parametrize("arch,layer_name", [("resnet18", "layer4"), ("vgg16", "features.30")])
def test_gradcam_matches_captum_layergradcam(arch, layer_name, request):
    captum_attr = pytest.importorskip("captum.attr")
    model = request.getfixturevalue(arch)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([5, 17])
    layer = dict(model.named_modules())[layer_name]
    for relu in (True, False):
        raw = captum_attr.LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=relu)
        ref = captum_attr.LayerAttribution.interpolate(raw, (64, 64), "bilinear").detach()
        ours = propex.explain(model, x, "gradcam", target=target, layer=layer_name, relu=relu).attributions
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))


@pytest.mark.parametrize("arch,layer_name,size", [("resnet18", "layer4", 64), ("vgg16", "features.28", 48)])
def test_guided_gradcam_matches_captum(arch, layer_name, size, request, model_snapshot):
    captum_attr = pytest.importorskip("captum.attr")
    model = request.getfixturevalue(arch)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([1, 2])
    layer = dict(model.named_modules())[layer_name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")             # Captum's notes about hooks and requires_grad
        ref = captum_attr.GuidedGradCam(model, layer).attribute(x, target=target).detach()
    snap = model_snapshot(model) if arch == "resnet18" else None
    ours = propex.explain(model, x, "guided_gradcam", target=target, layer=layer_name, interpolation="nearest")
    assert ours.attributions.shape == x.shape and ours.options["layer"] == layer_name
    assert float(ref.abs().max()) > 0
    torch.testing.assert_close(ours.attributions, ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))
    # by definition: guided backprop times the upsampled (bilinear by default) GradCAM map
    gb = propex.explain(model, x, "guided_backprop", target=target).attributions
    cam = propex.explain(model, x, "gradcam", target=target, layer=layer_name).attributions
    bilinear = propex.explain(model, x, "guided_gradcam", target=target, layer=layer_name).attributions
    torch.testing.assert_close(bilinear, gb * cam, rtol=1e-6, atol=1e-9)
    if snap is not None:
        snap.assert_unchanged()


def test_vit_with_reshape_matches_pytorch_grad_cam():
    torch.manual_seed(5)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                               hidden_dim=32, mlp_dim=64, num_classes=10).eval()
    nn.init.normal_(vit.heads.head.weight, std=0.2)      # torchvision zero-initialises the head
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    layer = vit.encoder.layers[-1].ln_1

    def vit_reshape(t: torch.Tensor) -> torch.Tensor:     # pytorch-grad-cam's vit_reshape_transform on a 4x4 grid
        return t[:, 1:, :].reshape(t.size(0), 4, 4, t.size(2)).transpose(2, 3).transpose(1, 2)

    targets = [0, 4, 9]
    for method in ("gradcam", "layercam", "hirescam"):
        ref = reference(REFERENCES[method][0], vit, layer, x, targets, reshape_transform=vit_reshape)
        ours = propex.explain(vit, x, method, target=targets, layer=layer, reshape=(4, 4), normalize=True)
        assert (ref.reshape(3, -1).max(axis=1) > 0.99).all()
        np.testing.assert_allclose(ours.attributions[:, 0].numpy(), ref, atol=1e-5, err_msg=method)


SCORECAM_CASES = [
    pytest.param("resnet18", "layer3", 2, 48, id="resnet18-layer3"),
    pytest.param("vgg16", "features.9", 1, 32, id="vgg16-features.9"),
    pytest.param("resnet18", "layer4.1", 1, 64, id="resnet18-layer4", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("arch,layer_name,n,size", SCORECAM_CASES)
def test_scorecam_matches_pytorch_grad_cam(arch, layer_name, n, size, request):
    """Score-CAM runs one forward pass per channel and sample, so the layers are chosen for their channel
    count (128 to 512) and the inputs are small. pytorch-grad-cam upsamples its masks with
    align_corners=True (nn.UpsamplingBilinear2d): propex gets align_corners=True and upsample=False, and
    the layer-resolution map goes through pytorch-grad-cam's own resizing and normalisation."""
    model = request.getfixturevalue(arch)
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(4))
    targets = [7, 300][:n]
    layer = dict(model.named_modules())[layer_name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = reference("ScoreCAM", model, layer, x, targets)
    ours = propex.explain(model, x, "scorecam", target=targets, layer=layer, upsample=False, align_corners=True)
    assert (ref.reshape(n, -1).max(axis=1) > 0.99).all()
    np.testing.assert_allclose(through_reference_scaling(ours.attributions, (size, size)), ref, atol=1e-5)

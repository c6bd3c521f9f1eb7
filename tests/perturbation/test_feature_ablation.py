"""Feature ablation: parity with Captum's FeatureAblation (shared, per-sample, default and
cross-tensor masks), the analytic linear case, targets, chunking, model left as found, bad masks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import propex
from propex.baselines import channel_mean
from propex.perturbation import FeatureAblation
from propex.perturbation.superpixels import grid_superpixels, slic_superpixels

captum_attr = pytest.importorskip("captum.attr")
torchvision = pytest.importorskip("torchvision")




def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


class Linear(nn.Module):
    def __init__(self, shape: tuple[int, ...], n_out: int = 3):
        super().__init__()
        self.w = nn.Parameter(torch.randn(n_out, *shape, generator=torch.Generator().manual_seed(5)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("n...,c...->nc", x, self.w)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8 + 5, 6)

    def forward(self, img: torch.Tensor, tab: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([torch.relu(self.conv(img)).flatten(1), tab], dim=1))


def test_parity_with_captum_on_resnet18_with_grid_and_slic_masks(model_snapshot):
    torch.manual_seed(0)
    from propex.models.random_init import randomize_batch_norm
    model = randomize_batch_norm(torchvision.models.resnet18(weights=None, num_classes=10), seed=0).eval().double()
    snap = model_snapshot(model)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = grid_superpixels(x, 8)                                            # [1, 1, 32, 32], 16 cells
    ours = FeatureAblation(model, feature_mask=grid, baseline="mean").attribute(x, target=[1, 4])
    ref = captum_attr.FeatureAblation(model).attribute(x, feature_mask=grid, baselines=channel_mean(x),
                                                       target=[1, 4], perturbations_per_eval=8)
    assert ours.shape == x.shape and rel_err(ours, ref) < 1e-5
    slic = slic_superpixels(x, n_segments=12)                                # per sample [2, 1, 32, 32]
    ours = FeatureAblation(model, feature_mask=slic, baseline=0.5).attribute(x, target=[1, 4])
    ref = captum_attr.FeatureAblation(model).attribute(x, feature_mask=slic, baselines=0.5, target=[1, 4],
                                                       perturbations_per_eval=8)
    assert rel_err(ours, ref) < 1e-5
    snap.assert_unchanged()


def test_parity_with_captum_on_digits(digits_model, digits_x, model_snapshot):
    snap = model_snapshot(digits_model)
    x = digits_x
    mask = grid_superpixels(x, (4, 2))
    exp = propex.explain(digits_model, x, "feature_ablation", feature_mask=mask)
    ref = captum_attr.FeatureAblation(digits_model).attribute(x, feature_mask=mask, target=exp.target,
                                                              perturbations_per_eval=16)
    assert rel_err(exp.attributions, ref) < 1e-5
    assert exp.method == "feature_ablation" and exp.delta is None
    snap.assert_unchanged()


def test_default_mask_ablates_every_scalar_like_captum(digits_model, digits_x):
    x = digits_x[:2, :, 4:12, 4:12].contiguous()

    def model(t):   # the digits CNN needs 16x16: pad the 8x8 crop back
        return digits_model(torch.nn.functional.pad(t, (4, 4, 4, 4)))
    ours = FeatureAblation(model, baseline=0.1).attribute(x, 3)
    ref = captum_attr.FeatureAblation(model).attribute(x, baselines=0.1, target=3, perturbations_per_eval=64)
    assert rel_err(ours, ref) < 1e-5


def test_tuple_inputs_with_an_id_shared_across_tensors():
    torch.manual_seed(0)
    model = TwoInputs().eval()
    img, tab = torch.randn(3, 3, 8, 8), torch.randn(3, 5)
    img_mask = grid_superpixels(img, 4)                                       # ids 0..3
    tab_mask = torch.tensor([[0, 4, 4, 5, 6]])                                # id 0 also in the image
    ours = FeatureAblation(model, feature_mask=(img_mask, tab_mask), baseline=(0.0, 1.0), batch_size=5
                           ).attribute((img, tab), target=[0, 1, 2])
    ref = captum_attr.FeatureAblation(model).attribute((img, tab), feature_mask=(img_mask, tab_mask),
                                                       baselines=(0.0, 1.0), target=[0, 1, 2])
    assert isinstance(ours, tuple)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape and rel_err(a, b) < 1e-5


def test_linear_model_gets_the_group_sums():
    model = Linear((2, 4, 4)).eval()
    x = torch.randn(3, 2, 4, 4)
    mask = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 3], [2, 2, 2, 3]]).reshape(1, 1, 4, 4)
    attr = FeatureAblation(model, feature_mask=mask).attribute(x, 2)
    contrib = (model.w[2] * x).detach()
    for g in range(4):
        inside = (mask == g).expand(3, 2, 4, 4)
        group_sum = (contrib * inside).sum(dim=(1, 2, 3))                     # f(x) - f(x without group g)
        torch.testing.assert_close(attr[inside].reshape(3, -1), group_sum.reshape(3, 1).expand(3, int(inside[0].sum())))


def test_multi_target_chunking_and_callable_mask(digits_model, digits_x):
    x = digits_x[:3]
    targets = torch.tensor([[0, 5], [1, 2], [9, 9]])
    mask_fn = lambda t: grid_superpixels(t, 4)                                # noqa: E731
    multi = FeatureAblation(digits_model, feature_mask=mask_fn, batch_size=5).explain(x, targets)
    assert multi.attributions.shape == (3, 2, 1, 16, 16) and torch.equal(multi.target, targets)
    for t in range(2):
        single = FeatureAblation(digits_model, feature_mask=grid_superpixels(x, 4)).attribute(x, targets[:, t])
        torch.testing.assert_close(multi.attributions[:, t], single, rtol=1e-5, atol=2e-5)


def test_per_sample_mask_with_different_groups_per_sample():
    model = Linear((1, 2, 3), n_out=1).eval()
    x = torch.randn(2, 1, 2, 3)
    mask = torch.tensor([[[[0, 0, 0], [1, 1, 1]]], [[[5, 1, 1], [1, 1, 1]]]])   # ids 0, 1, 5; 0 only in sample 0
    attr = FeatureAblation(model, feature_mask=mask).attribute(x, 0)
    c = (model.w[0] * x).detach()
    torch.testing.assert_close(attr[0, 0, 0], c[0, 0, 0].sum().expand(3))
    torch.testing.assert_close(attr[1, 0, 0, 1:], (c[1].sum() - c[1, 0, 0, 0]).expand(2))
    torch.testing.assert_close(attr[1, 0, 0, 0], c[1, 0, 0, 0])


@pytest.mark.parametrize("mask, error, match", [
    (torch.zeros(1, 1, 8, 8, dtype=torch.long), ValueError, r"feature_mask of shape \(1, 1, 8, 8\) does not broadcast"),
    (torch.zeros(3, 1, 16, 16, dtype=torch.long), ValueError, "feature_mask of shape .* does not broadcast"),
    (torch.zeros(1, 2, 1, 16, 16, dtype=torch.long), ValueError, "does not broadcast"),
    ((torch.zeros(1, 1, 16, 16, dtype=torch.long),) * 2, ValueError, "for tuple inputs"),
])
def test_bad_masks_at_attribute_time(digits_model, digits_x, mask, error, match, model_snapshot):
    snap = model_snapshot(digits_model)
    with pytest.raises(error, match=match):
        FeatureAblation(digits_model, feature_mask=mask).attribute(digits_x[:2], 0)
    snap.assert_unchanged()


@pytest.mark.parametrize("options, error, match", [
    (dict(feature_mask=torch.zeros(1, 1, 16, 16)), TypeError, "feature_mask must hold integer group ids"),
    (dict(feature_mask=torch.zeros(1, 1, 16, 16, dtype=torch.bool)), TypeError, "integer group ids"),
    (dict(feature_mask="superpixels"), TypeError, "feature_mask must be an integer tensor"),
    (dict(baseline="average"), ValueError, "baseline='average' is not a known baseline"),
    (dict(seed=1.5), TypeError, "seed"),
])
def test_bad_options_at_construction(digits_model, options, error, match):
    with pytest.raises(error, match=match):
        FeatureAblation(digits_model, **options)


def test_mask_for_tuple_inputs_must_be_a_tuple():
    model = TwoInputs().eval()
    with pytest.raises(ValueError, match="one mask per tensor"):
        FeatureAblation(model, feature_mask=torch.zeros(1, 1, 8, 8, dtype=torch.long)).attribute(
            (torch.randn(1, 3, 8, 8), torch.randn(1, 5)), 0)

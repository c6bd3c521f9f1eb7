"""Occlusion: parity with Captum's Occlusion, the analytic linear case, chunking, targets,
tuple inputs, baselines, model left as found, bad options."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import propex
from propex.baselines import channel_mean
from propex.perturbation import Occlusion

captum_attr = pytest.importorskip("captum.attr")
torchvision = pytest.importorskip("torchvision")




def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    from propex.models.random_init import randomize_batch_norm
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    randomize_batch_norm(model, seed=0)
    return model.eval().double()


class Linear(nn.Module):
    """f(x)_c = sum_i w_ci x_i (+ b_c): occlusion of disjoint windows is analytic."""

    def __init__(self, shape: tuple[int, ...], n_out: int = 3):
        super().__init__()
        self.w = nn.Parameter(torch.randn(n_out, *shape, generator=torch.Generator().manual_seed(5)))
        self.b = nn.Parameter(torch.randn(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("n...,c...->nc", x, self.w) + self.b


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8 + 5, 6)

    def forward(self, img: torch.Tensor, tab: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([torch.relu(self.conv(img)).flatten(1), tab], dim=1))


# --------------------------------------------------------------------------- parity with Captum
@pytest.mark.parametrize("window, stride, captum_window, captum_stride", [
    ((8, 8), (8, 8), (3, 8, 8), (3, 8, 8)),                 # disjoint tiles, all channels together
    ((12, 12), 5, (3, 12, 12), 5),                          # overlapping, int stride, cut-off last windows
    pytest.param((2, 10, 10), (1, 8, 8), (2, 10, 10), (1, 8, 8), marks=pytest.mark.slow),   # a full shape
])
def test_parity_with_captum_on_resnet18(resnet, window, stride, captum_window, captum_stride):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = Occlusion(resnet, window=window, stride=stride, baseline=0.25).attribute(x, target=[3, 7])
    ref = captum_attr.Occlusion(resnet).attribute(x, sliding_window_shapes=captum_window, strides=captum_stride,
                                                  baselines=0.25, target=[3, 7], perturbations_per_eval=16)
    assert ours.shape == x.shape
    assert rel_err(ours, ref.to(ours.dtype)) < 1e-5


def test_parity_with_captum_on_digits_with_mean_baseline(digits_model, digits_x, model_snapshot):
    snap = model_snapshot(digits_model)
    x = digits_x
    exp = propex.explain(digits_model, x, "occlusion", window=(4, 4), stride=(2, 2), baseline="mean")
    ref = captum_attr.Occlusion(digits_model).attribute(x, sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2),
                                                        baselines=channel_mean(x), target=exp.target,
                                                        perturbations_per_eval=50)
    assert rel_err(exp.attributions, ref) < 1e-5
    assert exp.method == "occlusion" and exp.delta is None and exp.target.shape == (8,)
    snap.assert_unchanged()


def test_parity_with_captum_on_tuple_inputs():
    torch.manual_seed(0)
    model = TwoInputs().eval()
    img = torch.randn(3, 3, 8, 8)
    tab = torch.randn(3, 5)
    ours = Occlusion(model, window=[(3, 3), (2,)], stride=[(2, 2), (1,)], baseline=(0.5, 0.0), batch_size=7
                     ).attribute((img, tab), target=2)
    ref = captum_attr.Occlusion(model).attribute((img, tab), sliding_window_shapes=((3, 3, 3), (2,)),
                                                 strides=((3, 2, 2), (1,)), baselines=(0.5, 0.0), target=2)
    assert isinstance(ours, tuple) and len(ours) == 2
    for a, b in zip(ours, ref):
        assert a.shape == b.shape and rel_err(a, b) < 1e-5


# --------------------------------------------------------------------------- analytic
def test_disjoint_windows_on_a_linear_model_give_the_window_sums():
    torch.manual_seed(0)
    model = Linear((2, 8, 12)).eval()
    x = torch.randn(3, 2, 8, 12, dtype=torch.float32)
    attr = Occlusion(model, window=(4, 3)).attribute(x, target=1)            # stride = window: disjoint tiles
    contrib = (model.w[1] * x).detach()                                        # w·x per element
    tiles = contrib.reshape(3, 2, 2, 4, 4, 3).sum(dim=(1, 3, 5))              # [N, 2, 4] window sums
    expected = tiles.repeat_interleave(4, 1).repeat_interleave(3, 2).unsqueeze(1).expand(3, 2, 8, 12)
    torch.testing.assert_close(attr, expected, rtol=1e-5, atol=1e-5)


def test_overlapping_windows_average_over_the_covering_windows():
    """1-D input of length 5, window 3, stride 1: element i is covered by windows starting at
    max(0, i-2)..min(i, 2); its attribution is the mean of those windows' sums."""
    model = Linear((5,), n_out=1).eval()
    x = torch.randn(1, 5)
    attr = Occlusion(model, window=3, stride=1).attribute(x, target=0)[0]
    c = (model.w[0] * x[0]).detach()
    sums = [c[s:s + 3].sum() for s in range(3)]
    expected = torch.stack([torch.stack([sums[s] for s in range(3) if s <= i < s + 3]).mean() for i in range(5)])
    torch.testing.assert_close(attr, expected)


# --------------------------------------------------------------------------- engine behaviour
def test_result_does_not_depend_on_the_chunk_size(digits_model, digits_x):
    x = digits_x[:3]
    runs = [Occlusion(digits_model, window=(3, 3), stride=(2, 2), batch_size=b).attribute(x, target=4)
            for b in (1, 7, None)]
    for other in runs[1:]:
        torch.testing.assert_close(other, runs[0], rtol=1e-5, atol=2e-5)   # float32 rounding differs between batch shapes


def test_multi_target_equals_single_targets(digits_model, digits_x):
    x = digits_x[:3]
    targets = torch.tensor([[0, 5], [1, 2], [9, 9]])
    occ = Occlusion(digits_model, window=(4, 4))
    multi = occ.explain(x, targets)
    assert multi.attributions.shape == (3, 2, 1, 16, 16)
    assert torch.equal(multi.target, targets)
    for t in range(2):
        torch.testing.assert_close(multi.attributions[:, t], occ.attribute(x, targets[:, t]), rtol=1e-5, atol=1e-6)


def test_callable_targets_and_output_transform(digits_model, digits_x):
    x = digits_x[:2]
    plain = Occlusion(digits_model, window=(4, 4))
    by_fn = plain.attribute(x, lambda out: out[:, 3] - out[:, 1])
    torch.testing.assert_close(by_fn, plain.attribute(x, 3) - plain.attribute(x, 1), rtol=1e-4, atol=1e-5)
    per_sample = plain.attribute(x, [lambda row: row[2], lambda row: row[6]])
    torch.testing.assert_close(per_sample, plain.attribute(x, [2, 6]))
    soft = Occlusion(digits_model, window=(4, 4), output_transform="softmax").attribute(x, [2, 6])
    ref = captum_attr.Occlusion(lambda t: digits_model(t).softmax(1)).attribute(
        x, sliding_window_shapes=(1, 4, 4), strides=(1, 4, 4), target=[2, 6])
    assert rel_err(soft, ref) < 1e-5


def test_baselines_blur_noise_and_tensor(digits_model, digits_x):
    x = digits_x[:2]
    blur = Occlusion(digits_model, window=(4, 4), baseline="blur").attribute(x, 1)
    from propex.baselines import blurred
    ref = captum_attr.Occlusion(digits_model).attribute(x, sliding_window_shapes=(1, 4, 4), strides=(1, 4, 4),
                                                        baselines=blurred(x), target=1)
    assert rel_err(blur, ref) < 1e-5
    noisy = [Occlusion(digits_model, window=(4, 4), baseline="noise", seed=s).attribute(x, 1) for s in (0, 0, 1)]
    assert torch.equal(noisy[0], noisy[1]) and not torch.equal(noisy[0], noisy[2])
    tensor = Occlusion(digits_model, window=(4, 4), baseline=x.flip(-1)).attribute(x, 1)
    ref = captum_attr.Occlusion(digits_model).attribute(x, sliding_window_shapes=(1, 4, 4), strides=(1, 4, 4),
                                                        baselines=x.flip(-1), target=1)
    assert rel_err(tensor, ref) < 1e-5


def test_default_window_is_an_eighth_of_each_spatial_dim(digits_model, digits_x):
    calls = []

    def model(t):
        calls.append(t.shape[0])
        return digits_model(t)
    attr = propex.explain(model, digits_x[:1], "occlusion", target=0).attributions
    assert attr.shape == (1, 1, 16, 16)
    assert sum(calls) == 1 + 64              # the forward on x + 8 x 8 windows of 2 x 2 pixels


def test_forward_kwargs_and_model_left_as_found(model_snapshot):
    torch.manual_seed(0)

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 3)
            self.bn = nn.BatchNorm1d(3)

        def forward(self, x, scale):
            return self.bn(self.lin(x)) * scale.reshape(-1, 1)
    model = Scaled()
    model.bn.running_mean.fill_(0.3)
    model.eval()
    model.lin.weight.grad = torch.ones_like(model.lin.weight)
    snap = model_snapshot(model)
    x = torch.randn(4, 6)
    scale = torch.tensor([1.0, 2.0, -1.0, 0.5])
    a = Occlusion(model, window=2, batch_size=3).attribute(x, 1, forward_kwargs={"scale": scale})
    b = Occlusion(model, window=2).attribute(x, 1, forward_kwargs={"scale": torch.ones(4)})
    torch.testing.assert_close(a, b * scale.reshape(-1, 1))
    snap.assert_unchanged()


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("options, error, match", [
    (dict(window=(20, 4)), ValueError, r"window=\(20, 4\) is larger than the input"),
    (dict(window=(2, 17, 4)), ValueError, "window.*larger than the input"),
    (dict(window=(4, 4), stride=(5, 5)), ValueError, r"stride=\(5, 5\) is larger than the window"),
    (dict(window=(4, 4, 4, 4)), ValueError, "window=.*has 4 entries"),
    (dict(window=(4, 4), baseline=torch.zeros(3, 16, 16)), ValueError, "baseline"),
])
def test_bad_options_at_attribute_time(digits_model, digits_x, options, error, match, model_snapshot):
    snap = model_snapshot(digits_model)
    with pytest.raises(error, match=match):
        Occlusion(digits_model, **options).attribute(digits_x[:2], 0)
    snap.assert_unchanged()


@pytest.mark.parametrize("options, error, match", [
    (dict(window=0), ValueError, "window must hold ints >= 1"),
    (dict(window=(4, -1)), ValueError, "window must hold ints >= 1"),
    (dict(window=(4, 4), stride=0), ValueError, "stride must hold ints >= 1"),
    (dict(window=(4, 4), stride=1.5), TypeError, "stride must be an int"),
    (dict(window="big"), TypeError, "window must be an int"),
    (dict(baseline="grey"), ValueError, "baseline='grey' is not a known baseline"),
    (dict(baseline=[1, 2]), TypeError, "baseline must be"),
    (dict(output_transform="probabilities"), ValueError, "output_transform"),
    (dict(windows=(4, 4)), TypeError, "did you mean 'window'"),
])
def test_bad_options_at_construction(digits_model, options, error, match):
    with pytest.raises(error, match=match):
        Occlusion(digits_model, **options)


def test_per_input_specs_need_tuple_inputs(digits_model, digits_x):
    with pytest.raises(ValueError, match="tuple inputs"):
        Occlusion(digits_model, window=[(4, 4), (2, 2)]).attribute(digits_x[:1], 0)
    with pytest.raises(ValueError, match="one entry per input"):
        Occlusion(TwoInputs(), window=[(3, 3)] * 3).attribute((torch.randn(1, 3, 8, 8), torch.randn(1, 5)), 0)

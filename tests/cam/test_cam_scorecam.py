"""Score-CAM: the definition computed by hand, chunking, targets, token layers, bad input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import propex




class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 5, 3, stride=2, padding=1)       # the CAM layer: 5 channels, 4x4
        self.act = nn.ReLU()
        self.fc = nn.Linear(5 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv2(torch.relu(self.conv1(x)))).flatten(1))


@pytest.fixture
def small():
    torch.manual_seed(7)
    model = SmallCNN().double().eval()
    with torch.no_grad():
        model.conv2.weight[2].zero_()           # channel 2 is constant (its bias): its mask is all 0
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    return model, x


def by_hand(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, target: int, align_corners: bool = False
            ) -> torch.Tensor:
    """Score-CAM for one sample and class, literally: [C, h, w] maps -> [h, w] (before the ReLU)."""
    scores = []
    for k in range(maps.shape[0]):
        up = F.interpolate(maps[k][None, None], size=x.shape[-2:], mode="bilinear", align_corners=align_corners)[0, 0]
        span = up.max() - up.min()
        mask = (up - up.min()) / span if span > 0 else torch.zeros_like(up)
        with torch.no_grad():
            scores.append(model((x * mask)[None])[0, target])
    weights = torch.softmax(torch.stack(scores), dim=0)
    return (weights[:, None, None] * maps).sum(dim=0)


def test_scorecam_is_the_definition(small, model_snapshot):
    model, x = small
    snap = model_snapshot(model)
    with torch.no_grad():
        maps = model.act(model.conv2(torch.relu(model.conv1(x))))
    assert torch.equal(maps[:, 2], maps[:, 2, :1, :1].expand(-1, 4, 4))       # the constant channel
    target = [0, 2, 1]
    for align in (False, True):
        exp = propex.explain(model, x, "scorecam", target=target, layer="act", relu=False, upsample=False,
                             align_corners=align)
        assert exp.attributions.shape == (3, 1, 4, 4) and exp.options["layer"] == "act"
        for i, t in enumerate(target):
            torch.testing.assert_close(exp.attributions[i, 0], by_hand(model, x[i], maps[i], t, align),
                                       rtol=1e-12, atol=1e-12)
    # chunking over (channel, sample) pairs changes nothing
    ref = propex.explain(model, x, "scorecam", target=target, layer="act", relu=False, upsample=False).attributions
    for batch_size in (1, 4, 15, 1000):
        got = propex.explain(model, x, "scorecam", target=target, layer="act", relu=False, upsample=False,
                             batch_size=batch_size).attributions
        torch.testing.assert_close(got, ref, rtol=1e-13, atol=1e-14)
    # the finishing steps as for every CAM; the default layer is the last 4-D map (act)
    full = propex.explain(model, x, "scorecam", target=target, normalize=True)
    assert full.options["layer"] == "act" and full.attributions.shape == (3, 1, 8, 8)
    expected = F.interpolate(ref.clamp(min=0), size=(8, 8), mode="bilinear")
    lo = expected.amin(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(full.attributions, (expected - lo) / (expected.amax(dim=(2, 3), keepdim=True) - lo))
    snap.assert_unchanged()


def test_scorecam_several_targets_in_one_pass(small):
    model, x = small
    multi = propex.explain(model, x, "scorecam", target=torch.tensor([[0, 1], [2, 2], [1, 0]]), layer="act",
                           upsample=False, relu=False)
    assert multi.attributions.shape == (3, 2, 1, 4, 4)
    for col in range(2):
        one = propex.explain(model, x, "scorecam", target=multi.target[:, col], layer="act", upsample=False,
                             relu=False).attributions
        torch.testing.assert_close(multi.attributions[:, col], one, rtol=1e-12, atol=1e-12)
    calls = []
    handle = model.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        propex.explain(model, x, "scorecam", target=torch.tensor([[0, 1], [2, 2], [1, 0]]), layer="act",
                       batch_size=5)
    finally:
        handle.remove()
    assert calls == [3, 5, 5, 5]       # one pass on x, then 5 channels x 3 samples in chunks of 5, for both targets


def test_scorecam_on_token_layers_with_reshape():
    torch.manual_seed(8)

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(3, 6, 2, stride=2)
            self.norm = nn.LayerNorm(6)
            self.head = nn.Linear(6, 2)

        def forward(self, x):
            t = self.patch(x).flatten(2).transpose(1, 2)                        # [N, 9, 6]
            t = self.norm(torch.cat([t.mean(dim=1, keepdim=True), t], dim=1))   # class token first
            return self.head(t.mean(dim=1))

    model = Tokens().double().eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    exp = propex.explain(model, x, "scorecam", target=1, layer="norm", reshape=(3, 3), relu=False, upsample=False)
    with torch.no_grad():
        t = model.patch(x).flatten(2).transpose(1, 2)
        tokens = model.norm(torch.cat([t.mean(dim=1, keepdim=True), t], dim=1))
    maps = tokens[:, 1:].reshape(2, 3, 3, 6).permute(0, 3, 1, 2)
    for i in range(2):
        torch.testing.assert_close(exp.attributions[i, 0], by_hand(model, x[i], maps[i], 1), rtol=1e-12, atol=1e-12)


def test_scorecam_bad_input(small, model_snapshot):
    model, x = small
    snap = model_snapshot(model)
    with pytest.raises(ValueError, match="'fc' has output shape \\[3, 3\\], not a spatial"):
        propex.explain(model, x, "scorecam", layer="fc")
    with pytest.raises(ValueError, match="not a module name"):
        propex.explain(model, x, "scorecam", layer="conv3")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        propex.explain(model, x, "scorecam", batch_size=0)
    snap.assert_unchanged()

    class Flat(nn.Module):           # vectors laid out as 4x4 images inside the model
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.fc = nn.Linear(32, 2)

        def forward(self, v):
            return self.fc(self.conv(v.reshape(-1, 1, 4, 4)).flatten(1))

    with pytest.raises(ValueError, match="scorecam masks image inputs \\[N, C, H, W\\]"):
        propex.explain(Flat(), torch.randn(2, 16), "scorecam", upsample=False)

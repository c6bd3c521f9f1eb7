"""The perturbation engine: chunking, ordering, targets, forward kwargs, masks, memory estimate;
the perturbation baselines ("mean", "noise", callables)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from propex.baselines import Blur, Noise, channel_mean, resolve_baseline
from propex.perturbation.engine import PerturbationEngine, balanced_ranges


class Counting(nn.Module):
    """A small conv net that counts its forward calls and the rows it saw."""

    def __init__(self, n_out: int = 5):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, n_out)
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append(x.shape[0])
        out = self.fc(torch.tanh(self.conv(x)).flatten(1))
        return out if scale is None else out * scale.reshape(-1, 1)


@pytest.fixture
def net() -> Counting:
    torch.manual_seed(0)
    return Counting().eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, 2, 6, 6, generator=torch.Generator().manual_seed(1))


def scaled(x: torch.Tensor):
    """Perturbation k of sample s: x_s * (k + 1) / 4, plus a per-(k, s) offset."""
    def perturb(k, s):
        return x[s] * (k + 1).reshape(-1, 1, 1, 1) / 4 + 0.01 * s.reshape(-1, 1, 1, 1)
    return perturb


def expected_scores(net, x, k_total, target_idx):
    rows = []
    with torch.no_grad():
        for s in range(x.shape[0]):
            per = [net(x[s:s + 1] * (k + 1) / 4 + 0.01 * s)[0, target_idx[s]] for k in range(k_total)]
            rows.append(torch.stack(per))
    return torch.stack(rows)                                                # [N, K]


@pytest.mark.parametrize("batch_size", [1, 4, 7, 100])
def test_evaluate_matches_direct_calls_for_any_chunk_size(net, x, batch_size):
    engine = PerturbationEngine(net, batch_size=batch_size)
    prep = engine.prepare(x, [0, 3, 1])
    net.calls.clear()
    scores = engine.evaluate(prep, 5, scaled(x))
    calls = list(net.calls)
    assert scores.shape == (3, 5, 1)
    torch.testing.assert_close(scores[..., 0], expected_scores(net, x, 5, [0, 3, 1]), rtol=1e-5, atol=1e-6)
    # 15 rows in chunks of at most batch_size, spread evenly
    total = 15
    n_chunks = -(-total // min(batch_size, total))
    assert len(calls) == n_chunks and sum(calls) == total
    assert max(calls) - min(calls) <= 1
    assert not scores.requires_grad


def test_perturb_receives_k_major_order(net, x):
    engine = PerturbationEngine(net, batch_size=4)
    prep = engine.prepare(x, 0)
    seen = []

    def perturb(k, s):
        seen.append(torch.stack([k, s], 1))
        return x[s]
    engine.evaluate(prep, 3, perturb)
    pairs = torch.cat(seen)
    j = torch.arange(9)
    assert torch.equal(pairs[:, 0], j // 3) and torch.equal(pairs[:, 1], j % 3)


def test_multi_target_and_callable_targets(net, x):
    engine = PerturbationEngine(net, batch_size=5)
    multi = torch.tensor([[0, 2], [1, 4], [3, 3]])
    prep = engine.prepare(x, multi)
    scores = engine.evaluate(prep, 4, scaled(x))
    assert scores.shape == (3, 4, 2)
    for t in range(2):
        single = engine.evaluate(engine.prepare(x, multi[:, t]), 4, scaled(x))
        torch.testing.assert_close(scores[..., t], single[..., 0])
    # a callable target and per-sample callables
    fn = engine.evaluate(engine.prepare(x, lambda out: out[:, 2] - out[:, 0]), 4, scaled(x))
    by_index = engine.evaluate(engine.prepare(x, 2), 4, scaled(x)) - engine.evaluate(engine.prepare(x, 0), 4, scaled(x))
    torch.testing.assert_close(fn, by_index, rtol=1e-5, atol=1e-6)
    per_sample = [lambda row, c=c: row[c] for c in (4, 0, 2)]
    ps = engine.evaluate(engine.prepare(x, per_sample), 4, scaled(x))
    torch.testing.assert_close(ps[..., 0], expected_scores(net, x, 4, [4, 0, 2]), rtol=1e-5, atol=1e-6)


def test_target_values_and_output_transform(net, x):
    engine = PerturbationEngine(net, batch_size=2)
    prep = engine.prepare(x, [1, 2, 3])
    with torch.no_grad():
        out = net(x)
    torch.testing.assert_close(prep.target_values(), out.gather(1, torch.tensor([[1], [2], [3]])))
    probs = engine.evaluate(prep, 2, lambda k, s: x[s], output_transform=lambda o: o.softmax(1))
    expected = out.softmax(1).gather(1, torch.tensor([[1], [2], [3]]))
    torch.testing.assert_close(probs, expected.unsqueeze(1).expand(3, 2, 1))


def test_forward_kwargs_are_indexed_by_sample(net, x):
    scale = torch.tensor([1.0, -2.0, 0.5])
    engine = PerturbationEngine(net, batch_size=4)
    prep = engine.prepare(x, 0, forward_kwargs={"scale": scale})
    scores = engine.evaluate(prep, 3, scaled(x))
    plain = engine.evaluate(engine.prepare(x, 0), 3, scaled(x))
    torch.testing.assert_close(scores, plain * scale.reshape(3, 1, 1))


def test_evaluate_masks_shared_per_sample_and_callable(net, x):
    engine = PerturbationEngine(net, batch_size=3)
    prep = engine.prepare(x, 2)
    gen = torch.Generator().manual_seed(3)
    masks = torch.rand(4, 1, 6, 6, generator=gen)
    base = torch.full_like(x, 0.5)

    def manual(m_of):   # m_of(k, s) -> [1, 6, 6]
        with torch.no_grad():
            return torch.stack([torch.stack([net((base[s] + m_of(k, s) * (x[s] - base[s]))[None])[0, 2]
                                             for k in range(4)]) for s in range(3)])
    shared = engine.evaluate_masks(prep, masks, 0.5)
    torch.testing.assert_close(shared[..., 0], manual(lambda k, s: masks[k]), rtol=1e-5, atol=1e-6)
    per = torch.rand(3, 4, 1, 6, 6, generator=gen)
    per_scores = engine.evaluate_masks(prep, per, base, per_sample=True)
    torch.testing.assert_close(per_scores[..., 0], manual(lambda k, s: per[s, k]), rtol=1e-5, atol=1e-6)
    fn_scores = engine.evaluate_masks(prep, lambda k, s: per[s, k], (base,), n_masks=4)
    torch.testing.assert_close(fn_scores, per_scores)
    # masks without the channel dim broadcast over the channels
    torch.testing.assert_close(engine.evaluate_masks(prep, masks[:, 0], 0.5), shared)
    with pytest.raises(ValueError, match="n_masks"):
        engine.evaluate_masks(prep, lambda k, s: per[s, k], 0.5)
    with pytest.raises(ValueError, match="masks"):
        engine.evaluate_masks(prep, torch.rand(4, 1, 5, 6), 0.5)


def test_memory_budget_bounds_the_chunk(net, x):
    engine = PerturbationEngine(net)
    prep = engine.prepare(x, 0)
    # the forward's live tensors per row: input + conv out + tanh out (+ a few small ones)
    row = 2 * 6 * 6 * 4
    assert 2 * row <= prep.bytes_per_row <= 20 * row
    per_row = prep.bytes_per_row + row
    small = PerturbationEngine(net, memory_budget=3 * per_row)
    prep_small = small.prepare(x, 0)
    assert small.chunk(prep_small, 100) == 3
    net.calls.clear()
    scores = small.evaluate(prep_small, 4, scaled(x))
    assert max(net.calls) <= 3 and sum(net.calls) == 12
    torch.testing.assert_close(scores, PerturbationEngine(net, batch_size=12).evaluate(
        prep_small, 4, scaled(x)), rtol=1e-5, atol=1e-6)


def test_memory_estimate_ignores_parameter_only_tensors():
    """A big linear layer's transposed weight does not grow with the batch: not counted per row."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2000, 1000), nn.ReLU(), nn.Linear(1000, 3)).eval()
    engine = PerturbationEngine(model)
    prep = engine.prepare(torch.randn(2, 2000), 0)
    assert prep.bytes_per_row < 40_000          # the weight alone is 8 MB
    assert engine.chunk(prep, 10**6) > 1000


def test_float64_and_integer_token_inputs():
    torch.manual_seed(0)
    emb = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 3)).double().eval()
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    engine = PerturbationEngine(emb, batch_size=3)
    prep = engine.prepare(ids, 1)
    scores = engine.evaluate(prep, 3, lambda k, s: torch.where(torch.arange(3) == k.unsqueeze(1), 0, ids[s]))
    assert scores.dtype == torch.float64 and scores.shape == (2, 3, 1)
    with torch.no_grad():
        expected = emb(torch.tensor([[0, 2, 3]]))[0, 1]
    torch.testing.assert_close(scores[0, 0, 0], expected)


def test_bad_perturb_results_and_counts(net, x):
    engine = PerturbationEngine(net, batch_size=4)
    prep = engine.prepare(x, 0)
    with pytest.raises(ValueError, match="perturb"):
        engine.evaluate(prep, 2, lambda k, s: x[:1].expand(5, -1, -1, -1))
    with pytest.raises(ValueError, match="perturb"):
        engine.evaluate(prep, 2, lambda k, s: (x[s], x[s]))
    with pytest.raises(ValueError, match="n_perturbations"):
        engine.evaluate(prep, -1, scaled(x))
    assert engine.evaluate(prep, 0, scaled(x)).shape == (3, 0, 1)
    with pytest.raises(ValueError, match="batch_size"):
        PerturbationEngine(net, batch_size=0)
    with pytest.raises(ValueError, match="memory_budget"):
        PerturbationEngine(net, memory_budget="lots")


def test_balanced_ranges():
    assert balanced_ranges(49, 10) == [(0, 10), (10, 20), (20, 30), (30, 40), (40, 49)]
    assert balanced_ranges(21, 10) == [(0, 7), (7, 14), (14, 21)]
    assert balanced_ranges(5, 100) == [(0, 5)]
    sizes = [b - a for a, b in balanced_ranges(196, 13)]
    assert sum(sizes) == 196 and max(sizes) <= 13 and max(sizes) - min(sizes) <= 1


# --------------------------------------------------------------------------- baselines
def test_mean_baseline_is_per_sample_per_channel():
    x = torch.randn(2, 3, 4, 5)
    (b,) = resolve_baseline("mean", (x,), False)
    assert b.shape == x.shape
    torch.testing.assert_close(b[1, 2], x[1, 2].mean().expand(4, 5))
    tab = torch.randn(3, 7)
    torch.testing.assert_close(channel_mean(tab), tab.mean(1, keepdim=True).expand(3, 7))


def test_noise_baseline_is_seeded_and_scaled():
    x = torch.rand(2, 3, 8, 8) * torch.tensor([1.0, 10.0]).reshape(2, 1, 1, 1)

    def draw(spec, seed):
        return resolve_baseline(spec, (x,), False, torch.Generator().manual_seed(seed))[0]
    a, b, c = draw("noise", 0), draw("noise", 0), draw("noise", 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    rng = x.reshape(2, -1).max(1).values - x.reshape(2, -1).min(1).values
    std = (a - x).reshape(2, -1).std(1)
    torch.testing.assert_close(std / rng, torch.full((2,), 0.2), rtol=0.1, atol=0)
    absolute = draw(Noise(sigma=0.5), 0)
    torch.testing.assert_close((absolute - x).std(), torch.tensor(0.5), rtol=0.1, atol=0)
    with pytest.raises(ValueError, match="sigma"):
        Noise(sigma=-1)
    with pytest.raises(ValueError, match="not both"):
        Noise(sigma=1.0, noise_level=0.1)


def test_blur_and_callable_baselines():
    x = torch.rand(1, 2, 9, 9)
    (b,) = resolve_baseline(Blur(sigma=0.0), (x,), False)
    torch.testing.assert_close(b, x)
    (c,) = resolve_baseline(lambda t: t.mean(dim=(2, 3), keepdim=True), (x,), False)
    torch.testing.assert_close(c, channel_mean(x))
    with pytest.raises(ValueError, match="baseline"):
        resolve_baseline(lambda t: torch.zeros(3), (x,), False)
    with pytest.raises(TypeError, match="baseline"):
        resolve_baseline(lambda t: 0.0, (x,), False)
    with pytest.raises(ValueError, match="'mean'"):
        resolve_baseline("median", (x,), False)

"""LIME and Kernel SHAP: the batched weighted least-squares solver, the Shapley coalitions, exact
Shapley values by enumeration, efficiency, parity with Captum given the same coalitions, a linear
model's weights, feature masks, errors, and the model left as found."""
from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import propex
from propex.perturbation.surrogate import (KernelShap, Lime, bernoulli_coalitions, default_feature_mask,
                                           shapley_coalitions, solve_weighted_linear)




class MLP(nn.Module):
    """A small nonlinear model on [N, 1, H, W] inputs (interactions between features)."""

    def __init__(self, d: int, classes: int = 3):
        super().__init__()
        self.l1, self.l2 = nn.Linear(d, 16), nn.Linear(16, classes)

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x.flatten(1))))


def pair_mask(h: int, w: int) -> torch.Tensor:
    """Groups of two horizontally adjacent pixels: [1, 1, h, w] with h * w / 2 ids."""
    return torch.arange(h * w // 2).reshape(1, 1, h, w // 2).repeat_interleave(2, dim=3)


def exact_shapley(model, x, feature_mask, target, baseline=0.0):
    """Shapley values of the groups of one sample by enumerating all 2^G coalitions."""
    ids = feature_mask.reshape(-1).unique()
    g = ids.numel()
    values = {}
    with torch.no_grad():
        for bits in itertools.product([0, 1], repeat=g):
            keep = torch.tensor(bits, dtype=torch.bool)[torch.searchsorted(ids, feature_mask)]
            values[bits] = float(model(torch.where(keep, x, torch.full_like(x, baseline)))[0, target])
    phi = torch.zeros(g, dtype=torch.float64)
    for bits, v in values.items():
        size = sum(bits)
        for i in range(g):
            if bits[i]:
                without = bits[:i] + (0,) + bits[i + 1:]
                weight = math.factorial(size - 1) * math.factorial(g - size) / math.factorial(g)
                phi[i] += weight * (v - values[without])
    return phi


# ----------------------------------------------------------------------------------- the solver
def test_solver_equals_weighted_ridge_closed_form():
    gen = torch.Generator().manual_seed(0)
    z = (torch.rand(40, 5, generator=gen) < 0.5).double()
    y = torch.randn(3, 40, 2, generator=gen, dtype=torch.float64)
    w = torch.rand(3, 40, generator=gen, dtype=torch.float64)
    coef, intercept = solve_weighted_linear(z, y, w, ridge=0.7)
    x = np.concatenate([np.ones((40, 1)), z.numpy()], axis=1)
    for n in range(3):
        wn = np.diag(w[n].numpy())
        pen = np.diag([0.0] + [0.7] * 5)
        beta = np.linalg.solve(x.T @ wn @ x + pen, x.T @ wn @ y[n].numpy())
        np.testing.assert_allclose(intercept[n].numpy(), beta[0], rtol=1e-10)
        np.testing.assert_allclose(coef[n].numpy(), beta[1:], rtol=1e-10)


def test_solver_constrained_fit_is_the_eliminated_least_squares():
    """Intercept fixed, coefficients summing to `total`: equal to eliminating the last coefficient."""
    gen = torch.Generator().manual_seed(1)
    z = (torch.rand(30, 4, generator=gen) < 0.5).double()
    y = torch.randn(2, 30, 1, generator=gen, dtype=torch.float64)
    w = torch.rand(30, generator=gen, dtype=torch.float64)
    offset, total = torch.randn(2, 1, dtype=torch.float64), torch.randn(2, 1, dtype=torch.float64)
    coef, intercept = solve_weighted_linear(z, y, w, offset=offset, total=total)
    torch.testing.assert_close(intercept, offset)
    torch.testing.assert_close(coef.sum(dim=1), total, rtol=0, atol=1e-12)
    for n in range(2):
        target = (y[n, :, 0] - offset[n] - z[:, -1] * total[n]).numpy()
        design = (z[:, :-1] - z[:, -1:]).numpy()
        sw = np.sqrt(w.numpy())[:, None]
        sol = np.linalg.lstsq(design * sw, target * sw[:, 0], rcond=None)[0]
        np.testing.assert_allclose(coef[n, :-1, 0].numpy(), sol, rtol=1e-9, atol=1e-12)


def test_solver_pins_absent_groups_and_handles_rank_deficiency():
    gen = torch.Generator().manual_seed(2)
    z = (torch.rand(20, 4, generator=gen) < 0.5).double()
    y = torch.randn(2, 20, 1, generator=gen, dtype=torch.float64)
    present = torch.tensor([[True, True, False, True], [True, True, True, True]])
    coef, _ = solve_weighted_linear(z, y, torch.ones(20, dtype=torch.float64), present=present)
    assert coef[0, 2, 0] == 0
    ref, _ = solve_weighted_linear(z[:, [0, 1, 3]], y[:1], torch.ones(20, dtype=torch.float64))
    torch.testing.assert_close(coef[0, [0, 1, 3]], ref[0])
    # fewer coalitions than groups: the minimum-norm solution, finite
    few, _ = solve_weighted_linear(z[:3], y[:, :3], torch.ones(3, dtype=torch.float64))
    assert torch.isfinite(few).all()


# ----------------------------------------------------------------------------------- coalitions
def test_shapley_coalitions_enumerate_all_when_the_budget_allows():
    z, w = shapley_coalitions(5, 1000, torch.Generator().manual_seed(0))
    assert z.shape == (30, 5) and len({tuple(r.tolist()) for r in z}) == 30      # 2^5 - 2, all distinct
    sizes = z.sum(dim=1)
    expected = torch.tensor([4 / (math.comb(5, int(s)) * s * (5 - s)) for s in sizes.tolist()], dtype=torch.float64)
    torch.testing.assert_close(w, expected / expected.sum())
    assert abs(float(w.sum()) - 1) < 1e-12


def test_shapley_coalitions_sample_the_middle_in_complementary_pairs():
    z, w = shapley_coalitions(10, 300, torch.Generator().manual_seed(0))
    assert z.shape[0] == 300
    sizes = z.sum(dim=1)
    assert int((sizes == 1).sum()) == 10 and int((sizes == 9).sum()) == 10       # enumerated: 1 & 9, 2 & 8
    assert int((sizes == 2).sum()) == 45 and int((sizes == 8).sum()) == 45
    rest = z[110:]
    assert torch.equal(rest[0::2] + rest[1::2], torch.ones(95, 10, dtype=torch.float64))   # pairs z, 1 - z
    assert ((rest.sum(dim=1) >= 3) & (rest.sum(dim=1) <= 7)).all()
    assert abs(float(w.sum()) - 1) < 1e-12


# ----------------------------------------------------------------------------------- Kernel SHAP
def test_kernel_shap_equals_exact_shapley_values_by_enumeration():
    """6 groups, every coalition evaluated (62 <= n_samples): exact up to float32 rounding (1e-6)."""
    torch.manual_seed(0)
    model = MLP(12).eval()
    x = torch.randn(3, 1, 3, 4)
    fm = pair_mask(3, 4)
    exp = KernelShap(model, feature_mask=fm, seed=0, return_input_shape=False).explain(x, target=[0, 1, 2])
    assert exp.attributions.shape == (3, 6)
    for n in range(3):
        phi = exact_shapley(model, x[n:n + 1], fm, target=n)
        torch.testing.assert_close(exp.attributions[n].double(), phi, rtol=0, atol=1e-6)
    assert float(exp.delta.abs().max()) < 1e-6


def test_kernel_shap_per_sample_feature_masks_and_input_shape():
    torch.manual_seed(1)
    model = MLP(8).eval()
    x = torch.randn(2, 1, 2, 4)
    fm = torch.stack([pair_mask(2, 4)[0], torch.tensor([[[0, 1, 1, 2], [0, 3, 3, 2]]])])   # [2, 1, 2, 4]
    attr = KernelShap(model, feature_mask=fm, seed=0).attribute(x, target=1)
    assert attr.shape == x.shape
    for n in range(2):
        phi = exact_shapley(model, x[n:n + 1], fm[n:n + 1], target=1)
        ids = fm[n].unique()
        for g, gid in enumerate(ids.tolist()):
            sel = fm[n] == gid
            torch.testing.assert_close(attr[n][sel], torch.full((int(sel.sum()),), float(phi[g])), rtol=0, atol=1e-6)


def test_kernel_shap_converges_to_the_shapley_values_when_sampling():
    """10 groups (1022 coalitions): with 1000 samples the error is below 2 % of the largest value,
    and smaller than with 100 samples; efficiency holds exactly in every case."""
    torch.manual_seed(2)
    model = MLP(20).eval()
    x = torch.randn(1, 1, 4, 5)
    fm = torch.arange(10).reshape(1, 1, 2, 5).repeat_interleave(2, dim=2)
    phi = exact_shapley(model, x, fm, target=0).float()
    errors = []
    for n_samples in (100, 1000):
        exp = KernelShap(model, n_samples=n_samples, feature_mask=fm, seed=0,
                         return_input_shape=False).explain(x, target=0)
        errors.append(float((exp.attributions[0] - phi).abs().max()))
        assert float(exp.delta.abs().max()) < 1e-6
    assert errors[1] < errors[0] and errors[1] < 0.02 * float(phi.abs().max())


def test_kernel_shap_efficiency_dummy_and_linearity():
    """On a linear model the Shapley value of a group is sum_i w_i (x_i - b_i), whatever the sample."""
    torch.manual_seed(3)
    lin = nn.Linear(16, 2)
    with torch.no_grad():
        lin.weight[:, 12:] = 0                                              # group ids 6, 7: dummies
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = torch.randn(2, 1, 4, 4)
    fm = pair_mask(4, 4)
    exp = KernelShap(model, n_samples=40, feature_mask=fm, baseline=0.5, seed=1,
                     return_input_shape=False).explain(x, target=torch.tensor([[0, 1], [1, 0]]))
    assert exp.attributions.shape == (2, 2, 8) and exp.delta.shape == (2, 2)
    contrib = lin.weight.detach().reshape(1, 2, 16) * (x.reshape(2, 1, 16) - 0.5)      # [N, class, 16]
    groups = contrib.reshape(2, 2, 8, 2).sum(dim=3)
    expected = torch.stack([groups[0, [0, 1]], groups[1, [1, 0]]])
    torch.testing.assert_close(exp.attributions, expected, rtol=1e-4, atol=1e-5)
    assert float(exp.attributions[..., 6:].abs().max()) < 1e-5
    assert float(exp.delta.abs().max()) < 1e-5


def test_kernel_shap_parity_with_captum_given_the_same_coalitions():
    """Captum's KernelShap fitted on our coalitions (ones and zeros first with its 1e6 weight; the
    others with our kernel weights) gives our values to ~1e-5; Captum's constraints are soft."""
    captum = pytest.importorskip("captum.attr")
    torch.manual_seed(4)
    model = MLP(16).eval()
    x = torch.randn(2, 1, 4, 4)
    fm = pair_mask(4, 4)
    for n_samples in (12, 60):                                      # all sampled / sizes 1 & 7 enumerated
        ours = KernelShap(model, n_samples=n_samples, feature_mask=fm, seed=5,
                          return_input_shape=False).attribute(x, target=0)
        z, w = shapley_coalitions(8, n_samples, torch.Generator().manual_seed(5))
        weight_of = {tuple(r.long().tolist()): float(wk) * len(w) for r, wk in zip(z, w)}

        def coalitions(original, **kwargs):
            yield torch.ones(1, 8, dtype=torch.long)
            yield torch.zeros(1, 8, dtype=torch.long)
            for r in z:
                yield r.reshape(1, -1).long()

        def similarity(original, perturbed, sample, **kwargs):
            key = tuple(sample.reshape(-1).tolist())
            return torch.tensor([weight_of.get(key, 1e6)])

        ks = captum.KernelShap(model)
        ks.perturb_func, ks.similarity_func = coalitions, similarity
        for n in range(2):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = ks.attribute(x[n:n + 1], target=0, feature_mask=fm, n_samples=n_samples + 2,
                                   return_input_shape=False)
            torch.testing.assert_close(ours[n], ref[0], rtol=0, atol=2e-5)


# ----------------------------------------------------------------------------------- LIME
@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_lime_parity_with_captum_given_the_same_coalitions(distance):
    """Captum's Lime with SkLearnLinearRegression and its exponential kernel, fed our coalitions."""
    captum = pytest.importorskip("captum.attr")
    pytest.importorskip("sklearn")
    from captum._utils.models.linear_model import SkLearnLinearRegression
    from captum.attr._core.lime import get_exp_kernel_similarity_function
    torch.manual_seed(5)
    model = MLP(12).eval()
    x = torch.randn(2, 1, 3, 4)
    fm = pair_mask(3, 4)
    ours = Lime(model, n_samples=40, feature_mask=fm, seed=3, alpha=0.0, distance=distance, kernel_width=0.75,
                baseline=0.5, return_input_shape=False).attribute(x, target=2)
    z = bernoulli_coalitions(6, 40, torch.Generator().manual_seed(3))

    def coalitions(original, **kwargs):
        for r in z:
            yield r.reshape(1, -1).long()

    for n in range(2):
        lime = captum.Lime(model, interpretable_model=SkLearnLinearRegression(),
                           similarity_func=get_exp_kernel_similarity_function(distance, 0.75),
                           perturb_func=coalitions)
        ref = lime.attribute(x[n:n + 1], target=2, feature_mask=fm, n_samples=40, baselines=0.5,
                             return_input_shape=False)
        torch.testing.assert_close(ours[n], ref[0], rtol=0, atol=1e-5)


def test_lime_recovers_a_linear_models_weights():
    """f(x) = w.x + c: each group's coefficient is sum_{i in g} w_i (x_i - b_i), exactly without ridge."""
    torch.manual_seed(6)
    lin = nn.Linear(24, 1)
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = torch.randn(3, 2, 3, 4)
    fm = torch.arange(6).reshape(1, 1, 3, 2).repeat_interleave(2, dim=3)              # channels together
    expected = (lin.weight.detach().reshape(1, 2, 3, 4) * x).reshape(3, 2, 3, 2, 2).sum(dim=(1, 4)).reshape(3, 6)
    plain = Lime(model, n_samples=200, feature_mask=fm, seed=0, alpha=0.0, return_input_shape=False).attribute(x, target=0)
    torch.testing.assert_close(plain, expected, rtol=1e-4, atol=1e-5)
    ridge = Lime(model, n_samples=200, feature_mask=fm, seed=0, return_input_shape=False).attribute(x, target=0)
    torch.testing.assert_close(ridge, expected, rtol=0.05, atol=0.02)                 # alpha = 1 shrinks a little
    # input-shaped: every element carries its group's coefficient (all channels of a cell)
    shaped = Lime(model, n_samples=200, feature_mask=fm, seed=0, alpha=0.0).attribute(x, target=0)
    assert shaped.shape == x.shape
    torch.testing.assert_close(shaped[:, 1, 2, 3], plain[:, 5])


def test_lime_reproducible_with_a_seed_and_chunk_independent():
    torch.manual_seed(7)
    model = MLP(16).eval()
    x = torch.randn(3, 1, 4, 4)
    a = Lime(model, n_samples=50, seed=1).attribute(x)
    b = Lime(model, n_samples=50, seed=1, batch_size=7).attribute(x)
    c = Lime(model, n_samples=50, seed=2).attribute(x)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(a, c)


def test_default_feature_mask_grid_superpixels_and_tabular_columns(digits_model, digits_x):
    ids = default_feature_mask((digits_x,))[0]
    assert ids.shape == (1, 1, 16, 16) and ids.unique().numel() == 64
    assert torch.equal(ids[0, 0, :2, :2], torch.zeros(2, 2, dtype=torch.long))     # 2x2-pixel cells
    attr = Lime(digits_model, n_samples=100, seed=0).attribute(digits_x[:2])
    cells = attr.reshape(2, 1, 8, 2, 8, 2)
    assert torch.equal(cells, cells[:, :, :, :1, :, :1].expand_as(cells))          # constant on each cell
    tab = torch.randn(4, 5)
    model = nn.Linear(5, 2)
    exp = KernelShap(model, seed=0).explain(tab, target=1)                          # 5 columns: exact
    expected = model.weight[1].detach() * tab
    torch.testing.assert_close(exp.attributions, expected, rtol=1e-4, atol=1e-6)


def test_tuple_inputs_share_one_numbering_of_groups():
    class Two(nn.Module):
        def forward(self, a, b):
            return (a.flatten(1) * torch.arange(1.0, 7.0)).sum(1, keepdim=True) + 3 * b.sum(1, keepdim=True)
    a, b = torch.rand(2, 1, 2, 3), torch.rand(2, 2)
    masks = (torch.tensor([[[[0, 0, 1], [1, 2, 2]]]]), torch.tensor([[2, 3]]))      # id 2 spans both tensors
    exp = KernelShap(Two(), feature_mask=masks, seed=0).explain((a, b), target=0)
    assert isinstance(exp.attributions, tuple)
    wa = torch.arange(1.0, 7.0).reshape(1, 1, 2, 3) * a
    expected_2 = wa[:, 0, 1, 1:].sum(1) + 3 * b[:, 0]
    torch.testing.assert_close(exp.attributions[0][:, 0, 1, 2], expected_2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(exp.attributions[1][:, 0], expected_2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(exp.attributions[1][:, 1], 3 * b[:, 1], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------- errors and the model
@pytest.mark.parametrize("cls", [Lime, KernelShap])
@pytest.mark.parametrize("kw, err, text", [
    (dict(n_samples=0), ValueError, "n_samples"),
    (dict(n_samples=1.5), TypeError, "n_samples"),
    (dict(feature_mask=torch.zeros(1, 1, 4, 4)), TypeError, "integer group ids"),
    (dict(feature_mask="slic"), TypeError, "feature_mask"),
    (dict(baseline="gray"), ValueError, "baseline"),
    (dict(return_input_shape=1), TypeError, "return_input_shape"),
    (dict(seed=0.5), TypeError, "seed"),
])
def test_bad_options_raise_clear_errors(cls, kw, err, text):
    with pytest.raises(err, match=text):
        cls(nn.Identity(), **kw)


@pytest.mark.parametrize("kw, err, text", [
    (dict(distance="manhattan"), ValueError, "distance"),
    (dict(kernel_width=0), ValueError, "kernel_width"),
    (dict(alpha=-1.0), ValueError, "alpha"),
])
def test_bad_lime_options(kw, err, text):
    with pytest.raises(err, match=text):
        Lime(nn.Identity(), **kw)


@pytest.mark.parametrize("mask", [
    torch.zeros(1, 1, 3, 5, dtype=torch.long),        # wrong spatial size
    torch.zeros(3, 1, 4, 4, dtype=torch.long),        # N = 3 for a batch of 2
    torch.zeros(1, 2, 4, 4, dtype=torch.long),        # 2 channels for 1
])
def test_feature_mask_of_the_wrong_shape(mask):
    model = MLP(16).eval()
    for cls in (Lime, KernelShap):
        with pytest.raises(ValueError, match="feature_mask of shape"):
            cls(model, n_samples=5, feature_mask=mask).attribute(torch.randn(2, 1, 4, 4), target=0)


def test_a_tuple_of_masks_for_one_tensor_is_refused():
    with pytest.raises(ValueError, match="feature_mask"):
        Lime(MLP(16), n_samples=5, feature_mask=(pair_mask(4, 4), pair_mask(4, 4))).attribute(
            torch.randn(1, 1, 4, 4), target=0)


@pytest.mark.parametrize("method", ["lime", "kernel_shap"])
def test_model_is_left_as_found(method, digits_model, digits_x, model_snapshot):
    snap = model_snapshot(digits_model)
    exp = propex.explain(digits_model, digits_x[:2], method, n_samples=30, seed=0)
    snap.assert_unchanged()
    assert exp.attributions.shape == (2, 1, 16, 16) and exp.method == method
    assert (exp.delta is None) == (method == "lime")

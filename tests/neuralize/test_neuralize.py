"""Neuralized scikit-learn models equal the originals; NEON relevance is conserved; errors are clear."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import propex
from propex.neuralize import NeuralizedModel

sklearn = pytest.importorskip("sklearn")
from scipy.special import logsumexp                                   # noqa: E402
from sklearn.cluster import KMeans, MiniBatchKMeans                    # noqa: E402
from sklearn.datasets import load_digits, load_iris, load_wine        # noqa: E402
from sklearn.linear_model import LogisticRegression                   # noqa: E402
from sklearn.neighbors import KernelDensity                           # noqa: E402
from sklearn.svm import OneClassSVM                                   # noqa: E402

TOL = 1e-6


@pytest.fixture(scope="module")
def wine():
    data = load_wine()
    x = (data.data - data.data.mean(0)) / data.data.std(0)
    return x, data.target


@pytest.fixture(scope="module")
def iris():
    data = load_iris()
    return data.data, data.target


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return data.data[:600], data.target[:600]


def _t(a):
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def _llr(z):
    """log(p_k / (1 - p_k)) of softmax(z), computed stably from the logits."""
    return np.stack([-logsumexp(-(z[:, [k]] - np.delete(z, k, 1)), axis=1) for k in range(z.shape[1])], 1)


# ------------------------------------------------------------------ equivalence with scikit-learn
def test_kernel_density_equals_minus_score_samples(wine, digits):
    x, _ = wine
    weights = np.linspace(0.2, 2.0, len(x))
    for kde in (KernelDensity(bandwidth=1.2).fit(x[:120]),
                KernelDensity(bandwidth="scott").fit(x, sample_weight=weights)):
        model = propex.neuralize(kde)
        assert isinstance(model, NeuralizedModel)
        out = model(_t(x)).detach().numpy()
        assert out.shape == (len(x), 1)
        assert np.abs(out[:, 0] + kde.score_samples(x)).max() < TOL
    xd, _ = digits
    kde = KernelDensity(bandwidth=8.0).fit(xd[:400])
    log_density = propex.neuralize(kde, output="log_density")(_t(xd[400:])).detach().numpy()[:, 0]
    assert np.abs(log_density - kde.score_samples(xd[400:])).max() < TOL


def test_one_class_svm_equals_decision_function(wine, iris):
    for x in (wine[0], iris[0]):
        svm = OneClassSVM(nu=0.2, gamma="scale").fit(x)
        out = propex.neuralize(svm)(_t(x)).detach().numpy()[:, 0]
        assert np.abs(out - svm.decision_function(x)).max() < TOL
        outlier = propex.neuralize(svm, output="outlier_score")(_t(x)).detach().numpy()[:, 0]
        assert np.abs(outlier + np.log(svm.score_samples(x))).max() < TOL


@pytest.mark.parametrize("cls", [KMeans, MiniBatchKMeans])
def test_kmeans_cluster_evidence(cls, iris, digits):
    for x, k in ((iris[0], 3), (digits[0], 6)):
        km = cls(n_clusters=k, n_init=2, random_state=0).fit(x)
        f = propex.neuralize(km)(_t(x)).detach().numpy()
        d2 = km.transform(x) ** 2
        expected = np.stack([np.min(np.delete(d2, c, 1) - d2[:, [c]], 1) for c in range(k)], 1)
        assert f.shape == (len(x), k)
        assert np.abs(f - expected).max() < TOL * max(1.0, np.abs(expected).max())
        assert (f.argmax(1) == km.predict(x)).all()
        assert ((f > 0).sum(1) <= 1).all()                      # only the assigned cluster has positive evidence


def test_kmeans_soft_min_is_the_soft_assignment_log_ratio(iris):
    x = iris[0]
    km = KMeans(4, n_init=2, random_state=0).fit(x)
    beta = 0.7
    f = propex.neuralize(km, beta=beta)(_t(x)).detach().numpy()
    z = -beta * km.transform(x) ** 2
    assert np.abs(f - _llr(z) / beta).max() < TOL


def test_logistic_regression_log_likelihood_ratios(wine, iris, digits):
    for x, y in (wine, iris, digits):
        lr = LogisticRegression(max_iter=3000).fit(x, y)
        out = propex.neuralize(lr)(_t(x)).detach().numpy()
        assert out.shape == (len(x), len(lr.classes_))
        assert np.abs(out - _llr(lr.decision_function(x))).max() < TOL
        p = lr.predict_proba(x)
        moderate = (p > 1e-6) & (p < 1 - 1e-6)
        assert np.abs(out - (np.log(p) - np.log1p(-p)))[moderate].max() < 1e-5
    x, y = wine
    binary = LogisticRegression(max_iter=1000).fit(x, (y == 1).astype(int))
    out = propex.neuralize(binary)(_t(x)).detach().numpy()
    z = binary.decision_function(x)
    assert np.abs(out[:, 1] - z).max() < TOL and np.abs(out[:, 0] + z).max() < TOL


# ------------------------------------------------------------------ NEON relevance
def test_neon_conserves_the_kernel_and_cluster_scores(wine):
    x, y = wine
    xt = _t(x[:30])
    models = [propex.neuralize(KernelDensity(bandwidth=1.5).fit(x)),
              propex.neuralize(OneClassSVM(nu=0.3).fit(x), output="outlier_score"),
              propex.neuralize(KMeans(3, n_init=2, random_state=0).fit(x)),
              propex.neuralize(KMeans(3, n_init=2, random_state=0).fit(x), beta=0.5)]
    for model in models:
        exp = propex.explain(model, xt, "neon")
        assert exp.attributions.shape == (30, 13)
        score = model(xt).detach().gather(1, exp.target[:, None])[:, 0]
        torch.testing.assert_close(exp.attributions.sum(1), score, rtol=0, atol=1e-9)
        assert exp.delta.abs().max() < 1e-9
    kde = propex.neuralize(KernelDensity(bandwidth=1.5).fit(x), output="log_density")
    exp = propex.explain(kde, xt, "neon")
    torch.testing.assert_close(exp.attributions.sum(1), kde(xt)[:, 0].detach(), rtol=0, atol=1e-9)


def test_neon_closed_forms(wine):
    x, _ = wine
    xt = _t(x[1:11])
    # one kernel centre: R_i = (x_i - c_i)² / ||x - c||² · o(x)
    kde = KernelDensity(bandwidth=2.0).fit(x[:1])
    model = propex.neuralize(kde)
    rel = propex.explain(model, xt, "neon").attributions
    diff2 = (xt - _t(x[:1])) ** 2
    torch.testing.assert_close(rel, diff2 / diff2.sum(1, keepdim=True) * model(xt).detach(), rtol=1e-12, atol=1e-12)
    at_centre = propex.explain(model, _t(x[:1]), "neon").attributions     # zero distance: o = -log α, spread evenly
    torch.testing.assert_close(at_centre, model(_t(x[:1])).detach().expand(1, 13) / 13, rtol=1e-12, atol=1e-12)
    # hard-min k-means: the nearest competitor's midpoint rule, R_i = 2(μ_c - μ_l)_i (x - (μ_c + μ_l)/2)_i
    km = KMeans(3, n_init=2, random_state=0).fit(x)
    model = propex.neuralize(km)
    exp = propex.explain(model, xt, "neon")
    mu = _t(km.cluster_centers_)
    d2 = ((xt[:, None, :] - mu[None]) ** 2).sum(-1)
    c = exp.target
    d2_others = d2.clone()
    d2_others[torch.arange(10), c] = math.inf
    rival = d2_others.argmin(1)
    expected = 2 * (mu[c] - mu[rival]) * (xt - 0.5 * (mu[c] + mu[rival]))
    torch.testing.assert_close(exp.attributions, expected, rtol=1e-12, atol=1e-12)


def test_neon_logistic_regression_bias_handling(wine):
    x, y = wine
    xt = _t(x[:25])
    lr = LogisticRegression(max_iter=2000).fit(x, y)
    model = propex.neuralize(lr)
    exp = propex.explain(model, xt, "neon", target=[[0, 1, 2]] * 25)
    assert exp.attributions.shape == (25, 3, 13) and exp.delta.shape == (25, 3)
    h = model.first(xt)                                             # [N, K, K-1]
    weights = model.pool.weights(h)
    score = model(xt).detach()
    bias_share = (weights * score[:, :, None] * model.first.bias[None] / h).sum(-1)
    torch.testing.assert_close(exp.attributions.sum(-1) + bias_share, score, rtol=0, atol=1e-9)
    torch.testing.assert_close(exp.delta, -bias_share, rtol=0, atol=1e-9)
    no_bias = propex.neuralize(LogisticRegression(fit_intercept=False, max_iter=2000).fit(x, y))
    exp = propex.explain(no_bias, xt, "neon")
    assert exp.delta.abs().max() < 1e-9


def test_other_methods_apply_to_neuralized_models(iris):
    x, y = iris
    model = propex.neuralize(LogisticRegression(max_iter=2000).fit(x, y))
    xt = _t(x[::15])
    ig = propex.explain(model, xt, "integrated_gradients", n_steps=64, baseline=_t(x.mean(0)[None]))
    assert ig.delta.abs().max() < 1e-6
    ih = propex.explain(model, xt, "integrated_hessians", n_steps=16, baseline=_t(x.mean(0)[None]))
    assert ih.attributions.shape == (len(xt), 4, 4) and ih.delta.abs().max() < 1e-4


# ------------------------------------------------------------------ errors
def test_bad_estimators_and_inputs(iris):
    x, y = iris
    with pytest.raises(ValueError, match="not fitted"):
        propex.neuralize(KMeans(3))
    with pytest.raises(ValueError, match="kernel='gaussian'"):
        propex.neuralize(KernelDensity(kernel="tophat").fit(x))
    with pytest.raises(ValueError, match="kernel='rbf'"):
        propex.neuralize(OneClassSVM(kernel="linear").fit(x))
    with pytest.raises(TypeError, match="scikit-learn estimator"):
        propex.neuralize(torch.nn.Linear(4, 2))
    with pytest.raises(TypeError, match="scikit-learn estimator"):
        from sklearn.preprocessing import StandardScaler
        propex.neuralize(StandardScaler().fit(x))
    lr = LogisticRegression(max_iter=500).fit(x, y)
    with pytest.raises(ValueError, match="beta= is the soft-min stiffness"):
        propex.neuralize(lr, beta=2.0)
    with pytest.raises(ValueError, match="beta must be a number > 0"):
        propex.neuralize(KMeans(2, n_init=1).fit(x), beta=-1.0)
    with pytest.raises(ValueError, match="output='bogus' for KernelDensity"):
        propex.neuralize(KernelDensity().fit(x), output="bogus")
    model = propex.neuralize(lr)
    with pytest.raises(ValueError, match=r"shape \[N, 4\]"):
        model(torch.zeros(2, 5))
    with pytest.raises(TypeError, match="neon explains models made by propex.neuralize"):
        propex.explain(torch.nn.Linear(4, 3), torch.zeros(2, 4), "neon")
    with pytest.raises(ValueError, match="output='outlier_score'"):
        propex.explain(propex.neuralize(OneClassSVM().fit(x)), _t(x[:3]), "neon")
    with pytest.raises(ValueError, match="epsilon"):
        propex.explain(model, _t(x[:3]), "neon", epsilon=-1.0)


def test_float32_networks_and_epsilon(iris):
    x, y = iris
    km = KMeans(3, n_init=2, random_state=0).fit(x)
    model32 = propex.neuralize(km, beta=1.0, dtype=torch.float32)
    assert model32.first.weight.dtype == torch.float32
    ref = propex.neuralize(km, beta=1.0)(_t(x)).detach()
    torch.testing.assert_close(model32(torch.tensor(x, dtype=torch.float32)).double(), ref, rtol=1e-4, atol=1e-3)
    exp0 = propex.explain(propex.neuralize(km, beta=1.0), _t(x[:5]), "neon")
    exp1 = propex.explain(propex.neuralize(km, beta=1.0), _t(x[:5]), "neon", epsilon=1.0)
    assert exp1.attributions.abs().sum() < exp0.attributions.abs().sum()    # ε absorbs relevance


def test_pipelines_of_scalers_fold_into_the_network(wine):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler
    raw, y = load_wine(return_X_y=True)
    cases = [
        (make_pipeline(StandardScaler(), OneClassSVM(nu=0.2)), lambda p: p.decision_function(raw)),
        (make_pipeline(MaxAbsScaler(), StandardScaler(with_mean=False), KernelDensity(bandwidth=2.0)),
         lambda p: -p.score_samples(raw)),
        (make_pipeline(MinMaxScaler(), RobustScaler(with_centering=False), LogisticRegression(max_iter=2000)),
         lambda p: _llr(p.decision_function(raw))),
    ]
    for pipe, reference in cases:
        pipe.fit(raw, y)
        model = propex.neuralize(pipe)
        out = model(_t(raw)).detach().numpy()
        expected = reference(pipe)
        assert np.abs(out - (expected[:, None] if expected.ndim == 1 else expected)).max() < TOL
    kde = propex.neuralize(cases[1][0])
    exp = propex.explain(kde, _t(raw[:6]), "neon")
    torch.testing.assert_close(exp.attributions.sum(1), kde(_t(raw[:6]))[:, 0].detach(), rtol=0, atol=1e-9)
    from sklearn.decomposition import PCA
    with pytest.raises(TypeError, match="only per-feature scalers"):
        propex.neuralize(make_pipeline(PCA(3), KMeans(2, n_init=1)).fit(raw))

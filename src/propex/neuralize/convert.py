r"""``neuralize``: fitted scikit-learn estimators as strictly equivalent PyTorch networks.

* ``KernelDensity`` (Gaussian kernel, Euclidean metric): the outlier score
  :math:`o(x) = -\log f(x)` (``-score_samples``) as
  :math:`h_j = \gamma\|x - x_j\|^2 - \log\alpha_j`, :math:`o = -\log\sum_j e^{-h_j}` with
  :math:`\gamma = 1/(2h^2)`, :math:`\alpha_j = w_j / (\sum w \cdot (2\pi h^2)^{d/2})`
  (seed 001 §3.e; Kauffmann et al., Pattern Recognit. 2020).
* ``OneClassSVM`` (RBF kernel): :math:`\mathrm{decision\_function}(x) = \sum_j \alpha_j
  e^{-\gamma\|x - s_j\|^2} - \rho = e^{-o(x)} - \rho` with the same distance + soft-min network
  for :math:`o(x)`; ``output="outlier_score"`` returns :math:`o(x)` itself.
* ``KMeans`` / ``MiniBatchKMeans``: cluster evidences
  :math:`f_k(x) = \mathrm{smin}^\beta_{l \ne k} (\|x - \mu_l\|^2 - \|x - \mu_k\|^2)`, the differences
  being linear, :math:`2(\mu_k - \mu_l)^\top (x - \tfrac{\mu_k + \mu_l}{2})`; β = ∞ (default) is
  the hard min (f_k > 0 exactly for the predicted cluster), finite β gives
  :math:`f_k = \frac1\beta\log\frac{p_k}{1 - p_k}` of the soft assignment
  :math:`p_k \propto e^{-\beta\|x - \mu_k\|^2}` (NEON: Kauffmann, Esders, Montavon, Samek &
  Müller, "From clustering to cluster explanations via neural networks", 2019/2022).
* ``LogisticRegression`` (multinomial or binary): log-likelihood ratios
  :math:`\ell_k = \log\frac{p_k}{1 - p_k} = -\log\sum_{l \ne k} e^{-(z_k - z_l)}`, the differences
  :math:`z_k - z_l = (w_k - w_l)^\top x + b_k - b_l` linear (seed 001 §3.e; Montavon et al. 2019).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .layers import PairwiseLinear, SoftMin, SquaredDistance
from .model import NeuralizedModel

SUPPORTED = ("KernelDensity", "OneClassSVM", "KMeans", "MiniBatchKMeans", "LogisticRegression")


def neuralize(estimator: Any, *, output: str | None = None, beta: float | None = None,
              dtype: torch.dtype = torch.float64) -> NeuralizedModel:
    """A ``NeuralizedModel`` strictly equivalent to the fitted scikit-learn ``estimator``.

    Args:
        estimator: a fitted ``KernelDensity`` (gaussian), ``OneClassSVM`` (rbf), ``KMeans`` /
            ``MiniBatchKMeans`` or ``LogisticRegression``.
        output: ``KernelDensity``: ``"outlier_score"`` (default, ``-score_samples``) or
            ``"log_density"`` (``score_samples``); ``OneClassSVM``: ``"decision_function"``
            (default) or ``"outlier_score"`` (``-log`` of the kernel sum, what ``neon`` explains).
        beta: stiffness of the soft-min over competing clusters (``KMeans`` only; default ∞,
            the hard min).
        dtype: of the network's buffers (inputs are cast to it); float64 reproduces
            scikit-learn to ~1e-12.

    A ``Pipeline`` of per-feature scalers (StandardScaler, MinMaxScaler, MaxAbsScaler,
    RobustScaler) ending in one of these estimators is supported too: the network takes the raw
    features and applies the scalers' elementwise affine map first.

    Returns ``[N, 1]`` outputs for the density / one-class models and ``[N, K]`` for k-means
    (clusters) and logistic regression (classes, in ``estimator.classes_`` order).
    """
    if type(estimator).__name__ == "Pipeline" and type(estimator).__module__.startswith("sklearn"):
        return _pipeline(estimator, output=output, beta=beta, dtype=dtype)
    name = type(estimator).__name__
    builders = {"KernelDensity": _kde, "OneClassSVM": _ocsvm, "KMeans": _kmeans, "MiniBatchKMeans": _kmeans,
                "LogisticRegression": _logistic}
    builder = next((builders[k.__name__] for k in type(estimator).__mro__ if k.__name__ in builders), None)
    if builder is None or not type(estimator).__module__.startswith("sklearn"):
        raise TypeError(f"neuralize needs a fitted scikit-learn estimator of type {', '.join(SUPPORTED)}; "
                        f"got {name} (from {type(estimator).__module__})")
    _check_fitted(estimator)
    if beta is not None and builder is not _kmeans:
        raise ValueError(f"beta= is the soft-min stiffness of k-means; {name} has no such option (got beta={beta!r})")
    if output is not None and builder not in (_kde, _ocsvm):
        raise ValueError(f"output= chooses the score of KernelDensity / OneClassSVM; {name} has one output")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    kwargs = {"output": output} if builder in (_kde, _ocsvm) else {"beta": beta} if builder is _kmeans else {}
    return builder(estimator, dtype=dtype, **kwargs).eval()


SCALERS = ("StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler")


def _pipeline(pipe: Any, **options: Any) -> NeuralizedModel:
    """A ``Pipeline`` of per-feature scalers and one supported estimator: the scalers become an
    elementwise affine map ``x * a + c`` in front of the network (relevance of a scaled feature is
    that feature's relevance)."""
    steps = [(n, s) for n, s in pipe.steps if s is not None and s != "passthrough"]
    if not steps:
        raise ValueError("neuralize: the Pipeline has no steps")
    *scalers, (_, last) = steps
    _check_fitted(pipe)
    scale, shift = None, None
    for step_name, step in scalers:
        kind = type(step).__name__
        if kind not in SCALERS or not type(step).__module__.startswith("sklearn"):
            raise TypeError(f"neuralize: Pipeline step {step_name!r} is a {kind}; only per-feature scalers "
                            f"({', '.join(SCALERS)}) may precede the estimator")
        a, c = _scaler_affine(step)
        scale, shift = (a, c) if scale is None else (scale * a, shift * a + c)
    model = neuralize(last, **options)
    if scale is not None:
        model.set_preprocessing(torch.as_tensor(scale), torch.as_tensor(shift))
        model.source = f"Pipeline({', '.join(type(s).__name__ for _, s in steps)})"
    return model


def _scaler_affine(step: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(a, c)`` with ``step.transform(x) == x * a + c`` per feature."""
    d = int(step.n_features_in_)
    ones, zeros = np.ones(d), np.zeros(d)
    kind = type(step).__name__
    if kind == "StandardScaler":
        mean = zeros if step.mean_ is None or not step.with_mean else np.asarray(step.mean_, dtype=np.float64)
        std = ones if step.scale_ is None or not step.with_std else np.asarray(step.scale_, dtype=np.float64)
        return 1.0 / std, -mean / std
    if kind == "MinMaxScaler":
        return np.asarray(step.scale_, dtype=np.float64), np.asarray(step.min_, dtype=np.float64)
    if kind == "MaxAbsScaler":
        return 1.0 / np.asarray(step.scale_, dtype=np.float64), zeros
    center = zeros if step.center_ is None or not step.with_centering else np.asarray(step.center_, dtype=np.float64)
    scale = ones if step.scale_ is None or not step.with_scaling else np.asarray(step.scale_, dtype=np.float64)
    return 1.0 / scale, -center / scale


def _check_fitted(estimator: Any) -> None:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise ValueError(f"neuralize: this {type(estimator).__name__} is not fitted yet; call .fit(X) first") from None


def _tensor(a: Any, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64)).to(dtype)


def _kde(est: Any, *, output: str | None, dtype: torch.dtype) -> NeuralizedModel:
    if est.kernel != "gaussian":
        raise ValueError(f"neuralize supports KernelDensity(kernel='gaussian') only (a log-sum-exp of squared "
                         f"distances); got kernel={est.kernel!r}")
    if est.metric != "euclidean":
        raise ValueError(f"neuralize supports KernelDensity(metric='euclidean') only; got metric={est.metric!r}")
    output = output or "outlier_score"
    if output not in ("outlier_score", "log_density"):
        raise ValueError(f"output={output!r} for KernelDensity; choose 'outlier_score' (-score_samples) or "
                         "'log_density' (score_samples)")
    data = np.asarray(est.tree_.data, dtype=np.float64)
    n, d = data.shape
    weights = np.ones(n) if est.tree_.sample_weight is None else np.asarray(est.tree_.sample_weight, dtype=np.float64)
    h = float(est.bandwidth_)
    keep = weights > 0
    log_alpha = np.log(weights[keep]) - np.log(weights.sum()) - 0.5 * d * np.log(2 * np.pi * h * h)
    first = SquaredDistance(_tensor(data[keep], dtype)[None], 1.0 / (2 * h * h), _tensor(-log_alpha, dtype)[None])
    link = "identity" if output == "outlier_score" else "negate"
    return NeuralizedModel(first, SoftMin(1.0), link=link, output=output, source="KernelDensity")


def _ocsvm(est: Any, *, output: str | None, dtype: torch.dtype) -> NeuralizedModel:
    if est.kernel != "rbf":
        raise ValueError(f"neuralize supports OneClassSVM(kernel='rbf') only (a log-sum-exp of squared distances); "
                         f"got kernel={est.kernel!r}")
    output = output or "decision_function"
    if output not in ("decision_function", "outlier_score"):
        raise ValueError(f"output={output!r} for OneClassSVM; choose 'decision_function' or 'outlier_score'")
    alpha = np.asarray(est.dual_coef_, dtype=np.float64).ravel()
    sv = np.asarray(est.support_vectors_, dtype=np.float64)
    keep = alpha > 0
    if not keep.any():
        raise ValueError("neuralize: this OneClassSVM has no support vector with a positive dual coefficient")
    gamma = float(est._gamma)
    first = SquaredDistance(_tensor(sv[keep], dtype)[None], gamma, _tensor(-np.log(alpha[keep]), dtype)[None])
    link = "decision_function" if output == "decision_function" else "identity"
    return NeuralizedModel(first, SoftMin(1.0), link=link, offset=float(np.ravel(est.intercept_)[0]),
                           output=output, source="OneClassSVM")


def _pairwise(weights_kd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[K, K-1, d]`` differences w_k - w_l (l != k) and the index l of each."""
    k = weights_kd.shape[0]
    others = np.array([[l for l in range(k) if l != c] for c in range(k)], dtype=np.int64).reshape(k, k - 1)
    return weights_kd[:, None, :] - weights_kd[others], others


def _kmeans(est: Any, *, beta: float | None, dtype: torch.dtype) -> NeuralizedModel:
    mu = np.asarray(est.cluster_centers_, dtype=np.float64)
    if mu.shape[0] < 2:
        raise ValueError("neuralize: k-means with one cluster has no competing cluster to compare with")
    beta = math.inf if beta is None else beta
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
        raise ValueError(f"beta must be a number > 0 (math.inf: hard min), got {beta!r}")
    diff, others = _pairwise(mu)                                 # μ_k - μ_l
    center = 0.5 * (mu[:, None, :] + mu[others])                 # midpoints
    first = PairwiseLinear(_tensor(2 * diff, dtype), _tensor(center, dtype), None)
    return NeuralizedModel(first, SoftMin(beta), output="cluster_evidence", source=type(est).__name__,
                           classes=list(range(mu.shape[0])))


def _logistic(est: Any, *, dtype: torch.dtype) -> NeuralizedModel:
    if getattr(est, "multi_class", "auto") == "ovr" and len(est.classes_) > 2:
        raise ValueError("neuralize supports multinomial (softmax) LogisticRegression; this one is one-vs-rest "
                         "(multi_class='ovr'), whose probabilities are not a softmax")
    coef = np.asarray(est.coef_, dtype=np.float64)
    intercept = np.broadcast_to(np.asarray(est.intercept_, dtype=np.float64), (coef.shape[0],))
    if coef.shape[0] == 1:          # binary: p_1 = σ(z), i.e. the softmax of (0, z)
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.array([0.0, intercept[0]])
    diff, others = _pairwise(coef)
    bias = intercept[:, None] - intercept[others]
    first = PairwiseLinear(_tensor(diff, dtype), None, _tensor(bias, dtype))
    return NeuralizedModel(first, SoftMin(1.0), output="log_likelihood_ratio", source="LogisticRegression",
                           classes=list(np.asarray(est.classes_).tolist()))

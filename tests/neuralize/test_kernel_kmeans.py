"""Kernel k-means as a network: equals the closed-form soft assignment; NEON conserves it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import propex

pytest.importorskip("sklearn")
from scipy.special import logsumexp            # noqa: E402
from sklearn.datasets import load_iris         # noqa: E402


def _reference(data, labels, x, gamma, beta):
    d2 = ((x[:, None, :] - data[None]) ** 2).sum(-1)
    classes = np.unique(labels)
    log_kde = np.stack([logsumexp(-gamma * d2[:, labels == k], 1) - np.log((labels == k).sum()) for k in classes], 1)
    lp = beta / gamma * log_kde
    lp = lp - logsumexp(lp, 1, keepdims=True)                      # log p_c
    return np.stack([-logsumexp(-(lp[:, [c]] - np.delete(lp, c, 1)), 1) for c in range(len(classes))], 1)


@pytest.mark.parametrize("gamma,beta", [(0.5, None), (0.5, 2.0), (3.0, 0.3)])
def test_kernel_kmeans_network_equals_the_soft_assignment(gamma, beta):
    data, labels = load_iris(return_X_y=True)
    labels = np.where(np.arange(150) < 12, 1, labels) * 10       # unequal clusters, labels 0/10/20
    net = propex.neuralize.kernel_kmeans(data, labels, gamma=gamma, beta=beta)
    assert net.classes == [0, 10, 20]
    x = torch.tensor(data[::5])
    out = net(x).detach().numpy()
    expected = _reference(data, labels, data[::5], gamma, gamma if beta is None else beta)
    assert np.abs(out - expected).max() < 1e-9
    torch.testing.assert_close(net.layered(x), net(x), rtol=0, atol=1e-9)     # the layered network form


@pytest.mark.parametrize("unequal", [False, True])
def test_neon_conserves_kernel_kmeans_evidence(unequal):
    data, labels = load_iris(return_X_y=True)       # rounded data: many equidistant pairs (ties)
    if unequal:
        labels = np.where(np.arange(150) < 12, 1, labels)
    net = propex.neuralize.kernel_kmeans(data, labels, gamma=0.5)
    x = torch.tensor(data[::3])
    exp = propex.explain(net, x, "neon", target=[[0, 1, 2]] * len(x))
    assert exp.attributions.shape == (len(x), 3, 4)
    torch.testing.assert_close(exp.attributions.sum(-1), net(x).detach(), rtol=0, atol=1e-9)
    assert exp.attributions.abs().sum(-1).max() < 10 * net(x).abs().max()       # no blow-up at ties


def test_kernel_kmeans_bad_arguments():
    data, labels = load_iris(return_X_y=True)
    with pytest.raises(ValueError, match="gamma must be a number > 0"):
        propex.neuralize.kernel_kmeans(data, labels, gamma=0)
    with pytest.raises(ValueError, match="beta must be a number > 0"):
        propex.neuralize.kernel_kmeans(data, labels, gamma=1.0, beta=-2)
    with pytest.raises(ValueError, match="labels must be a 1-D array of n=150"):
        propex.neuralize.kernel_kmeans(data, labels[:10], gamma=1.0)
    with pytest.raises(ValueError, match="at least two clusters"):
        propex.neuralize.kernel_kmeans(data, np.zeros(150), gamma=1.0)
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        propex.neuralize.kernel_kmeans(data[:, 0], labels, gamma=1.0)

"""``propex.blur``: Gaussian blur equal to ``scipy.ndimage.gaussian_filter(mode="reflect", truncate=4)``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from propex.baselines import blurred, resolve_baseline
from propex.blur import blur_matrix, gaussian_blur

ndimage = pytest.importorskip("scipy.ndimage")


def scipy_blur(a: np.ndarray, sigma: float, n_spatial: int = 2) -> np.ndarray:
    sigmas = (0,) * (a.ndim - n_spatial) + (sigma,) * n_spatial
    return ndimage.gaussian_filter(a, sigma=sigmas, mode="reflect", truncate=4.0)


@pytest.mark.parametrize("shape", [(16, 16), (7, 11)])
@pytest.mark.parametrize("sigma", [0.5, 2.0, 50.0, 0.3, 1.7])
def test_matches_scipy(shape, sigma):
    rng = np.random.default_rng(0)
    a = rng.random((2, 3, *shape))
    want = scipy_blur(a, sigma)
    got64 = gaussian_blur(torch.from_numpy(a), sigma)
    assert got64.dtype == torch.float64 and got64.shape == a.shape
    np.testing.assert_allclose(got64.numpy(), want, atol=1e-12, rtol=0)
    got32 = gaussian_blur(torch.from_numpy(a).float(), sigma)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sigma", [0.5, 2.0, 50.0])
def test_matches_scipy_one_spatial_dim(sigma):
    a = np.random.default_rng(1).random((2, 3, 13))
    np.testing.assert_allclose(gaussian_blur(torch.from_numpy(a), sigma).numpy(), scipy_blur(a, sigma, 1), atol=1e-12)


def test_large_sigma_tends_to_the_mean_and_preserves_mass():
    """With reflect boundaries the blur preserves the total (rows of B sum to 1, and for σ ≫ size
    every output is the image mean)."""
    a = torch.rand(1, 1, 7, 11, dtype=torch.float64)
    for length, sigma in ((7, 0.5), (11, 3.0), (16, 50.0)):
        b = blur_matrix(length, sigma, torch.float64)
        assert torch.allclose(b.sum(dim=1), torch.ones(length, dtype=torch.float64), atol=1e-12)
        assert torch.allclose(b.sum(dim=0), torch.ones(length, dtype=torch.float64), atol=1e-12)
    out = gaussian_blur(a, 1e4)
    assert torch.allclose(out, a.mean().expand_as(a), atol=1e-6)
    assert torch.allclose(gaussian_blur(a, 2.0).sum(), a.sum(), atol=1e-10)


def test_small_and_zero_sigma_are_identity():
    a = torch.rand(2, 1, 5, 5)
    assert torch.equal(gaussian_blur(a, 0.0), a)
    # scipy's radius int(4σ + 0.5) is 0 below σ = 0.125: the filter is the identity there too
    np.testing.assert_allclose(gaussian_blur(a.double(), 0.1).numpy(), scipy_blur(a.double().numpy(), 0.1), atol=1e-12)
    assert torch.allclose(gaussian_blur(a, 0.1), a)


def test_blur_is_differentiable_and_linear():
    a = torch.rand(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gaussian_blur(t, 1.3), (a,))
    b = torch.rand_like(a)
    lhs = gaussian_blur(2 * a - 3 * b, 0.8)
    assert torch.allclose(lhs, 2 * gaussian_blur(a, 0.8) - 3 * gaussian_blur(b, 0.8))


def test_integer_input_is_blurred_as_float():
    a = torch.randint(0, 10, (1, 1, 6, 6))
    out = gaussian_blur(a, 1.0)
    assert out.is_floating_point()
    np.testing.assert_allclose(out.numpy(), scipy_blur(a.float().numpy(), 1.0), atol=1e-5)


def test_bad_shapes_and_sigma():
    with pytest.raises(ValueError, match=r"\[N, C, H, W\].*\(4, 5\)"):
        gaussian_blur(torch.rand(4, 5), 1.0)
    with pytest.raises(ValueError, match=r"shape"):
        gaussian_blur(torch.rand(1, 1, 2, 3, 4), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        blur_matrix(5, -1.0)


def test_blur_baseline_uses_a_tenth_of_the_image_size():
    x = torch.rand(2, 3, 10, 20, dtype=torch.float64)
    want = scipy_blur(x.numpy(), 2.0)                    # max(H, W) / 10
    np.testing.assert_allclose(blurred(x).numpy(), want, atol=1e-12)
    (b,) = resolve_baseline("blur", (x,), False)
    np.testing.assert_allclose(b.numpy(), want, atol=1e-12)

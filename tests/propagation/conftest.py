"""Shared fixtures of the propagation-engine tests.

``torchvision_model(name, dtype)`` builds a torchvision architecture with random weights
(``weights=None``; nothing is downloaded) once per session and hands out the cached
instance. By default every BatchNorm gets random running statistics and affine parameters
(by the same generic code for every architecture), so that a wrong BatchNorm
canonization cannot hide behind the identity BatchNorm of a freshly initialised model. Tests must not modify
the models they receive (propex promises not to; ``model_snapshot`` checks it).
"""
from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

from propex.models.random_init import randomize_batch_norm

#: small inputs: every architecture below (five 2× downsamplings) accepts 32×32
IMAGE_SIZE = 32


@functools.lru_cache(maxsize=None)
def _torchvision_model(name: str, dtype: torch.dtype, random_bn: bool = True) -> nn.Module:
    if random_bn:
        model = _torchvision_model(name, dtype, False)
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            return model                     # nothing to randomize: share the instance
        return randomize_batch_norm(copy.deepcopy(model), seed=1)
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).to(dtype).eval()




@pytest.fixture(scope="session")
def torchvision_model():
    """``torchvision_model(name, dtype=torch.float64, random_bn=True)``: a cached eval-mode model with
    random weights (``torch.manual_seed(0)``); ``random_bn=False`` keeps torchvision's initial
    BatchNorm (the identity: mean 0, variance 1, weight 1, bias 0)."""
    def build(name: str, dtype: torch.dtype = torch.float64, random_bn: bool = True) -> nn.Module:
        return _torchvision_model(name, dtype, random_bn)
    return build


@pytest.fixture
def image():
    """``image(n=1, dtype=torch.float64, seed=0)``: a standard-normal batch ``[n, 3, 32, 32]``."""
    def make(n: int = 1, dtype: torch.dtype = torch.float64, seed: int = 0, size: int = IMAGE_SIZE) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(n, 3, size, size, generator=gen).to(dtype)
    return make


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (0 when both are zero)."""
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / scale if scale > 0 else diff


@pytest.fixture(scope="session")
def relative_error():
    return rel_err

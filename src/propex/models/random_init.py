"""Random BatchNorm statistics for models built with random weights (tests and benchmarks)."""
from __future__ import annotations

import torch
from torch import nn


def randomize_batch_norm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random running statistics and affine parameters (in place; returns ``model``).

    A freshly initialised BatchNorm is the identity (mean 0, variance 1, weight 1, bias 0): with
    bias-free convolutions every activation of a zero reference is then 0, so DeepLIFT's secants
    equal the gradient and an un-merged BatchNorm conserves relevance — both hide exactly the
    bugs a test or the torchvision sweep looks for. Drawn: mean 0.1·N(0,1), variance 0.5 + U(0,1),
    weight 0.5 + U(0,1), bias 0.1·N(0,1).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                if m.affine:
                    m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                    m.bias.copy_(0.1 * torch.randn(n, generator=gen))
    return model

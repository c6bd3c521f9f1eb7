"""The autograd functions that turn one backward pass into a relevance (or multiplier) pass.

Each has an ordinary forward (the value the model computes) and a backward that maps
the incoming message (relevance for LRP, a multiplier for DeepLIFT, a gradient for
Guided Backprop) to what flows to its inputs. Rules compose them around the model's
own ops, so the expensive part of every backward (the transposed convolution or matrix
product) is the native one.
"""
from __future__ import annotations

import torch
from torch import Tensor


class ModInput(torch.autograd.Function):
    """Forward: ``m`` (a modified copy of x, e.g. its positive part). Backward: ``g ⊙ m`` to x.

    Feeding ``ModInput(x, m)`` into a linear op F gives the term value ``F(m)`` in the
    forward and the term's relevance share ``m ⊙ Fᵀ(s)`` in the backward.
    """

    @staticmethod
    def forward(ctx, x: Tensor, m: Tensor) -> Tensor:
        ctx.save_for_backward(m)
        return m.view_as(m)

    @staticmethod
    def backward(ctx, g: Tensor):
        (m,) = ctx.saved_tensors
        return g * m, None


class Combine(torch.autograd.Function):
    """Forward: ``value`` (the layer's true output). Backward: branch i gets ``g ⊙ coefs[i]``."""

    @staticmethod
    def forward(ctx, value: list[Tensor], coefs: tuple[Tensor, ...], *branches: Tensor) -> Tensor:
        # value comes wrapped in a list so that autograd does not count it as an input: the
        # fresh tensor is returned as is (no copy)
        ctx.save_for_backward(*coefs)
        return value[0]

    @staticmethod
    def backward(ctx, g: Tensor):
        return (None, None, *(g * c for c in ctx.saved_tensors))


class PassThrough(torch.autograd.Function):
    """Forward: ``y`` (already computed from x). Backward: the message reaches ``x`` unchanged."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor) -> Tensor:
        return y.detach()

    @staticmethod
    def backward(ctx, g: Tensor):
        return g, None


class RowMultiplier(torch.autograd.Function):
    """Forward: ``y`` (computed from x). Backward: ``g ⊙ m`` to the first ``len(m)`` rows of x and
    0 to the rest (DeepLIFT's stacked [x; reference] rows: the message never reaches the reference)."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, m: Tensor) -> Tensor:
        ctx.save_for_backward(m)
        return y.detach()

    @staticmethod
    def backward(ctx, g: Tensor):
        (m,) = ctx.saved_tensors
        b = m.shape[0]
        out = torch.empty_like(g)
        torch.mul(g[:b], m, out=out[:b])
        out[b:].zero_()
        return out, None, None


class Split(torch.autograd.Function):
    """Forward: ``y`` (computed from the operands). Backward: operand i gets ``g ⊙ shares[i]``."""

    @staticmethod
    def forward(ctx, y: Tensor, shares: tuple[Tensor, ...], *operands: Tensor) -> Tensor:
        ctx.save_for_backward(*shares)
        ctx.shapes = [o.shape for o in operands]
        return y.detach()

    @staticmethod
    def backward(ctx, g: Tensor):
        grads = []
        for share, shape in zip(ctx.saved_tensors, ctx.shapes):
            part = g * share
            grads.append(_sum_to(part, shape))
        return (None, None, *grads)


def _sum_to(t: Tensor, shape: torch.Size) -> Tensor:
    """Undo broadcasting: sum ``t`` down to ``shape``."""
    if t.shape == shape:
        return t
    while t.dim() > len(shape):
        t = t.sum(0)
    dims = [i for i, (a, b) in enumerate(zip(t.shape, shape)) if b == 1 and a != 1]
    return t.sum(dims, keepdim=True) if dims else t


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """``z + ε·sign(z)`` with sign(+0) = +1: the LRP denominator never crosses zero."""
    return z.abs().add_(epsilon).copysign_(z)


def inverse(z: Tensor, epsilon: float) -> Tensor:
    """``1 / stabilize(z, ε)``; with ε = 0, 0 where z = 0 (0/0 is taken as 0).

    Written as in-place passes over one new tensor: these run on every activation of the
    network, so each extra elementwise pass shows in the time of a propagation.
    """
    if epsilon > 0:
        return stabilize(z, epsilon).reciprocal_()
    # |z| <= tiny counts as 0: 1/z there would overflow a relevance message to inf (float32)
    return torch.reciprocal(z).masked_fill_(z.abs() <= tiny(z.dtype), 0.0)


def tiny(dtype: torch.dtype) -> float:
    """Denominators at or below this are treated as 0 by the unstabilised rules: sqrt of the
    smallest normal number (1e-19 in float32), so that R/z stays finite for any sane R."""
    return torch.finfo(dtype).tiny ** 0.5

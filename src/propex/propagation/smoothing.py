r"""β-smoothing: gradients of ReLU networks with each ReLU's derivative replaced by softplus_β's.

The forward pass is unchanged; in the backward pass every ReLU (module, functional or
in-place) uses :math:`\frac{d}{dx}\,\mathrm{softplus}_\beta(x) = \sigma(\beta x)` instead of
the step :math:`1[x > 0]`, which removes the discontinuities that make gradient explanations
fragile (seed 004). As β → ∞ the ordinary gradient is recovered.

Dombrowski et al., "Explanations can be manipulated and geometry is to blame", NeurIPS 2019.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from .engine import Policy
from .tracing import ModuleStack, OpCall, PropagationMode

_RELUS = {F.relu, torch.relu, Tensor.relu, getattr(torch, "relu_", None), getattr(Tensor, "relu_", None),
          getattr(F, "relu_", None)}


class _SoftplusGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, beta: float) -> Tensor:
        # the derivative, not x: an in-place ReLU will overwrite x
        ctx.save_for_backward(torch.sigmoid(beta * x.detach()))
        return y.detach()

    @staticmethod
    def backward(ctx, g: Tensor):
        (slope,) = ctx.saved_tensors
        return g * slope, None, None


class BetaSmoothPolicy(Policy):
    """Every op runs as usual; ReLUs get the softplus_β derivative in the backward pass."""

    def __init__(self, beta: float):
        super().__init__("warn")
        self.beta = beta

    @staticmethod
    def tracked(t: Any) -> bool:
        return isinstance(t, Tensor) and t.requires_grad

    def __call__(self, call: OpCall) -> Any:
        if call.func in _RELUS:
            x = next(a for a in call.args if isinstance(a, Tensor))
            return _SoftplusGradient.apply(x, call.value(), self.beta)
        return call.run()


def check_beta(beta: Any) -> float | None:
    if beta is None:
        return None
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
        raise ValueError(f"beta_smooth must be a number > 0 (the softplus β) or None, got {beta!r}")
    return float(beta)


@contextlib.contextmanager
def beta_smoothing(model: Any, beta: float | None) -> Iterator[None]:
    """Within this context, backward passes through ``model``'s ReLUs use softplus_β derivatives."""
    if beta is None:
        yield
        return
    with PropagationMode(BetaSmoothPolicy(beta), ModuleStack(model)):
        yield

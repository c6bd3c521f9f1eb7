"""Guided Backpropagation and Deconvnet on the propagation engine."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..api import register
from .engine import Policy, PropagationMethod, first_graph_arg
from .tracing import OpCall, UnsupportedOpError

_RELU_LIKE = {F.relu, torch.relu, torch.Tensor.relu, getattr(torch, "relu_", None), getattr(torch.Tensor, "relu_", None),
              getattr(F, "relu_", None)}


class _GuidedReLU(torch.autograd.Function):
    """Backward: ``local_grad ⊙ relu(g)`` (Guided Backprop) or ``relu(g)`` (Deconvnet)."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, local: Tensor | None) -> Tensor:
        ctx.save_for_backward(local if local is not None else torch.ones(()))
        ctx.has_local = local is not None
        return y.detach()

    @staticmethod
    def backward(ctx, g: Tensor):
        (local,) = ctx.saved_tensors
        out = g.clamp_min(0)
        return (out * local if ctx.has_local else out), None, None


class GuidedPolicy(Policy):
    def __init__(self, deconv: bool, unknown_ops: str):
        super().__init__(unknown_ops)
        self.deconv = deconv

    def on_activation(self, call: OpCall) -> Any:
        x = first_graph_arg(call)
        y = call.value()
        if self.deconv:
            if call.func not in _RELU_LIKE:
                raise UnsupportedOpError(f"Deconvnet is defined for ReLU networks; {call.where()} is another "
                                         "activation (use guided_backprop, which is defined for any activation)")
            return _GuidedReLU.apply(x, y, None)
        with torch.enable_grad():
            xx = x.detach().requires_grad_()
            yy = call.run(*[xx if a is x else a for a in call.args])
            (local,) = torch.autograd.grad(yy, xx, torch.ones_like(yy))
        return _GuidedReLU.apply(x, y, local)

    def on_linear(self, call: OpCall) -> Any:
        return call.run()

    on_batch_norm = on_pool = on_max_pool = on_add = on_sub = on_mul = on_div = on_neg = on_linear


class _GuidedBase(PropagationMethod):
    deconv = False

    def make_policy(self, inputs, n_linear) -> Policy:
        return GuidedPolicy(self.deconv, self.unknown_ops)


@register
class GuidedBackprop(_GuidedBase):
    r"""Guided Backpropagation: the gradient, except that every activation passes back only positive
    signals through its active units, :math:`g_{in} = f'(x) \odot \max(g_{out}, 0)` (for ReLU:
    :math:`1[x > 0]\, 1[g > 0]\, g`).

    Springenberg et al., "Striving for Simplicity: The All Convolutional Net", ICLR workshop 2015.
    Works on functional, in-place and reused ReLUs (the hooks of Captum see only ``nn.ReLU`` modules).
    """

    name = "guided_backprop"
    aliases = ("guided_backpropagation", "guidedbackprop")


@register
class Deconvnet(_GuidedBase):
    r"""Deconvnet: the gradient, except that every ReLU passes back :math:`\max(g_{out}, 0)` regardless
    of its input. Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014.
    Refuses activations other than ReLU (it is not defined for them)."""

    name = "deconvnet"
    aliases = ("deconvolution", "deconv")
    deconv = True

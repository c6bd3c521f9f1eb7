r"""``beta_smooth`` for second-order methods: ReLUs replaced by softplus_β in the forward pass.

A ReLU network is piecewise linear: its Hessian is zero almost everywhere, so Taylor
interactions and Integrated Hessians of a ReLU net see nothing but the first-order terms.
Janizek, Sturmfels & Lee (JMLR 2021, Sec. 4.3) therefore replace every ReLU by
:math:`\mathrm{softplus}_\beta(x) = \frac{1}{\beta}\log(1 + e^{\beta x})`, which tends to the
ReLU as β → ∞ and is twice differentiable.

Unlike the gradient engine's ``beta_smooth`` (forward unchanged, only the ReLU's *derivative*
replaced, :mod:`propex.propagation.smoothing`), the second derivative needs a genuine
twice-differentiable function, so here the *forward* is the softplus network f̃: the
interactions explain f̃, and ``delta`` / ``outputs`` refer to f̃ (|f̃ - f| ≤ log 2 / β per
unit before propagation through later layers).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

_OUT_OF_PLACE = {F.relu, torch.relu, Tensor.relu}
_IN_PLACE = {f for f in (getattr(torch, "relu_", None), getattr(Tensor, "relu_", None), getattr(F, "relu_", None))
             if f is not None}


class _SoftplusMode(TorchFunctionMode):
    def __init__(self, beta: float):
        super().__init__()
        self.beta = beta

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        inplace = func in _IN_PLACE or (func is F.relu and (kwargs.get("inplace") or (len(args) > 1 and args[1])))
        if func in _OUT_OF_PLACE or func in _IN_PLACE:
            x = args[0]
            if not inplace:
                return F.softplus(x, beta=self.beta)
            # code may ignore the return value of an in-place ReLU: write the result back
            return x.copy_(F.softplus(x.clone(), beta=self.beta))
        return func(*args, **kwargs)


@contextlib.contextmanager
def softplus_forward(beta: float | None) -> Iterator[None]:
    """Within this context every ReLU (module, functional, method, in-place) computes softplus_β."""
    if beta is None:
        yield
        return
    with _SoftplusMode(beta):
        yield

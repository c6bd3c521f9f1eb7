r"""DeepLIFT's RevealCancel rule, computed on *differences* carried beside the values.

The model runs on the stacked rows [x; reference] with plain tensors; next to every tensor
that depends on x the policy keeps its difference from the reference as a differentiable
function of Δx (rows of the reference half are zero). After a conv/dense op the difference is
split into the parts with positive and negative contributions,

.. math:: \Delta z^+ = W^+ \Delta x^+ + W^- \Delta x^-, \qquad \Delta z^- = W^+ \Delta x^- + W^- \Delta x^+

(the linear rule of Shrikumar et al. §3.5.1: input j counts as positive for output k when
:math:`w_{kj}\Delta x_j > 0`); batch norm, sums, pooling and reshapes carry both parts; at an
element-wise nonlinearity :math:`y = f(x)` with reference input :math:`x_0`

.. math:: \Delta y^+ = \tfrac12\big(f(x_0{+}\Delta x^+) - f(x_0)\big) + \tfrac12\big(f(x_0{+}\Delta x^-{+}\Delta x^+) - f(x_0{+}\Delta x^-)\big)

(and symmetrically :math:`\Delta y^-`), and the parts are scaled by :math:`m^\pm = \Delta y^\pm/\Delta x^\pm`.
Differences are piecewise linear and homogeneous in Δx with these multipliers fixed, so the
contributions :math:`C = \Delta x \odot \nabla_{\Delta x}\Delta f` sum exactly to :math:`\Delta f`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .deeplift import _EPS, _halves, maxpool_multipliers
from .engine import Policy
from .lrp import linear_parts
from .tracing import OpCall, UnsupportedOpError


@dataclass
class Diff:
    """The difference of a tensor from its reference value: one part, or positive + negative parts."""

    pos: Tensor
    neg: Tensor | None = None

    def total(self) -> Tensor:
        return self.pos if self.neg is None else self.pos + self.neg

    def parts(self) -> tuple[Tensor, Tensor]:
        if self.neg is not None:
            return self.pos, self.neg
        return self.pos.clamp_min(0), self.pos.clamp_max(0)

    def map(self, fn) -> "Diff":
        return Diff(fn(self.pos), None if self.neg is None else fn(self.neg))


class RevealCancelPolicy(Policy):
    """Carries differences beside the values (see the module docstring)."""

    def __init__(self, unknown_ops: str = "raise"):
        super().__init__(unknown_ops)
        self._diffs: dict[int, tuple[Tensor, Diff]] = {}

    def tracked(self, t: Any) -> bool:
        return isinstance(t, Tensor) and id(t) in self._diffs and self._diffs[id(t)][0] is t

    def register(self, value: Tensor, diff: Diff) -> Tensor:
        self._diffs[id(value)] = (value, diff)
        return value

    def alias(self, target: Tensor, out: Tensor) -> None:
        """An in-place op wrote ``out`` into ``target``: target now has out's difference."""
        if self.tracked(out):
            self.register(target, self.diff(out))

    def diff(self, t: Tensor) -> Diff:
        return self._diffs[id(t)][1]

    def _tracked_args(self, call: OpCall) -> list[Tensor]:
        return [a for a in (*call.args, *call.kwargs.values()) if self.tracked(a)]

    def _substitute(self, call: OpCall, pick) -> tuple[list, dict]:
        def sub(a: Any) -> Any:
            if self.tracked(a):
                return pick(self.diff(a))
            if isinstance(a, (list, tuple)):
                return type(a)(sub(x) for x in a)
            return a
        return [sub(a) for a in call.args], {k: sub(v) for k, v in call.kwargs.items()}

    def _apply_parts(self, call: OpCall, values: Any, split: bool) -> Any:
        """Run the op on the difference parts as well and attach them to the outputs."""
        if split:
            pa, pk = self._substitute(call, lambda d: d.parts()[0])
            na, nk = self._substitute(call, lambda d: d.parts()[1])
            pos, neg = call.run(*pa, **pk), call.run(*na, **nk)
        else:
            ta, tk = self._substitute(call, lambda d: d.total())
            pos, neg = call.run(*ta, **tk), None
        return self._attach(values, pos, neg)

    def _attach(self, values: Any, pos: Any, neg: Any) -> Any:
        if isinstance(values, Tensor):
            return self.register(values, Diff(pos, neg))
        if isinstance(values, (list, tuple)):
            items = [self._attach(v, p, None if neg is None else n)
                     for v, p, n in zip(values, pos, neg if neg is not None else [None] * len(values))]
            return type(values)(items) if not hasattr(values, "_fields") else type(values)(*items)
        return values

    def _any_split(self, call: OpCall) -> bool:
        return any(self.diff(a).neg is not None for a in self._tracked_args(call))

    # ops ---------------------------------------------------------------------------------
    def on_route(self, call: OpCall) -> Any:
        return self._apply_parts(call, call.run(), self._any_split(call))

    def on_identity(self, call: OpCall) -> Any:
        return self.on_route(call)

    on_pool = on_route      # non-negative linear maps keep the sign of each part

    def on_linear(self, call: OpCall) -> Any:
        x, w, b, fn = linear_parts(call)
        if self.tracked(w) or not self.tracked(x):
            raise UnsupportedOpError(f"DeepLIFT: {call.where()} has input-dependent weights; no rule for that yet")
        y = call.run()
        diff = self.diff(x)
        d = diff.total()
        # the linear rule splits by the sign of each input's total difference; a total that is zero
        # up to rounding (a unit whose positive and negative parts cancel) counts as zero, as the
        # paper's indicator 1[w Δx > 0] does, instead of flipping with the last bit
        tol = 0.0 if diff.neg is None else 1e-9 * (diff.pos.abs() + diff.neg.abs()).detach()
        zero = torch.zeros_like(d)
        dp = torch.where(d > tol, d, zero)
        dn = torch.where(d < -tol if diff.neg is not None else d < 0, d, zero)
        wp, wn = w.clamp_min(0), w.clamp_max(0)
        pos = fn(dp, wp, None) + fn(dn, wn, None)
        neg = fn(dn, wp, None) + fn(dp, wn, None)
        return self.register(y, Diff(pos, neg))

    def on_batch_norm(self, call: OpCall) -> Any:
        args = list(call.args) + [None] * 8
        kw = call.kwargs
        x, var = args[0], kw.get("running_var", args[2])
        weight = kw.get("weight", args[3])
        eps = kw.get("eps", args[7] if args[7] is not None else 1e-5)
        if kw.get("training", args[5]) or var is None:
            raise UnsupportedOpError(f"DeepLIFT: {call.where()} runs in training mode; call model.eval()")
        scale = ((1.0 if weight is None else weight) / torch.sqrt(var + eps)).reshape(1, -1, *[1] * (x.dim() - 2))
        return self.register(call.run(), _scaled(self.diff(x), scale))

    def on_mul(self, call: OpCall) -> Any:
        a, b = call.args[0], call.args[1] if len(call.args) > 1 else call.kwargs.get("other")
        y = call.run()
        if self.tracked(a) and self.tracked(b):
            a1, a0 = _halves(a)
            b1, b0 = _halves(b)
            mean_a, mean_b = torch.cat([(a1 + a0) / 2] * 2), torch.cat([(b1 + b0) / 2] * 2)
            return self.register(y, Diff(self.diff(a).total() * mean_b + self.diff(b).total() * mean_a))
        x, c = (a, b) if self.tracked(a) else (b, a)
        return self.register(y, _scaled(self.diff(x), torch.as_tensor(c, dtype=y.dtype, device=y.device)))

    def on_neg(self, call: OpCall) -> Any:
        x = self._tracked_args(call)[0]
        return self.register(call.run(), _scaled(self.diff(x), torch.tensor(-1.0, dtype=x.dtype)))

    def on_div(self, call: OpCall) -> Any:
        a, b = call.args[0], call.args[1] if len(call.args) > 1 else call.kwargs.get("other")
        if self.tracked(b):
            raise UnsupportedOpError(f"DeepLIFT: {call.where()} divides by a tensor that depends on the input")
        y = call.run()
        return self.register(y, _scaled(self.diff(a), 1.0 / torch.as_tensor(b, dtype=y.dtype, device=y.device)))

    def on_add(self, call: OpCall) -> Any:
        return self._sum(call, 1.0)

    def on_sub(self, call: OpCall) -> Any:
        return self._sum(call, -1.0)

    def _sum(self, call: OpCall, sign: float) -> Any:
        a, b = call.args[0], call.args[1] if len(call.args) > 1 else call.kwargs.get("other")
        if call.func is torch.Tensor.__rsub__:       # x.__rsub__(c) is c - x
            a, b = b, a
        alpha = sign * call.kwargs.get("alpha", 1)
        y = call.run()
        if self.tracked(a) and self.tracked(b):
            # a sum is a linear layer with unit weights: its terms split by the sign of their contribution
            da, db = self.diff(a), _scaled(self.diff(b), torch.as_tensor(alpha, dtype=y.dtype))
            (ap, an), (bp, bn) = da.parts(), db.parts()
            return self.register(y, Diff(_bcast(ap + bp, y), _bcast(an + bn, y)))
        if self.tracked(a):
            return self.register(y, self.diff(a).map(lambda t: _bcast(t, y)))
        return self.register(y, _scaled(self.diff(b), torch.as_tensor(alpha, dtype=y.dtype)).map(lambda t: _bcast(t, y)))

    def on_max_pool(self, call: OpCall) -> Any:
        x = self._tracked_args(call)[0]
        kwargs = dict(call.kwargs)
        args = list(call.args)
        if len(args) > 6:
            args[6] = True
        else:
            kwargs["return_indices"] = True
        with torch.no_grad():
            y, idx = call.func(x, *args[1:], **kwargs)
        dy = y - torch.cat([_halves(y)[1]] * 2)
        return self.register(y, Diff(_MaxPoolDiff.apply(self.diff(x).total(), dy, x, y, idx)))

    def on_activation(self, call: OpCall) -> Any:
        x = self._tracked_args(call)[0]
        y = call.run()
        d = self.diff(x)
        x1, x0 = _halves(x)
        f = lambda t: call.run(*[t if a is x else a for a in call.args])  # noqa: E731
        if d.neg is None:                          # no sign split known: the Rescale rule
            dx = x1 - x0
            dy = _halves(y)[0] - _halves(y)[1]
            m = self._secant(dy, dx, x, f)
            return self.register(y, Diff(d.pos * m))
        p1, n1 = _halves(d.pos)[0], _halves(d.neg)[0]
        base = f(torch.cat([x0, x0]))[: x0.shape[0]]
        at = lambda t: f(torch.cat([t, t]))[: t.shape[0]]  # noqa: E731
        both = at(x0 + p1 + n1)
        dy_pos = 0.5 * (at(x0 + p1) - base) + 0.5 * (both - at(x0 + n1))
        dy_neg = 0.5 * (at(x0 + n1) - base) + 0.5 * (both - at(x0 + p1))
        m_pos = self._secant(dy_pos, p1, x, f)
        m_neg = self._secant(dy_neg, n1, x, f)
        return self.register(y, Diff(d.pos * m_pos, d.neg * m_neg))

    @staticmethod
    def _secant(dy: Tensor, dx: Tensor, x: Tensor, f) -> Tensor:
        small = dx.abs() < _EPS
        m = dy / torch.where(small, torch.ones_like(dx), dx)
        if bool(small.any()):
            with torch.enable_grad():
                xx = _halves(x)[0].detach().requires_grad_()
                yy = f(torch.cat([xx, xx]))[: xx.shape[0]]
                (g,) = torch.autograd.grad(yy, xx, torch.ones_like(yy))
            m = torch.where(small, g, m)
        return torch.cat([m, m]).detach()


def _scaled(d: Diff, c: Tensor) -> Diff:
    """The difference of c·x: a negative factor swaps the positive and negative parts."""
    if d.neg is None:
        return Diff(d.pos * c)
    cp, cn = c.clamp_min(0), c.clamp_max(0)
    return Diff(d.pos * cp + d.neg * cn, d.neg * cp + d.pos * cn)


def _bcast(t: Tensor, like: Tensor) -> Tensor:
    return t if t.shape == like.shape else t.expand_as(like)


class _MaxPoolDiff(torch.autograd.Function):
    """Forward: the output difference. Backward: DeepLIFT's max-pooling multipliers."""

    @staticmethod
    def forward(ctx, d: Tensor, dy: Tensor, x: Tensor, y: Tensor, idx: Tensor) -> Tensor:
        # copies: the model may modify x or y in place after the pooling (e.g. an in-place ReLU)
        ctx.save_for_backward(x.clone(), y.clone(), idx)
        return dy.clone()

    @staticmethod
    def backward(ctx, g: Tensor):
        x, y, idx = ctx.saved_tensors
        grad = maxpool_multipliers(_halves(g)[0], x, y, idx)
        return torch.cat([grad, torch.zeros_like(grad)]), None, None, None, None

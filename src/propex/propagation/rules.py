r"""LRP rules for linear ops (conv, linear), parameter-free linear maps and element-wise ops.

A linear op computes :math:`z_k = \sum_j x_j w_{jk} + b_k`. Each rule redistributes the
relevance :math:`R_k` of its outputs to its inputs. Most rules are sums of *terms*
:math:`(m(x), W', b')` — a modified input, modified weights and bias — and read

.. math:: R_j = \sum_{\text{terms } t} c_t \; m_t(x)_j \sum_k w'_{t,jk}\, \frac{R_k}{d_{t,k}}

with a denominator :math:`d` built from the term outputs :math:`z_t = F(m_t(x); W'_t, b'_t)`
and stabilised as :math:`d + \epsilon\,\mathrm{sign}(d)` (sign(0) = +1). The engine evaluates
each term with the op itself, so the backward pass uses the native transposed op.

Parameters are plain attributes (see ``repr``). ``ignore_bias`` (set by the method) drops
every bias from the terms, so relevance is conserved exactly.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .functions import Combine, ModInput, inverse, tiny

LinearFn = Callable[[Tensor, Tensor, Tensor | None], Tensor]


@dataclass
class LinearCall:
    """A linear op ``fn(x, weight, bias)`` seen in the forward pass, for a rule to rewrite."""

    x: Tensor                 # the graph input
    weight: Tensor | None     # None for parameter-free maps (pooling, sums)
    bias: Tensor | None
    fn: LinearFn
    ignore_bias: bool = False
    nonneg: bool = False              # x is known to be >= 0 (e.g. a ReLU output): terms with x⁻ vanish
    cached: Tensor | None = None      # the op's output, when already computed
    # A positive factor per output channel (shaped to broadcast against the output) that the
    # weight is multiplied by: the op is fn(x, w, None)·s + b. Batch norm merged into a conv uses
    # it instead of materialising w·s: the rules' weight modifications (w⁺, w + γw⁺, ...) are
    # positively homogeneous, so each term is fn(m, w', None)·s + b' (w² materialises w·s).
    out_scale: Tensor | None = None

    def value(self) -> Tensor:
        """The op's true output (a fresh tensor without autograd history)."""
        if self.cached is not None:
            return self.cached
        with torch.no_grad():
            if self.out_scale is None:
                return self.fn(self.x, self.weight, self.bias)
            return self.scaled(self.fn(self.x, self.weight, None), self.bias)

    def scaled(self, y: Tensor, bias: Tensor | None) -> Tensor:
        """``y·s + bias`` for a term computed with an unscaled weight and no bias."""
        if bias is None:
            return y * self.out_scale
        return torch.addcmul(bias.reshape(self.out_scale.shape), y, self.out_scale)   # one pass

    def full_weight(self) -> Tensor | None:
        """The weight with ``out_scale`` folded in (for rules that are not homogeneous in w)."""
        if self.out_scale is None or self.weight is None:
            return self.weight
        return self.weight * self.out_scale.reshape((-1,) + (1,) * (self.weight.dim() - 1))


def _pos(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp_min(0)


def _neg(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp_max(0)


class Rule:
    """Base class of LRP rules for linear ops."""

    name = "rule"
    applies_to = frozenset({"linear", "batch_norm", "pool"})   # the op kinds a composite may give it to

    def apply(self, call: LinearCall) -> Tensor:
        raise NotImplementedError

    def _terms(self, call: LinearCall, terms: list[tuple[Tensor, Tensor | None, Tensor | None]]
               ) -> list[Tensor]:
        """Forward each (modified input, weight, bias) term through the op, wired to x."""
        out = []
        for m, w, b in terms:
            m = m.detach()
            b = None if call.ignore_bias or b is None else b.detach()
            w = None if w is None else w.detach()
            if call.out_scale is None:
                out.append(call.fn(ModInput.apply(call.x, m), w, b))
            else:
                out.append(call.scaled(call.fn(ModInput.apply(call.x, m), w, None), b))
        return out

    def _combine(self, call: LinearCall, value: Tensor, branches: list[Tensor], coefs: list[Tensor]) -> Tensor:
        if call.ignore_bias:
            branches, coefs = self._cover_empty_units(call, branches, coefs)
        return Combine.apply([value.detach()], tuple(c.detach() for c in coefs), *branches)

    def _cover_empty_units(self, call: LinearCall, branches: list[Tensor], coefs: list[Tensor]
                           ) -> tuple[list[Tensor], list[Tensor]]:
        r"""Give the relevance of units the rule cannot place to their receptive field, by w².

        With biases kept out of the relevance, a rule passes the fraction
        :math:`q_k = \sum_t c_{t,k} z_{t,k}` of :math:`R_k` down (1 for a conservative rule). It is
        exactly 0 where every term is 0, i.e. where all inputs of unit k are 0 and the unit is
        active only through its bias (after depthwise convolutions with merged batch norm this is
        common). No proportional rule can place that relevance; propex spreads it by the w² rule
        (flat for parameter-free maps), which depends on the weights only, so conservation holds.
        Zennit drops it.
        """
        share = sum(c * b.detach() for c, b in zip(coefs, branches))
        empty = share == 0
        if not bool(empty.any()):
            return branches, coefs
        w = None if call.weight is None else call.weight.detach() ** 2
        (z,) = self._terms(call, [(torch.ones_like(call.x), w, None)])
        fallback = empty.to(z.dtype) * inverse(z.detach(), 0.0)
        return branches + [z], coefs + [fallback]

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


@dataclass(repr=False)
class Epsilon(Rule):
    r"""LRP-ε (Bach et al. 2015): :math:`R_j = x_j \sum_k w_{jk} R_k / (z_k + \epsilon\,\mathrm{sign}(z_k))`.

    ``epsilon=0`` is LRP-0 (0/0 is taken as 0).
    """

    epsilon: float = 1e-6

    def apply(self, call: LinearCall) -> Tensor:
        (z,) = self._terms(call, [(call.x, call.weight, call.bias)])
        inv = inverse(z.detach(), self.epsilon)
        # without ignore_bias the branch's own value is the output: no second forward
        value = call.value() if call.ignore_bias and call.bias is not None else z
        return self._combine(call, value, [z], [inv])


def Zero() -> Epsilon:  # noqa: N802 - a rule constructor
    """LRP-0: ``Epsilon(epsilon=0)``."""
    return Epsilon(0.0)


@dataclass(repr=False)
class Norm(Epsilon):
    r"""Proportional redistribution for parameter-free linear maps (sums, average pooling):
    :math:`R_j = x_j\, \partial z_k/\partial x_j\, R_k / (z_k + \epsilon\,\mathrm{sign}(z_k))`."""

    applies_to = frozenset({"linear", "batch_norm", "pool", "add", "sub"})
    epsilon: float = 1e-6


@dataclass(repr=False)
class ZPlus(Rule):
    r"""LRP-z⁺ (Montavon 2017; = α1β0): only positive contributions,
    :math:`R_j = \sum_k \frac{x_j^+ w_{jk}^+ + x_j^- w_{jk}^-}{\sum_j (x_j^+ w_{jk}^+ + x_j^- w_{jk}^-) + b_k^+} R_k`.

    Where a unit has no positive contribution at all (:math:`z_k^+ = 0`: it is active only through
    its bias, common after depthwise convolutions when biases are excluded) the rule is 0/0 and
    Zennit drops that unit's relevance; propex redistributes it by the ε rule instead, so
    relevance is conserved."""

    stabilizer: float = 0.0

    def apply(self, call: LinearCall) -> Tensor:
        x, w, b = call.x.detach(), call.weight, call.bias
        if call.nonneg:
            branches = self._terms(call, [(x, _pos(w), _pos(b))])
        else:
            branches = self._terms(call, [(x.clamp_min(0), _pos(w), _pos(b)), (x.clamp_max(0), _neg(w), None)])
        zp = branches[0].detach() if len(branches) == 1 else branches[0].detach() + branches[1].detach()
        floor = tiny(zp.dtype)
        if self.stabilizer > 0:
            inv = inverse(zp, self.stabilizer)
        else:   # z⁺ >= 0: 1/max(z⁺, tiny) in two passes; units at or below tiny are replaced below
            inv = zp.clamp_min(floor).reciprocal_()
        coefs = [inv] * len(branches)
        if bool(zp.amin() <= floor):      # z⁺ >= 0: some unit has no positive contribution (0/0)
            empty = zp <= floor
            # fall back to the ε rule for those units, so their relevance is not silently dropped
            (z,) = self._terms(call, [(x, w, b)])
            keep = (~empty).to(zp.dtype)
            # every share x_j w_jk / z_k is >= 0 there (all contributions <= 0): no stabilizer needed,
            # and one would absorb relevance where z_k is tiny
            coefs = [c * keep for c in coefs] + [(1 - keep) * inverse(z.detach(), 0.0)]
            branches = branches + [z]
        return self._combine(call, call.value(), branches, coefs)


@dataclass(repr=False)
class AlphaBeta(Rule):
    r"""LRP-αβ (Bach et al. 2015), α − β = 1: positive and negative contributions normalised
    separately, :math:`R_j = \sum_k \big(\alpha \frac{(x w)^+_{jk}}{z_k^+} - \beta \frac{(x w)^-_{jk}}{z_k^-}\big) R_k`."""

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = 0.0

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.beta < 0 or abs(self.alpha - self.beta - 1) > 1e-9:
            raise ValueError(f"AlphaBeta needs alpha >= 0, beta >= 0 and alpha - beta = 1, got alpha={self.alpha}, "
                             f"beta={self.beta}")

    def apply(self, call: LinearCall) -> Tensor:
        x, w, b = call.x.detach(), call.weight, call.bias
        if call.nonneg:
            zp, zn = self._terms(call, [(x, _pos(w), _pos(b)), (x, _neg(w), _neg(b))])
            inv_p = inverse(zp.detach(), self.stabilizer)
            inv_n = inverse(zn.detach(), self.stabilizer)
            return self._combine(call, call.value(), [zp, zn], [self.alpha * inv_p, -self.beta * inv_n])
        xp, xn = x.clamp_min(0), x.clamp_max(0)
        z = self._terms(call, [(xp, _pos(w), _pos(b)), (xn, _neg(w), None), (xp, _neg(w), _neg(b)), (xn, _pos(w), None)])
        inv_p = inverse((z[0] + z[1]).detach(), self.stabilizer)
        inv_n = inverse((z[2] + z[3]).detach(), self.stabilizer)
        return self._combine(call, call.value(), z, [self.alpha * inv_p] * 2 + [-self.beta * inv_n] * 2)


@dataclass(repr=False)
class Gamma(Rule):
    r"""LRP-γ (Montavon et al. 2019), generalised to signed inputs as in Zennit: positive
    contributions boosted by γ, :math:`w \to w + \gamma w^+` where :math:`z_k > 0` (and
    :math:`w + \gamma w^-` for the negative part where :math:`z_k < 0`)."""

    gamma: float = 0.25
    stabilizer: float = 1e-6

    def apply(self, call: LinearCall) -> Tensor:
        x, w, b = call.x.detach(), call.weight, call.bias
        g = self.gamma
        wp, wn = w + g * w.clamp_min(0), w + g * w.clamp_max(0)
        bp = None if b is None else b + g * b.clamp_min(0)
        bn = None if b is None else b + g * b.clamp_max(0)
        value = call.value()               # the sign mask uses the true output (bias included), as Zennit
        pos = (value > 0).to(value.dtype)
        neg = (value < 0).to(value.dtype)
        if call.nonneg:
            zp, zn = self._terms(call, [(x, wp, bp), (x, wn, bn)])
            inv_p = pos * inverse(zp.detach(), self.stabilizer)
            inv_n = neg * inverse(zn.detach(), self.stabilizer)
            return self._combine(call, value, [zp, zn], [inv_p, inv_n])
        xp, xn = x.clamp_min(0), x.clamp_max(0)
        z = self._terms(call, [(xp, wp, bp), (xn, wn, None), (xp, wn, bn), (xn, wp, None)])
        inv_p = pos * inverse((z[0] + z[1]).detach(), self.stabilizer)
        inv_n = neg * inverse((z[2] + z[3]).detach(), self.stabilizer)
        return self._combine(call, value, z, [inv_p, inv_p, inv_n, inv_n])


@dataclass(repr=False)
class ZBox(Rule):
    r"""LRP-z^B (Montavon et al. 2017) for inputs bounded by ``low`` ≤ x ≤ ``high`` (first layer):
    :math:`R_j = \sum_k \frac{x_j w_{jk} - l_j w^+_{jk} - h_j w^-_{jk}}{\sum_j (\cdot)} R_k`.
    ``low``/``high``: numbers or tensors broadcastable to the input (e.g. per channel)."""

    low: float | Tensor = 0.0
    high: float | Tensor = 1.0
    stabilizer: float = 1e-6

    def apply(self, call: LinearCall) -> Tensor:
        x, w, b = call.x.detach(), call.weight, call.bias
        low = torch.as_tensor(self.low, dtype=x.dtype, device=x.device).expand_as(x)
        high = torch.as_tensor(self.high, dtype=x.dtype, device=x.device).expand_as(x)
        z = self._terms(call, [(x, w, b), (low, _pos(w), _pos(b)), (high, _neg(w), _neg(b))])
        inv = inverse((z[0] - z[1] - z[2]).detach(), self.stabilizer)
        return self._combine(call, call.value(), z, [inv, -inv, -inv])


@dataclass(repr=False)
class WSquare(Rule):
    r"""LRP-w² (Montavon et al. 2017): :math:`R_j = \sum_k \frac{w_{jk}^2}{\sum_j w_{jk}^2} R_k`."""

    stabilizer: float = 0.0

    def apply(self, call: LinearCall) -> Tensor:
        ones = torch.ones_like(call.x)
        b = None if call.bias is None else call.bias ** 2
        if call.out_scale is not None:      # (w·s)² is not homogeneous of degree 1 in s
            call = dataclasses.replace(call, weight=call.full_weight(), out_scale=None)
        (z,) = self._terms(call, [(ones, call.weight ** 2, b)])
        return self._combine(call, call.value(), [z], [inverse(z.detach(), self.stabilizer)])


@dataclass(repr=False)
class Flat(Rule):
    r"""LRP-flat (Lapuschkin et al. 2019): relevance spread uniformly over each output's receptive
    field, :math:`R_j = \sum_k \frac{1}{\sum_j 1} R_k` (w² with all weights 1, no bias)."""

    stabilizer: float = 0.0

    def apply(self, call: LinearCall) -> Tensor:
        ones = torch.ones_like(call.x)
        w = None if call.weight is None else torch.ones_like(call.weight)
        (z,) = self._terms(call, [(ones, w, None)])
        return self._combine(call, call.value(), [z], [inverse(z.detach(), self.stabilizer)])


class Pass:
    """Pass-through for element-wise ops (activations, eval-mode batch norm): :math:`R_x = R_y`."""

    name = "pass"
    applies_to = frozenset({"activation", "batch_norm"})

    def __repr__(self) -> str:
        return "Pass()"


class Gradient:
    """The plain gradient (no modification): e.g. for max pooling, or to opt a layer out of LRP."""

    name = "gradient"
    applies_to = frozenset({"linear", "batch_norm", "pool", "max_pool", "activation", "add", "sub"})

    def __repr__(self) -> str:
        return "Gradient()"

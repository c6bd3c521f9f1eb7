"""Excitation Backprop (and its contrastive variant) and Deep Taylor Decomposition: LRP recipes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..api import register
from .composites import Composite, Position
from .lrp import LRP
from .functions import Combine
from .rules import Gradient, LinearCall, Norm, Rule, WSquare, ZBox, ZPlus


@dataclass(repr=False)
class Negated(Rule):
    """Apply ``rule`` to the op with negated weights and bias (the "dual" output of contrastive EB)."""

    rule: Rule

    def apply(self, call: LinearCall) -> Tensor:
        dual = LinearCall(call.x, -call.weight, None if call.bias is None else -call.bias,
                          call.fn, call.ignore_bias, out_scale=call.out_scale)
        out = self.rule.apply(dual)                 # value -z; its backward is the dual's relevance
        # the model continues with z; the dual's own rule already handled its units
        return Combine.apply([call.value().detach()], (torch.ones_like(out),), out)


def excitation_composite(stabilizer: float = 1e-6, dual: bool = False) -> Composite:
    pairs: list[tuple[Any, Any]] = []
    if dual:
        pairs.append((Position("last"), Negated(ZPlus(stabilizer))))
    pairs += [("linear", ZPlus(stabilizer)), ("add", Norm(stabilizer)), ("pool", Norm(stabilizer)),
              ("activation", Gradient())]
    return Composite(pairs, name="excitation_backprop" + ("_dual" if dual else ""))


@register
class ExcitationBackprop(LRP):
    r"""Excitation Backprop: the marginal winning probability of each input, top-down.

    Starting from probability 1 at the target, each conv/dense op passes it down in proportion
    to the positive (excitatory) contributions,
    :math:`P(a_j) = \sum_k \frac{a_j w^+_{jk}}{\sum_{j'} a_{j'} w^+_{j'k}} P(a_k)` (the z⁺ rule),
    activations pass it by their gradient, sums and average pooling in proportion.
    ``contrastive=True`` subtracts the winning probability of the *dual* output (the top layer's
    weights negated): :math:`P(\cdot\,|\,y) - P(\cdot\,|\,\bar y)`, which removes evidence shared
    with the other classes.

    Zhang et al., "Top-down Neural Attention by Excitation Backprop", IJCV 2018 (ECCV 2016).

    Options: ``contrastive`` (default False), ``stabilizer``, ``unknown_ops``, ``batch_size``.
    """

    name = "excitation_backprop"
    aliases = ("excitation", "eb")
    claims_completeness = False

    def __init__(self, model: Any, *, contrastive: bool = False, stabilizer: float = 1e-6, **options: Any):
        for banned in ("composite", "ignore_bias"):
            if banned in options:
                raise TypeError(f"excitation_backprop takes no {banned}= option (its rules are fixed)")
        super().__init__(model, composite=excitation_composite(stabilizer), **options)
        self.options = {"contrastive": bool(contrastive), "stabilizer": stabilizer, **{
            k: v for k, v in self.options.items() if k not in ("composite", "ignore_bias")}}
        self.contrastive = bool(contrastive)
        self.stabilizer = stabilizer

    def initial_message(self, values: Tensor) -> Tensor:
        return torch.ones_like(values)

    def finalize(self, messages, inputs, values, extra_values):
        return messages, None

    def _explain(self, x, target, forward_kwargs):
        exp = super()._explain(x, target, forward_kwargs)
        if not self.contrastive:
            return exp
        saved = self.composite
        try:
            self.composite = excitation_composite(self.stabilizer, dual=True)
            dual = super()._explain(x, target, forward_kwargs)
        finally:
            self.composite = saved
        if isinstance(exp.attributions, tuple):
            exp.attributions = tuple(a - b for a, b in zip(exp.attributions, dual.attributions))
        else:
            exp.attributions = exp.attributions - dual.attributions
        return exp


@register
class DeepTaylor(LRP):
    r"""Deep Taylor Decomposition: LRP-z⁺ in every layer with ReLU inputs, and a root-point rule in
    the first layer: z^B for inputs bounded in [``low``, ``high``] (pixels), or w² for unbounded
    inputs (``first="wsquare"``).

    .. math:: R_j = \sum_k \frac{x_j w^+_{jk}}{\sum_{j'} x_{j'} w^+_{j'k}} R_k \quad\text{(z⁺)},\qquad
              R_i = \sum_j \frac{x_i w_{ij} - l_i w^+_{ij} - h_i w^-_{ij}}{\sum_{i'}(\cdot)} R_j \quad\text{(z}^B\text{)}

    Montavon et al., "Explaining NonLinear Classification Decisions with Deep Taylor
    Decomposition", Pattern Recognition 2017. Relevance starts at :math:`R = f_y(x)`.

    Options: ``first`` (``"zbox"`` default, or ``"wsquare"``), ``low``/``high`` (z^B bounds,
    numbers or per-channel tensors), ``ignore_bias``, ``stabilizer``.
    """

    name = "deep_taylor"
    aliases = ("dtd", "deep_taylor_decomposition")

    def __init__(self, model: Any, *, first: str = "zbox", low: Any = 0.0, high: Any = 1.0,
                 stabilizer: float | None = None, **options: Any):
        if first not in ("zbox", "wsquare"):
            raise ValueError(f"first must be 'zbox' or 'wsquare', got {first!r}")
        if "composite" in options:
            raise TypeError("deep_taylor takes no composite= option (use lrp for custom composites)")
        # as LRP's presets: 1e-6 for z^B, whose denominator can cross zero; none for z⁺ and w²
        signed = 1e-6 if stabilizer is None else stabilizer
        convex = 0.0 if stabilizer is None else stabilizer
        first_rule = ZBox(low, high, signed) if first == "zbox" else WSquare(convex)
        composite = Composite([(Position("first"), first_rule), ("linear", ZPlus(convex))], name="deep_taylor")
        super().__init__(model, composite=composite, **options)
        self.options.update(first=first, low=low, high=high)

"""Composites: which LRP rule each op gets, by layer type, module name and position.

A composite is an ordered list of ``(selector, rule)``; the first selector that matches an
op decides its rule. Selectors:

* a string naming an op class: ``"conv"`` (convolutions), ``"dense"`` (``F.linear`` /
  ``nn.Linear``), ``"linear"`` (both), ``"pool"`` (average pooling, sums), ``"add"``
  (sums of activations: residual connections), ``"activation"``, ``"batch_norm"``;
* an ``nn.Module`` subclass (or tuple of them): ops executed inside such a module;
* ``Name("features.*")`` (glob) or ``Name(re=r"layer[34]\\..*")``: module names;
* ``Position("first")`` / ``Position("last")``: the first / last conv-or-dense op of the
  forward pass; ``Position(3)``: the fourth one;
* ``All(a, b)``: all of several selectors;
* a callable ``(call) -> bool``.

Presets (``composite=`` a name) follow Zennit's definitions so results can be compared:
``zero``, ``epsilon``, ``epsilon_plus``, ``epsilon_plus_flat``, ``epsilon_gamma_box``,
``epsilon_alpha2_beta1``, ``epsilon_alpha1_beta0``, ``gamma``, ``alpha1_beta0``. Every preset
uses ``Pass`` for activations, ``Norm`` for sums and average pooling, the gradient for max
pooling, and merges batch norm into the preceding conv/dense op.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch.nn.functional as F
from torch import nn

from .rules import AlphaBeta, Epsilon, Flat, Gamma, Gradient, Norm, Pass, ZBox, ZPlus
from .tracing import OpCall

_CONV = {F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d}
_DENSE = {F.linear}


@dataclass(frozen=True)
class Name:
    """Select ops by the dotted name of the module they run in (glob ``pattern`` or regex ``re``)."""

    pattern: str | None = None
    re: str | None = None

    def __call__(self, call: OpCall, position: "PositionInfo") -> bool:
        if self.re is not None:
            return re.fullmatch(self.re, call.module_name) is not None
        return fnmatch.fnmatchcase(call.module_name, self.pattern or "*")


@dataclass(frozen=True)
class Position:
    """Select the first (``"first"``), last (``"last"``) or n-th (int) conv/dense op of the forward pass."""

    which: str | int

    def __call__(self, call: OpCall, position: "PositionInfo") -> bool:
        if call.kind != "linear":
            return False
        if self.which == "first":
            return call.index == 0
        if self.which == "last":
            return position.n_linear is not None and call.index == position.n_linear - 1
        return call.index == self.which


@dataclass(frozen=True)
class All:
    """All of several selectors."""

    selectors: tuple

    def __init__(self, *selectors: Any):
        object.__setattr__(self, "selectors", selectors)

    def __call__(self, call: OpCall, position: "PositionInfo") -> bool:
        return all(matches(s, call, position) for s in self.selectors)


@dataclass
class PositionInfo:
    n_linear: int | None = None     # number of conv/dense ops in the forward pass (known after a first pass)


def op_class(call: OpCall) -> str | None:
    if call.kind == "linear":
        return "conv" if call.func in _CONV or call.func in {_torch_conv(d) for d in (1, 2, 3)} else "dense"
    return call.kind


def _torch_conv(d: int) -> Any:
    import torch
    return getattr(torch, f"conv{d}d")


def matches(selector: Any, call: OpCall, position: PositionInfo) -> bool:
    if isinstance(selector, str):
        cls = op_class(call)
        return selector == cls or (selector == "linear" and cls in ("conv", "dense")) or \
            (selector == "add" and call.kind in ("add", "sub"))
    if isinstance(selector, type) and issubclass(selector, nn.Module):
        return isinstance(call.module, selector)
    if isinstance(selector, tuple) and selector and all(isinstance(s, type) for s in selector):
        return isinstance(call.module, selector)
    if callable(selector):
        try:
            return bool(selector(call, position))
        except TypeError:
            return bool(selector(call))
    raise TypeError(f"composite: {selector!r} is not a selector (a string, module type, Name, Position, All or "
                    "a callable)")


class Composite:
    """An ordered list of ``(selector, rule)`` pairs, plus the defaults every preset shares."""

    def __init__(self, mapping: Sequence[tuple[Any, Any]] | dict, name: str = "custom", defaults: bool = True):
        pairs = list(mapping.items()) if isinstance(mapping, dict) else list(mapping)
        for sel, rule in pairs:
            matches_probe = isinstance(sel, (str, type, tuple, Name, Position, All)) or callable(sel)
            if not matches_probe:
                raise TypeError(f"composite: {sel!r} is not a selector")
            if isinstance(sel, str) and sel not in ("conv", "dense", "linear", "pool", "add", "activation",
                                                    "batch_norm", "max_pool", "mul"):
                raise ValueError(f"composite: unknown op class {sel!r}; use conv, dense, linear, pool, add, "
                                 "activation, batch_norm, max_pool or mul")
        self.pairs = pairs
        self.name = name
        self.defaults = defaults
        self.used: set[int] = set()     # indices of pairs that selected an op (checked for custom composites)

    def check_all_used(self) -> None:
        """A user's selector that selected no op is almost always a typo (a wrong name or type)."""
        unused = [repr(sel) for i, (sel, _) in enumerate(self.pairs) if i not in self.used]
        if unused:
            raise ValueError(f"composite: the selector(s) {', '.join(unused)} matched no op of the forward pass; "
                             "check the module names (model.named_modules()) and types")

    def rule_for(self, call: OpCall, position: PositionInfo) -> Any | None:
        """The rule of the first pair that selects this op *and* applies to its kind: a conv/dense
        rule selected by ``Name("features.*")`` goes to the convs of that block, not its ReLUs."""
        for i, (sel, rule) in enumerate(self.pairs):
            kinds = getattr(rule, "applies_to", None)
            if kinds is not None and call.kind not in kinds:
                continue
            if matches(sel, call, position):
                self.used.add(i)
                return rule
        if not self.defaults:
            return None
        if call.kind in ("add", "sub", "pool"):
            return Norm()
        if call.kind in ("activation", "batch_norm"):
            return Pass()
        if call.kind == "max_pool":
            return Gradient()
        return None

    def selectors(self) -> list[Any]:
        return [sel for sel, _ in self.pairs]

    def __repr__(self) -> str:
        inner = ", ".join(f"{s!r}: {r!r}" for s, r in self.pairs)
        return f"Composite({self.name!r}, {{{inner}}})"


def preset(name: str, *, epsilon: float = 1e-6, gamma: float = 0.25, low: Any = 0.0, high: Any = 1.0,
           stabilizer: float | None = None) -> Composite:
    """A named composite with its parameters (Zennit's definitions).

    ``stabilizer=None`` adds 1e-6 to the denominators that can cross zero (γ, z^B) and nothing
    to those of z⁺, αβ and flat, whose shares are convex (0/0 units are handled by the rules);
    Zennit adds 1e-6 everywhere, which absorbs the relevance of units whose positive
    pre-activation is tiny. ``stabilizer=1e-6`` reproduces Zennit exactly.
    """
    signed = 1e-6 if stabilizer is None else stabilizer      # γ, z^B
    convex = 0.0 if stabilizer is None else stabilizer       # z⁺, αβ, flat
    eps = Epsilon(epsilon)
    table: dict[str, list[tuple[Any, Any]]] = {
        "zero": [("linear", Epsilon(0.0)), ("add", Norm(0.0)), ("pool", Norm(0.0))],
        "epsilon": [("linear", eps)],
        "gamma": [("linear", Gamma(gamma, signed))],
        "alpha1_beta0": [("linear", ZPlus(convex))],
        "epsilon_plus": [("conv", ZPlus(convex)), ("dense", eps)],
        "epsilon_alpha1_beta0": [("conv", ZPlus(convex)), ("dense", eps)],
        "epsilon_plus_flat": [(Position("first"), Flat(convex)), ("conv", ZPlus(convex)), ("dense", eps)],
        "epsilon_gamma_box": [(All(Position("first"), "conv"), ZBox(low, high, signed)),
                              ("conv", Gamma(gamma, signed)), ("dense", eps)],
        "epsilon_alpha2_beta1": [("conv", AlphaBeta(2.0, 1.0, convex)), ("dense", eps)],
    }
    if name not in table:
        raise ValueError(f"composite={name!r} is not a preset; choose one of {', '.join(PRESETS)} "
                         "or pass a mapping from selectors to rules")
    return Composite(table[name], name=name)


PRESETS = ("zero", "epsilon", "gamma", "alpha1_beta0", "epsilon_plus", "epsilon_alpha1_beta0", "epsilon_plus_flat",
           "epsilon_gamma_box", "epsilon_alpha2_beta1")


@dataclass(repr=False)
class GammaByDepth:
    """A rule factory: LRP-γ with γ = ``gammas(index, n_linear)`` for the index-th conv/dense op."""

    gammas: Callable[[int, int], float]
    stabilizer: float = 1e-6
    needs_count = True
    applies_to = frozenset({"linear"})

    def resolve(self, call: OpCall, position: PositionInfo) -> Gamma:
        return Gamma(float(self.gammas(call.index, position.n_linear or 1)), self.stabilizer)

    def __repr__(self) -> str:
        return f"GammaByDepth({getattr(self.gammas, '__name__', 'fn')})"


def depth_schedule(gammas: Callable[[int, int], float], stabilizer: float = 1e-6) -> Composite:
    """The per-depth schedule of seed 001 (Montavon et al. 2019 on VGG-16): LRP-γ on every conv/dense
    op with γ chosen by depth, ``gammas(index, n_linear) -> γ`` (γ = 0 gives LRP-0 at the top).

    Example: γ = 0.25 in the lower third, 0.1 in the middle third, 0 in the upper third::

        composite = depth_schedule(lambda i, n: 0.25 if i < n / 3 else (0.1 if i < 2 * n / 3 else 0.0))
    """
    return Composite([("linear", GammaByDepth(gammas, stabilizer))], name="depth_schedule")


def needs_count(composite: Composite) -> bool:
    """Whether rule selection depends on the number of conv/dense ops (``Position("last")``, depth)."""
    def uses(sel: Any) -> bool:
        if isinstance(sel, Position):
            return sel.which == "last"
        if isinstance(sel, All):
            return any(uses(s) for s in sel.selectors)
        return False
    return any(uses(sel) or getattr(rule, "needs_count", False) for sel, rule in composite.pairs)

"""Layer-wise Relevance Propagation on the propagation engine."""
from __future__ import annotations

from typing import Any

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from ..api import register
from .composites import Composite, PositionInfo, needs_count, preset
from .engine import Policy, PropagationMethod, first_graph_arg
from .functions import PassThrough, Split, inverse
from .rules import Gradient, LinearCall, Norm, Pass, Rule
from .tracing import OpCall, UnsupportedOpError, graph_tensors, is_graph
from .transformer import LRPTransformerRules, check_attention

# activations whose output is never negative: conv/dense ops fed by them skip the x⁻ terms
_NONNEG = {F.relu, torch.relu, torch.Tensor.relu, getattr(torch, "relu_", None), getattr(torch.Tensor, "relu_", None),
           getattr(F, "relu_", None), F.relu6, F.sigmoid, torch.sigmoid, torch.Tensor.sigmoid, F.softplus,
           F.hardsigmoid}


def linear_parts(call: OpCall) -> tuple[Tensor, Tensor, Tensor | None, Any]:
    """Split a conv/linear call into (input, weight, bias, fn(x, w, b)) keeping its other arguments."""
    args, kwargs = list(call.args), dict(call.kwargs)
    x = args.pop(0) if args else kwargs.pop("input")
    w = args.pop(0) if args else kwargs.pop("weight")
    if args:
        b = args.pop(0)
    else:
        b = kwargs.pop("bias", None)
    rest = tuple(args)

    def fn(xx: Tensor, ww: Tensor, bb: Tensor | None) -> Tensor:
        return call.func(xx, ww, bb, *rest, **kwargs)
    return x, w, b, fn


class LRPPolicy(LRPTransformerRules, Policy):
    """Rewrites each op with the LRP rule its composite selects; batch norm is merged into the
    preceding conv/dense op (a canonizer at the level of ops)."""

    def __init__(self, composite: Composite, ignore_bias: bool, canonize: bool, n_linear: int | None,
                 unknown_ops: str = "raise"):
        super().__init__(unknown_ops)
        self.composite = composite
        self.ignore_bias = ignore_bias
        self.canonize = canonize
        self.position = PositionInfo(n_linear)
        # conv/dense outputs whose rule is applied when they are first used (a following batch
        # norm is merged instead): id -> [placeholder value, LinearCall, rule, op call, result]
        self._lazy: dict[int, list[Any]] = {}
        self._nonneg: dict[int, Tensor] = {}

    def tracked(self, t: Any) -> bool:
        return is_graph(t) or self._lazy_entry(t) is not None

    def _lazy_entry(self, t: Any) -> list[Any] | None:
        if not isinstance(t, Tensor):
            return None
        entry = self._lazy.get(id(t))
        return entry if entry is not None and entry[0] is t else None

    def _materialize(self, t: Any) -> Any:
        entry = self._lazy_entry(t)
        if entry is None:
            return t
        if entry[4] is None:
            _, lcall, rule, _, _ = entry
            entry[4] = rule.apply(lcall)
            if self._is_nonneg(t):
                self._mark_nonneg(entry[4])
        return entry[4]

    def __call__(self, call: OpCall) -> Any:
        if self._lazy and call.kind != "batch_norm":
            def sub(a: Any) -> Any:
                if isinstance(a, Tensor):
                    return self._materialize(a)
                if isinstance(a, (list, tuple)) and not hasattr(a, "_fields"):
                    return type(a)(sub(v) for v in a)
                return a
            call = dataclasses.replace(call, args=tuple(sub(a) for a in call.args),
                                       kwargs={k: sub(v) for k, v in call.kwargs.items()})
        return super().__call__(call)

    def alias(self, target: Tensor, out: Tensor) -> None:
        """An in-place op wrote ``out`` into ``target``: target is no longer a pending conv output."""
        if self._lazy_entry(target) is not None:
            del self._lazy[id(target)]
        if self._is_nonneg(out):
            self._mark_nonneg(target)

    def _is_nonneg(self, t: Any) -> bool:
        return isinstance(t, Tensor) and self._nonneg.get(id(t)) is t

    def _mark_nonneg(self, out: Any) -> Any:
        if isinstance(out, Tensor):
            self._nonneg[id(out)] = out
        elif isinstance(out, (tuple, list)):
            for o in out:
                self._mark_nonneg(o)
        return out

    def _keeps_sign(self, call: OpCall, out: Any) -> Any:
        """Outputs of sign-preserving ops (routing, pooling) of non-negative inputs are non-negative."""
        inputs = graph_tensors(call.args, call.kwargs)
        if inputs and all(self._is_nonneg(t) for t in inputs):
            self._mark_nonneg(out)
        return out

    def on_route(self, call: OpCall) -> Any:
        return self._keeps_sign(call, call.run())

    def on_identity(self, call: OpCall) -> Any:
        return self._keeps_sign(call, call.run())

    def _rule(self, call: OpCall) -> Any:
        rule = self.composite.rule_for(call, self.position)
        resolve = getattr(rule, "resolve", None)
        return resolve(call, self.position) if resolve is not None else rule

    # conv / dense ------------------------------------------------------------------------
    def on_linear(self, call: OpCall) -> Any:
        x, w, b, fn = linear_parts(call)
        if is_graph(w) or not is_graph(x):
            raise UnsupportedOpError(f"LRP: {call.where()} has weights that depend on the input (e.g. attention "
                                     "scores); this needs the transformer rules (not available yet)")
        rule = self._rule(call)
        if rule is None or isinstance(rule, Gradient):
            return call.run()
        if not isinstance(rule, Rule):
            raise TypeError(f"composite: {rule!r} cannot be applied to the linear op {call.where()}")
        lcall = LinearCall(x, w, b, fn, self.ignore_bias, nonneg=self._is_nonneg(x))
        if not self.canonize or "transpose" in call.name:
            return rule.apply(lcall)
        with torch.no_grad():
            y = call.value()
        lcall.cached = y
        self._lazy[id(y)] = [y, lcall, rule, call, None]
        return y

    def on_batch_norm(self, call: OpCall) -> Any:
        args = list(call.args) + [None] * 8
        kw = call.kwargs
        x = args[0]
        mean = kw.get("running_mean", args[1])
        var = kw.get("running_var", args[2])
        weight = kw.get("weight", args[3])
        bias = kw.get("bias", args[4])
        training = kw.get("training", args[5] if args[5] is not None else False)
        eps = kw.get("eps", args[7] if args[7] is not None else 1e-5)
        if training or mean is None:
            raise UnsupportedOpError(f"LRP: {call.where()} runs in training mode (batch statistics); call model.eval()")
        scale = (1.0 if weight is None else weight) / torch.sqrt(var + eps)
        shift = (0.0 if bias is None else bias) - mean * scale
        entry = self._lazy_entry(x)
        if entry is not None and entry[4] is None:     # conv/dense → batch norm: merge them
            lcall, rule = entry[1], entry[2]
            b2 = shift if lcall.bias is None else lcall.bias * scale + shift
            with torch.no_grad():
                value = call.run()
            if bool((scale > 0).all()):
                # w·s is never materialised: the rule's terms are scaled at the output instead
                out_scale = scale.reshape((1, -1) + (1,) * (value.dim() - 2))
                return rule.apply(LinearCall(lcall.x, lcall.weight, b2, lcall.fn, self.ignore_bias,
                                             nonneg=lcall.nonneg, cached=value, out_scale=out_scale))
            w2 = lcall.weight * scale.reshape((-1,) + (1,) * (lcall.weight.dim() - 1))
            return rule.apply(LinearCall(lcall.x, w2, b2, lcall.fn, self.ignore_bias, nonneg=lcall.nonneg,
                                         cached=value))
        x = self._materialize(x)
        call = dataclasses.replace(call, args=(x, *call.args[1:]))
        rule = self._rule(call)
        y = call.value()
        if isinstance(rule, Pass):
            return PassThrough.apply(x, y)
        if isinstance(rule, Gradient):
            return call.run()     # the plain gradient: keep the op's own autograd
        if isinstance(rule, Rule):
            shape = (1, -1) + (1,) * (x.dim() - 2)
            return rule.apply(LinearCall(x, scale.reshape(shape), shift.reshape(shape) if not self.ignore_bias else None,
                                         lambda xx, ww, bb: xx * ww + (0 if bb is None else bb), self.ignore_bias))
        raise TypeError(f"composite: {rule!r} cannot be applied to batch norm {call.where()}")

    # parameter-free linear maps: average pooling, mean, sum ------------------------------
    def on_pool(self, call: OpCall) -> Any:
        rule = self._rule(call)
        if isinstance(rule, Gradient):
            return call.run()
        x = first_graph_arg(call)

        def fn(xx: Tensor, ww: Any, bb: Any) -> Tensor:
            args = [xx if a is x else a for a in call.args]
            kwargs = {k: (xx if v is x else v) for k, v in call.kwargs.items()}
            return call.run(*args, **kwargs)
        if not isinstance(rule, Rule):
            # pooling a non-negative input splits relevance in convex shares: no stabilizer needed
            # (one would absorb relevance where activations are small)
            rule = Norm(0.0) if self._is_nonneg(x) else Norm()
        out = rule.apply(LinearCall(x, None, None, fn, True))
        return self._keeps_sign(call, out)

    def on_max_pool(self, call: OpCall) -> Any:
        rule = self._rule(call)
        if rule is None or isinstance(rule, Gradient):
            return self._keeps_sign(call, call.run())
        raise TypeError(f"composite: {rule!r} cannot be applied to max pooling {call.where()}; use Gradient()")

    def on_activation(self, call: OpCall) -> Any:
        rule = self._rule(call)
        y = call.value()
        if isinstance(rule, Gradient):
            return call.run()     # the plain gradient: keep the op's own autograd
        if isinstance(rule, Pass) or rule is None:
            out = PassThrough.apply(first_graph_arg(call), y)
            return self._mark_nonneg(out) if call.func in _NONNEG else out
        raise TypeError(f"composite: {rule!r} cannot be applied to the activation {call.where()}; use Pass()")

    # sums and products ---------------------------------------------------------------------
    def on_add(self, call: OpCall) -> Any:
        return self._sum(call, sign=1.0)

    def on_sub(self, call: OpCall) -> Any:
        return self._sum(call, sign=-1.0)

    def _sum(self, call: OpCall, sign: float) -> Any:
        a, b = call.args[0], call.args[1] if len(call.args) > 1 else call.kwargs.get("other")
        if call.func is torch.Tensor.__rsub__:       # x.__rsub__(c) is c - x
            a, b = b, a
        alpha = call.kwargs.get("alpha", 1)
        rule = self._rule(call)
        y = call.value()
        if isinstance(rule, Gradient):
            return call.run()     # the plain gradient: keep the op's own autograd
        eps = rule.epsilon if isinstance(rule, Norm) else 1e-6
        ga, gb = is_graph(a), is_graph(b)
        if ga and gb:
            inv = inverse(y.detach(), eps)
            return Split.apply(y, (a.detach() * inv, sign * alpha * b.detach() * inv), a, b)
        x = a if ga else b
        if self.ignore_bias:                 # the constant is a bias: all relevance stays on x
            return Split.apply(y, (torch.ones_like(y),), x)
        factor = 1.0 if ga else sign * alpha
        return Split.apply(y, (factor * x.detach() * inverse(y.detach(), eps),), x)

    def on_mul(self, call: OpCall) -> Any:
        a, b = call.args[0], call.args[1] if len(call.args) > 1 else call.kwargs.get("other")
        y = call.value()
        ga, gb = is_graph(a), is_graph(b)
        if ga and gb:                        # gating x * g(x): relevance split equally (uniform rule)
            half = torch.full_like(y, 0.5)
            return Split.apply(y, (half, half), a, b)
        return Split.apply(y, (torch.ones_like(y),), a if ga else b)

    def on_neg(self, call: OpCall) -> Any:
        x = first_graph_arg(call)
        y = call.value()
        return Split.apply(y, (torch.ones_like(y),), x)     # z = -x: all relevance stays on x

    def on_div(self, call: OpCall) -> Any:
        a, b = call.args[0], call.args[1] if len(call.args) > 1 else call.kwargs.get("other")
        if is_graph(b):
            raise UnsupportedOpError(f"LRP: {call.where()} divides by a tensor that depends on the input; "
                                     "no rule for that yet")
        y = call.value()
        return Split.apply(y, (torch.ones_like(y),), a)


@register
class LRP(PropagationMethod):
    r"""Layer-wise Relevance Propagation.

    The explained output's value is its relevance, :math:`R = f_y(x)` (seed 000), and each op
    redistributes the relevance of its outputs to its inputs by a rule chosen per op by the
    ``composite`` (see ``propex.propagation.rules`` for the formulas and
    ``propex.propagation.composites`` for presets and selectors). Activations pass relevance
    through, sums and average pooling split it in proportion to the contributions, max
    pooling gives it to the maximum, batch norm is merged into the preceding conv/dense op.
    ``delta`` is the conservation error :math:`\sum_i R_i - f_y(x)` (zero up to the stabiliser
    when ``ignore_bias=True``).

    Bach et al., "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise
    Relevance Propagation", PLoS ONE 2015; Montavon et al., "Layer-Wise Relevance Propagation:
    An Overview", 2019.

    Options: ``stabilizer`` (the ε added to denominators of rules other than ε; default: 1e-6 for
    γ and z^B, none for z⁺/αβ/flat whose shares are convex — ``1e-6`` everywhere is Zennit's choice),
    ``composite`` (a preset name — ``zero``, ``epsilon``, ``gamma``, ``alpha1_beta0``,
    ``epsilon_plus``, ``epsilon_plus_flat`` (default), ``epsilon_gamma_box``, ``epsilon_alpha2_beta1``
    — a ``Composite`` or a mapping from selectors to rules), ``epsilon``, ``gamma``, ``low``/``high``
    (z^B bounds), ``ignore_bias`` (keep biases out of the relevance), ``canonize`` (merge batch
    norm, default True), ``unknown_ops`` (``"raise"`` or ``"warn"``), ``batch_size``,
    ``attention`` (transformers: ``"attnlrp"`` (default; Achtibat et al. 2024) or ``"cp"`` (CP-LRP, Ali et
    al. 2022) — the rules for softmax, products of activations, attention and LayerNorm/RMSNorm in
    ``propex.propagation.transformer``; ``epsilon`` is also their stabiliser).
    """

    name = "lrp"
    aliases = ("layerwise_relevance_propagation",)
    claims_completeness = True

    def __init__(self, model: Any, *, composite: Any = "epsilon_plus_flat", epsilon: float = 1e-6,
                 gamma: float = 0.25, low: Any = 0.0, high: Any = 1.0, stabilizer: float | None = None,
                 ignore_bias: bool = False, canonize: bool = True, attention: str = "attnlrp", **options: Any):
        check_attention(attention)
        if isinstance(composite, str):
            resolved = preset(composite, epsilon=epsilon, gamma=gamma, low=low, high=high, stabilizer=stabilizer)
        elif isinstance(composite, Composite):
            resolved = composite
        elif isinstance(composite, (dict, list)):
            resolved = Composite(composite)
        else:
            raise TypeError(f"composite must be a preset name, a Composite or a mapping of selectors to rules, "
                            f"got {type(composite).__name__}")
        super().__init__(model, composite=composite if isinstance(composite, str) else resolved,
                         ignore_bias=bool(ignore_bias), attention=attention, **options)
        resolved.used = set()
        self.composite, self.ignore_bias, self.canonize = resolved, bool(ignore_bias), bool(canonize)
        self.attention, self.epsilon = attention, float(epsilon)

    def needs_op_count(self) -> bool:
        return needs_count(self.composite)

    def check_pass(self, policy: Policy) -> None:
        if self.composite.name == "custom":
            self.composite.check_all_used()

    def make_policy(self, inputs: tuple[Tensor, ...], n_linear: int | None) -> Policy:
        policy = LRPPolicy(self.composite, self.ignore_bias, self.canonize, n_linear, self.unknown_ops)
        policy.attention, policy.epsilon = self.attention, self.epsilon     # transformer rules
        return policy

    def initial_message(self, values: Tensor) -> Tensor:
        return values

    def finalize(self, messages, inputs, values, extra_values):
        total = sum(m.reshape(m.shape[0], m.shape[1], -1).sum(2) for m in messages)
        return messages, total - values

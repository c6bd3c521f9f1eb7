"""DeepLIFT (Rescale rule) on the propagation engine."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..api import register
from ..base import Explanation
from ..baselines import LayerBaseline, is_multi_baseline, resolve_baseline
from ..inputs import as_input_tuple
from .engine import Policy, PropagationMethod, first_graph_arg
from .functions import RowMultiplier, Split
from .tracing import OpCall, UnsupportedOpError, graph_tensors, is_graph
from .transformer import RescaleTransformerRules

RULES = ("rescale", "reveal_cancel")
_EPS = 1e-10  # |Δx| below this uses the gradient (Captum's threshold)


def _halves(t: Tensor) -> tuple[Tensor, Tensor]:
    b = t.shape[0] // 2
    return t[:b], t[b:]


def _both(t: Tensor) -> Tensor:
    return torch.cat([t, t])


class RescalePolicy(RescaleTransformerRules, Policy):
    r"""Rows ``[:B]`` hold x, rows ``[B:]`` the reference. Linear ops keep their gradient (exact for
    differences); an element-wise nonlinearity's gradient becomes the secant :math:`\Delta y/\Delta x`;
    max pooling sends :math:`\Delta y` to the positions of the maxima; a product of two activations
    uses :math:`\Delta(ab) = \Delta a\,\bar b + \Delta b\,\bar a` (bars: means of x and reference)."""

    def on_activation(self, call: OpCall) -> Any:
        x = first_graph_arg(call)
        y = call.value()
        x1, x0 = _halves(x.detach())
        y1, y0 = _halves(y.detach())
        dx = x1 - x0
        m = (y1 - y0).div_(dx)                      # secant; inf/nan where Δx = 0, replaced below
        small = dx.abs_() < _EPS
        if bool(small.any()):
            m = torch.where(small, _local_gradient(call, x, x1), m)
        return RowMultiplier.apply(x, y, m)

    def on_max_pool(self, call: OpCall) -> Any:
        x = first_graph_arg(call)
        kwargs = dict(call.kwargs)
        kwargs["return_indices"] = True
        args = list(call.args)
        if len(args) > 6:             # positional return_indices of F.max_poolNd
            args[6] = True
            kwargs.pop("return_indices")
        func = call.func
        with torch.no_grad():
            y, idx = func(x.detach(), *args[1:], **kwargs)
        return _MaxPoolRescale.apply(x, y, idx)

    def on_mul(self, call: OpCall) -> Any:
        a, b = call.args[0], call.args[1] if len(call.args) > 1 else call.kwargs.get("other")
        if is_graph(a) and is_graph(b):
            y = call.value()
            a1, a0 = _halves(a.detach())
            b1, b0 = _halves(b.detach())
            return Split.apply(y, (_both((b1 + b0) / 2), _both((a1 + a0) / 2)), a, b)
        return call.run()

    def on_div(self, call: OpCall) -> Any:
        if is_graph(call.args[1] if len(call.args) > 1 else call.kwargs.get("other")):
            raise UnsupportedOpError(f"DeepLIFT: {call.where()} divides by a tensor that depends on the input; "
                                     "no rule for that yet")
        return call.run()

    # exact for differences: linear maps keep their gradient
    def on_linear(self, call: OpCall) -> Any:
        x = call.args[0] if call.args else None
        if not is_graph(x) or len(graph_tensors(call.args, call.kwargs)) != 1 or x.shape[0] % 2:
            return call.run()
        # The message only flows through the x rows (the reference rows are a constant of the
        # explanation), so the reference half runs without autograd: the backward pass
        # transposes the conv/dense op for B rows, not 2B (half the floor's backward cost).
        x1, x0 = _halves(x)
        with torch.no_grad():
            y0 = call.run(x0, *call.args[1:], **call.kwargs)
        return torch.cat([call.run(x1, *call.args[1:], **call.kwargs), y0])

    def _plain(self, call: OpCall) -> Any:
        return call.run()

    on_pool = on_add = on_sub = on_neg = _plain

    def on_batch_norm(self, call: OpCall) -> Any:
        training = call.kwargs.get("training", call.args[5] if len(call.args) > 5 else False)
        if training:
            raise UnsupportedOpError(f"DeepLIFT: {call.where()} runs in training mode: its batch statistics would "
                                     "mix x and the reference; call model.eval()")
        return self.on_linear(call)


def _local_gradient(call: OpCall, x: Tensor, at: Tensor) -> Tensor:
    """f'(at) of the element-wise op applied to ``x`` (used where Δx is too small for the secant)."""
    with torch.enable_grad():
        xx = at.detach().requires_grad_()
        args = [xx if a is x else a for a in call.args]
        yy = call.run(*args)
        (g,) = torch.autograd.grad(yy, xx, torch.ones_like(yy))
    return g


class _MaxPoolRescale(torch.autograd.Function):
    """Max pooling for DeepLIFT: Δy reaches the maxima of x and of the reference (cross maximum),
    divided by Δx there; the gradient where |Δx| is tiny."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, idx: Tensor) -> Tensor:
        ctx.save_for_backward(x.detach().clone(), y, idx)   # a copy: x may be modified in place later
        return y.clone()

    @staticmethod
    def backward(ctx, g: Tensor):
        x, y, idx = ctx.saved_tensors
        grad = maxpool_multipliers(_halves(g)[0], x, y, idx)
        return torch.cat([grad, torch.zeros_like(grad)]), None, None


def maxpool_multipliers(g1: Tensor, x: Tensor, y: Tensor, idx: Tensor) -> Tensor:
    """Message to the x rows of a max pooling's input, given the message ``g1`` at its x rows.

    ``x``, ``y``, ``idx``: input, output and argmax indices for the stacked rows [x; reference].
    The output difference is split at the cross maximum: (max(y, y') − y') goes to the
    maxima of x and (y − max(y, y')) to those of the reference, each divided by Δx there.
    """
    x1, x0 = _halves(x)
    y1, y0 = _halves(y)
    i1, i0 = _halves(idx)
    top = torch.maximum(y1, y0)
    spread = _unpool(g1 * (top - y0), i1, x1) + _unpool(g1 * (y1 - top), i0, x1)
    dx = x1 - x0
    small = dx.abs() < _EPS
    return torch.where(small, _unpool(g1, i1, x1), spread / torch.where(small, torch.ones_like(dx), dx))


def _unpool(values: Tensor, idx: Tensor, like: Tensor) -> Tensor:
    out = torch.zeros(like.shape[0], like.shape[1], like[0, 0].numel(), dtype=values.dtype, device=values.device)
    out.scatter_add_(2, idx.reshape(idx.shape[0], idx.shape[1], -1), values.reshape(values.shape[0], values.shape[1], -1))
    return out.reshape(like.shape)


@register
class DeepLift(PropagationMethod):
    r"""DeepLIFT: contributions of input differences to the output difference.

    For a reference :math:`x'`, DeepLIFT assigns contributions :math:`C_i` with summation-to-delta
    :math:`\sum_i C_i = f_y(x) - f_y(x')`, by the chain rule for *multipliers*
    :math:`m = C/\Delta x`: linear maps keep their weights; an element-wise nonlinearity
    :math:`y = f(x)` uses the secant :math:`m = \Delta y / \Delta x` (Rescale rule; the
    gradient where :math:`|\Delta x| < 10^{-10}`); max pooling passes :math:`\Delta y` to the
    maxima; :math:`C_i = (x_i - x'_i)\, m_i`. ``delta`` is the summation-to-delta error.

    Shrikumar, Greenside & Kundaje, "Learning Important Features Through Propagating Activation
    Differences", ICML 2017. With several baselines (``baseline=[...]``, or DeepLIFT-SHAP with a
    list of reference samples) the contributions are averaged (Lundberg & Lee 2017).

    ``rule="reveal_cancel"`` treats positive and negative contributions separately at each
    nonlinearity (RevealCancel, §3.5.3 of the paper; see ``propex.propagation.reveal_cancel``):
    on :math:`\min(i_1, i_2) = i_1 - \mathrm{ReLU}(i_1 - i_2)` it gives :math:`(i_2/2, i_2/2)` where
    Rescale gives :math:`(0, i_2)`.

    Options: ``baseline`` (as for IG: zeros by default), ``rule`` (``"rescale"`` or ``"reveal_cancel"``),
    ``softmax_normalize`` (subtract the mean contribution over all classes, for models whose
    output feeds a softmax), ``unknown_ops``, ``batch_size``.
    """

    name = "deeplift"
    aliases = ("deep_lift", "deeplift_rescale")
    claims_completeness = True

    def __init__(self, model: Any, *, baseline: Any = None, rule: str = "rescale", softmax_normalize: bool = False,
                 **options: Any):
        if rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
        super().__init__(model, baseline=baseline, rule=rule, softmax_normalize=bool(softmax_normalize), **options)
        self.baseline, self.rule, self.softmax_normalize = baseline, rule, bool(softmax_normalize)
        self._reference: tuple[Tensor, ...] | LayerBaseline | None = None
        self._reference_space: tuple[Tensor, ...] | None = None

    def make_policy(self, inputs: tuple[Tensor, ...], n_linear: int | None) -> Policy:
        return RescalePolicy(self.unknown_ops)

    def model_inputs(self, leaves: tuple[Tensor, ...], rows: Tensor) -> tuple[Tensor, ...]:
        return tuple(torch.cat([leaf, ref]) for leaf, ref in zip(leaves, self._current_refs))

    def layer_model_inputs(self, real: tuple[Tensor, ...], rows: Tensor, extra: int) -> tuple[Tensor, ...]:
        # with layer=, the reference rows run the model on the reference inputs (their layer tensor is
        # replaced anyway); a baseline given in the layer's space runs them on x
        if isinstance(self._reference, LayerBaseline):
            return super().layer_model_inputs(real, rows, extra)
        return tuple(torch.cat([t, r.index_select(0, rows)]) for t, r in zip(real, self._reference))

    def finalize(self, messages, inputs, values, extra_values):
        refs = self._current_refs
        attributions = tuple(m * (x - r).unsqueeze(1) for m, x, r in zip(messages, inputs, refs))
        total = sum(a.reshape(a.shape[0], a.shape[1], -1).sum(2) for a in attributions)
        return attributions, total - (values - extra_values)

    def _chunk(self, inputs, kwargs, selector, target, rows, n, n_linear):
        refs = self._reference
        if self._layer_tap is not None:     # layer=: the reference in the layer's space
            if self._reference_space is None:
                self._reference_space = ((refs.resolve(inputs[0]),) if isinstance(refs, LayerBaseline)
                                         else (self.layer_values(self._layer_tap, refs, kwargs),))
            refs = self._reference_space
        elif isinstance(refs, LayerBaseline):
            raise ValueError("baseline: a LayerBaseline is given in a layer's space; pass layer= too")
        self._current_refs = tuple(r.index_select(0, rows) for r in refs)
        return super()._chunk(inputs, kwargs, selector, target, rows, n, n_linear)

    def _explain(self, x: Any, target: Any, forward_kwargs: dict[str, Any] | None) -> Explanation:
        inputs, was_tuple = as_input_tuple(x)
        specs = self.baseline if is_multi_baseline(self.baseline) else [self.baseline]
        if not specs:
            raise ValueError("baseline: an empty list of baselines was given")
        results = []
        for i, spec in enumerate(specs):
            name = f"baseline[{i}]" if len(specs) > 1 else "baseline"
            self._reference_space = None
            if isinstance(spec, LayerBaseline):
                if self.rule == "reveal_cancel":
                    raise ValueError("baseline: rule='reveal_cancel' takes baselines in the input space, "
                                     "not a LayerBaseline")
                self._reference = spec
            else:
                self._reference = resolve_baseline(spec, inputs, was_tuple, name=name)
            try:
                results.append(self._explain_softmax(x, target, forward_kwargs) if self.softmax_normalize
                               else self._explain_one(x, target, forward_kwargs))
            finally:
                self._reference = self._reference_space = None
        if len(results) == 1:
            return results[0]
        first = results[0]
        if isinstance(first.attributions, tuple):
            attributions = tuple(sum(r.attributions[k] for r in results) / len(results)
                                 for k in range(len(first.attributions)))
        else:
            attributions = sum(r.attributions for r in results) / len(results)
        delta = sum(r.delta for r in results) / len(results)
        return Explanation(attributions, first.target, first.outputs, delta, self.name, dict(self.options))

    def _explain_one(self, x: Any, target: Any, forward_kwargs: dict[str, Any] | None) -> Explanation:
        if self.rule == "reveal_cancel":
            if self.tap is not None:
                raise ValueError("layer: rule='reveal_cancel' attributes to the inputs only; use rule='rescale' "
                                 "with layer=")
            return self._explain_reveal_cancel(x, target, forward_kwargs)
        return super()._explain(x, target, forward_kwargs)

    def _explain_reveal_cancel(self, x: Any, target: Any, forward_kwargs: dict[str, Any] | None) -> Explanation:
        """RevealCancel: differences carried beside the values (see ``reveal_cancel``)."""
        from ..batching import ranges
        from ..inputs import check_forward_kwargs, index_kwargs, require_float, restore_structure
        from ..targets import resolve_target
        from ..model_call import frozen_parameters
        from .engine import _backward
        from .reveal_cancel import Diff, RevealCancelPolicy
        from .tracing import ModuleStack, PropagationMode

        inputs, was_tuple = as_input_tuple(x)
        require_float(inputs, "x", self.name)
        kwargs = check_forward_kwargs(forward_kwargs)
        with torch.no_grad():
            outputs = self.call_model.first_call(inputs, kwargs).detach()
        selector = resolve_target(target, outputs)
        if selector.indices is None and selector.full_index is None:
            raise ValueError("target: rule='reveal_cancel' explains output elements (class indices or a tuple "
                             "index), not a callable")
        n = inputs[0].shape[0]
        attrs, deltas = [], []
        with frozen_parameters(self.model):
            for start, stop in ranges(n, self.batch_size or n):
                rows = torch.arange(start, stop, device=inputs[0].device)
                xs = tuple(t.index_select(0, rows) for t in inputs)
                refs = tuple(r.index_select(0, rows) for r in self._reference)
                leaves = tuple((a - r).detach().requires_grad_() for a, r in zip(xs, refs))
                stacked = tuple(torch.cat([a, r]).detach() for a, r in zip(xs, refs))
                policy = RevealCancelPolicy(self.unknown_ops)
                for value, leaf in zip(stacked, leaves):
                    policy.register(value, Diff(torch.cat([leaf, torch.zeros_like(leaf)])))
                chunk_kwargs = index_kwargs(kwargs, n, rows) if kwargs else {}
                chunk_kwargs = {k: (torch.cat([v, v]) if isinstance(v, Tensor) and v.dim() > 0 and
                                    v.shape[0] == len(rows) else v) for k, v in chunk_kwargs.items()}
                modules = ModuleStack(self.model)
                with torch.enable_grad(), modules.active(), PropagationMode(policy, modules):
                    out = self.call_model(stacked, chunk_kwargs)
                if not policy.tracked(out):
                    raise ValueError("target: the model output does not depend on x through ops DeepLIFT can follow")
                b = len(rows)
                diff_out = selector.select(policy.diff(out).total()[:b], rows)
                f_x, f_ref = selector.select(out[:b], rows), selector.select(out[b:], rows)
                messages = _backward(diff_out, leaves, torch.ones_like(diff_out))
                contrib = tuple(m * leaf.detach().unsqueeze(1) for m, leaf in zip(messages, leaves))
                total = sum(c.reshape(c.shape[0], c.shape[1], -1).sum(2) for c in contrib)
                attrs.append(contrib)
                deltas.append(total - (f_x - f_ref))
        attributions = tuple(torch.cat(parts) for parts in zip(*attrs))
        delta = torch.cat(deltas)
        if not selector.multi:
            attributions = tuple(a.squeeze(1) for a in attributions)
            delta = delta[:, 0]
        return Explanation(restore_structure(attributions, was_tuple), selector.public(), outputs, delta,
                           self.name, dict(self.options))

    def _explain_softmax(self, x: Any, target: Any, forward_kwargs: dict[str, Any] | None) -> Explanation:
        """Contributions to every class, minus their mean over classes (DeepLIFT §3.6)."""
        from ..targets import resolve_target
        from ..model_call import ModelCall
        inputs, _ = as_input_tuple(x)
        with torch.no_grad():
            outputs = ModelCall(self.model).first_call(inputs, forward_kwargs or {})
        selector = resolve_target(target, outputs)
        if selector.indices is None:
            raise ValueError("softmax_normalize=True needs class targets (not a callable)")
        n, n_classes = outputs.shape[0], outputs.shape[1]
        every = torch.arange(n_classes).expand(n, n_classes)
        full = self._explain_one(x, every, forward_kwargs)
        attrs = full.attributions if isinstance(full.attributions, tuple) else (full.attributions,)
        normalized = tuple(a - a.mean(dim=1, keepdim=True) for a in attrs)
        idx = selector.indices
        picked = tuple(_take(a, idx) for a in normalized)
        if not selector.multi:
            picked = tuple(p[:, 0] for p in picked)
        result = picked if isinstance(full.attributions, tuple) else picked[0]
        return Explanation(result, selector.public(), full.outputs, None, self.name, dict(self.options))


def _take(a: Tensor, idx: Tensor) -> Tensor:
    """``a[n, idx[n, t], ...]`` → ``[N, T, ...]``."""
    gather = idx.to(a.device).reshape(idx.shape[0], idx.shape[1], *[1] * (a.dim() - 2)).expand(-1, -1, *a.shape[2:])
    return a.gather(1, gather)

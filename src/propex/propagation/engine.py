"""The propagation engine: one forward pass under a policy, one modified backward pass.

``PropagationMethod`` is the base of every propagation method. It

1. formats ``x`` and the target, freezes parameters (``requires_grad=False`` while it runs,
   so that only tensors derived from x form the graph) and makes the inputs leaves;
2. runs the model under ``PropagationMode`` with the method's *policy*, which rewrites
   each op so that its backward carries the method's message (relevance, multiplier,
   guided gradient) instead of the gradient — the forward values stay exact;
3. selects the target scalars (also under the policy: a masked sum spreads relevance in
   proportion) and runs one backward pass from them (a vmapped one for T targets);
4. turns the message at the inputs into attributions.

With ``layer=`` (or integer token ids, which default to the input embedding) the layer's
output on x is captured first and becomes the leaf: in the traced pass the layer's output is
replaced by it (``LayerTap``) while the model runs on its own inputs, so attributions are
shaped like the layer's tensor.

Samples are processed in chunks of ``batch_size``. An op without a rule raises
``UnsupportedOpError`` naming it and its module (``unknown_ops="warn"`` falls back to the
gradient with a warning).
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from ..base import Explanation, Method
from ..batching import check_batch_size, ranges
from ..inputs import as_input_tuple, check_forward_kwargs, index_kwargs, require_float, restore_structure
from ..layers import LayerTap, resolve_layer
from ..model_call import ModelCall, frozen_parameters
from ..targets import TargetSelector, resolve_target
from .tracing import ModuleStack, OpCall, PropagationMode, UnsupportedOpError, graph_tensors

UNKNOWN_OPS = ("raise", "warn")


class Policy:
    """Maps each op call of the forward pass to its output (with the method's backward)."""

    def __init__(self, unknown_ops: str = "raise"):
        self.unknown_ops = unknown_ops

    def __call__(self, call: OpCall) -> Any:
        handler = getattr(self, f"on_{call.kind}", None) if call.kind else None
        if handler is None:
            return self.on_unknown(call)
        return handler(call)

    def on_route(self, call: OpCall) -> Any:
        return call.run()

    def on_identity(self, call: OpCall) -> Any:
        return call.run()

    def on_unknown(self, call: OpCall) -> Any:
        message = (
            f"{type(self).__name__.replace('Policy', '')} has no rule for op {call.where()}. "
            "Register one with propex.propagation.register_op(func, kind) "
            "(kinds: linear, pool, activation, add, mul, route, ...), rewrite the model to use a supported op, "
            "or pass unknown_ops='warn' to fall back to the plain gradient for it"
        )
        if self.unknown_ops == "warn":
            warnings.warn(message + " (falling back to the gradient)", stacklevel=2)
            return call.run()
        raise UnsupportedOpError(message)


def first_graph_arg(call: OpCall) -> Tensor:
    return graph_tensors(call.args, call.kwargs)[0]


class PropagationMethod(Method):
    """Base of the propagation methods (see the module docstring)."""

    family = "propagation"

    def __init__(self, model: Any, *, unknown_ops: str = "raise", batch_size: int | None = None, layer: Any = None,
                 layer_input: bool = False, **options: Any):
        if unknown_ops not in UNKNOWN_OPS:
            raise ValueError(f"unknown_ops must be one of {', '.join(UNKNOWN_OPS)}, got {unknown_ops!r}")
        super().__init__(model, **options)
        self.call_model = ModelCall(model)
        self.unknown_ops = unknown_ops
        self.batch_size = check_batch_size(batch_size)
        # layer=: attribute to a layer's output (or input): the pass starts at that tensor, which
        # replaces the layer's output (LayerTap); integer token ids default to the input embedding
        self.tap = LayerTap(resolve_layer(model, layer), use_input=bool(layer_input)) if layer is not None else None
        if layer is not None:
            self.options["layer"] = layer if isinstance(layer, str) else type(layer).__name__
        self._layer_tap: LayerTap | None = None      # the tap of the running explain call
        self._model_x: tuple[Tensor, ...] = ()       # the model's own inputs of the running call

    # ---- hooks for subclasses ------------------------------------------------------------
    def make_policy(self, inputs: tuple[Tensor, ...], n_linear: int | None) -> Policy:
        raise NotImplementedError

    def model_inputs(self, leaves: tuple[Tensor, ...], rows: Tensor) -> tuple[Tensor, ...]:
        """What the traced forward pass receives (DeepLIFT appends the reference rows)."""
        return leaves

    def initial_message(self, values: Tensor) -> Tensor:
        """The message at the explained scalars ``[B, T]`` (LRP: their value; else 1)."""
        return torch.ones_like(values)

    def finalize(self, messages: tuple[Tensor, ...], inputs: tuple[Tensor, ...], values: Tensor,
                 extra_values: Tensor | None) -> tuple[tuple[Tensor, ...], Tensor | None]:
        """Attributions ``[B, T, ...]`` from the message at the inputs, and delta ``[B, T]`` or None.

        ``values`` are the explained scalars ``[B, T]``; ``extra_values`` the same scalars on the
        extra rows ``model_inputs`` appended (DeepLIFT: the reference), else None.
        """
        return messages, None

    def needs_op_count(self) -> bool:
        return False

    def check_pass(self, policy: Policy) -> None:
        """Called after the traced forward pass (LRP: every selector of a custom composite was used)."""

    # ---- layer= ---------------------------------------------------------------------------
    def layer_values(self, tap: LayerTap, inputs: tuple[Tensor, ...], kwargs: dict[str, Any]) -> Tensor:
        """The layer's tensor on ``inputs`` (one forward pass without autograd)."""
        with torch.no_grad(), tap.active():
            self.call_model.first_call(inputs, kwargs)
        return tap.captured.detach()

    def layer_model_inputs(self, real: tuple[Tensor, ...], rows: Tensor, extra: int) -> tuple[Tensor, ...]:
        """The model's own inputs for the stacked rows of a layer pass (DeepLIFT: x's and the reference's)."""
        return tuple(torch.cat([t] * extra) for t in real) if extra > 1 else real

    def _resolve_tap(self, inputs: tuple[Tensor, ...], kwargs: dict[str, Any]) -> LayerTap | None:
        if self.tap is not None:
            return self.tap
        from ..text.embedding import default_token_layer
        embedding = default_token_layer(self.model, inputs, kwargs)
        return None if embedding is None else LayerTap(embedding)

    # ---- the pass ------------------------------------------------------------------------
    def _explain(self, x: Any, target: Any, forward_kwargs: dict[str, Any] | None) -> Explanation:
        inputs, was_tuple = as_input_tuple(x)
        kwargs = check_forward_kwargs(forward_kwargs)
        tap = self._resolve_tap(inputs, kwargs)
        if tap is None:
            require_float(inputs, "x", self.name)
            return self._explain_space(inputs, was_tuple, inputs, target, kwargs)
        self._layer_tap, self._model_x = tap, inputs
        try:
            space = (self.layer_values(tap, inputs, kwargs),)
            return self._explain_space(space, False, inputs, target, kwargs)
        finally:
            self._layer_tap, self._model_x = None, ()

    def _explain_space(self, inputs: tuple[Tensor, ...], was_tuple: bool, model_x: tuple[Tensor, ...], target: Any,
                       kwargs: dict[str, Any]) -> Explanation:
        """The pass over the attributed tensors ``inputs`` (x, or the layer's tensor; ``model_x``: x)."""
        n = inputs[0].shape[0]
        size = self.batch_size or n
        selector: TargetSelector | None = None
        outputs: Tensor | None = None
        if size < n:   # several chunks: resolve the target once, on all outputs
            with torch.no_grad():
                outputs = self.call_model.first_call(model_x, kwargs).detach()
            selector = resolve_target(target, outputs)
        n_linear = self._count_linear(inputs, kwargs) if self.needs_op_count() else None
        attrs, deltas = [], []
        with frozen_parameters(self.model):
            for start, stop in ranges(n, size):
                rows = torch.arange(start, stop, device=inputs[0].device)
                a, d, out_rows, selector = self._chunk(inputs, kwargs, selector, target, rows, n, n_linear)
                if outputs is None:
                    outputs = out_rows
                attrs.append(a)
                deltas.append(d)
        attributions = tuple(torch.cat(parts) for parts in zip(*attrs))
        delta = None if deltas[0] is None else torch.cat(deltas)
        if not selector.multi:
            attributions = tuple(a.squeeze(1) for a in attributions)
            delta = None if delta is None else delta[:, 0]
        return Explanation(restore_structure(attributions, was_tuple), selector.public(), outputs, delta,
                           self.name, dict(self.options))

    def _chunk(self, inputs: tuple[Tensor, ...], kwargs: dict[str, Any], selector: TargetSelector | None,
               target: Any, rows: Tensor, n: int, n_linear: int | None
               ) -> tuple[tuple[Tensor, ...], Tensor | None, Tensor, TargetSelector]:
        """One traced forward + modified backward for the samples ``rows``.

        With ``selector`` None (a single chunk) the target is resolved on this pass's own
        outputs, which saves the separate forward pass on x.
        """
        chunk = tuple(t.index_select(0, rows) for t in inputs)
        leaves = tuple(t.detach().clone().requires_grad_() for t in chunk)
        for leaf in leaves:
            leaf._propex_leaf = True  # type: ignore[attr-defined]
        chunk_kwargs = index_kwargs(kwargs, n, rows) if kwargs else {}
        model_inputs = self.model_inputs(leaves, rows)
        extra = model_inputs[0].shape[0] // len(rows)
        if extra > 1 and chunk_kwargs:
            chunk_kwargs = {k: (torch.cat([v] * extra) if isinstance(v, Tensor) and v.dim() > 0 and
                                v.shape[0] == len(rows) else v) for k, v in chunk_kwargs.items()}
        policy = self.make_policy(chunk, n_linear)
        modules = ModuleStack(self.model)
        b = len(rows)
        with torch.enable_grad(), modules.active(), PropagationMode(policy, modules):
            if self._layer_tap is None:
                out_all = self.call_model.first_call(model_inputs, chunk_kwargs)
            else:   # the model runs on its own inputs; the layer's output is replaced by the leaves
                real = self.layer_model_inputs(tuple(t.index_select(0, rows) for t in self._model_x), rows, extra)
                with self._layer_tap.active(replacement=model_inputs[0]):
                    out_all = self.call_model.first_call(real, chunk_kwargs)
            out_x = out_all[:b]
            out_extra = out_all[b: 2 * b] if extra > 1 else None
        if selector is None:
            selector = resolve_target(target, out_x.detach())
        with torch.enable_grad(), PropagationMode(policy, modules):   # a callable target's ops get rules too
            values = selector.select(out_x, rows)
            extra_values = None if out_extra is None else selector.select(out_extra, rows).detach()
        if not values.requires_grad:
            raise ValueError("target: the explained output does not depend on x through the model")
        self.check_pass(policy)
        message = self.initial_message(values.detach())
        messages = _backward(values, leaves, message)
        attributions, delta = self.finalize(messages, chunk, values.detach(), extra_values)
        return attributions, delta, out_x.detach(), selector

    def _count_linear(self, inputs: tuple[Tensor, ...], kwargs: dict[str, Any]) -> int:
        """Number of conv/dense ops in one forward pass (for Position("last") and depth schedules)."""
        counter = Policy(unknown_ops="warn")
        counter.on_unknown = lambda call: call.run()  # type: ignore[method-assign]
        for kind in ("linear", "batch_norm", "pool", "max_pool", "activation", "add", "sub", "mul", "div"):
            setattr(counter, f"on_{kind}", lambda call: call.run())
        modules = ModuleStack(self.model)
        mode = PropagationMode(counter, modules)
        probe = tuple(t[:1].detach().clone().requires_grad_() for t in inputs)
        for p in probe:
            p._propex_leaf = True  # type: ignore[attr-defined]
        one_kwargs = index_kwargs(kwargs, inputs[0].shape[0], torch.arange(1)) if kwargs else {}
        with frozen_parameters(self.model), torch.enable_grad(), modules.active(), mode:
            if self._layer_tap is None:
                self.call_model.model(*probe, **one_kwargs)
            else:
                with self._layer_tap.active(replacement=probe[0]):
                    self.call_model.model(*(t[:1] for t in self._model_x), **one_kwargs)
        return mode.counts.get("linear", 0)


def _backward(values: Tensor, leaves: tuple[Tensor, ...], message: Tensor) -> tuple[Tensor, ...]:
    """Messages at the leaves ``[B, T, ...]`` for each of the T target columns."""
    n_targets = values.shape[1]
    if n_targets == 1:
        grads = torch.autograd.grad(values, leaves, grad_outputs=message, allow_unused=True)
        return tuple((torch.zeros_like(l) if g is None else g).unsqueeze(1) for g, l in zip(grads, leaves))
    eye = torch.eye(n_targets, dtype=values.dtype, device=values.device)
    batched = eye.unsqueeze(1) * message.unsqueeze(0)          # [T, B, T]
    try:
        grads = torch.autograd.grad(values, leaves, grad_outputs=batched, is_grads_batched=True,
                                    allow_unused=True, retain_graph=True)
        grads = tuple(torch.zeros((n_targets, *l.shape), dtype=l.dtype, device=l.device) if g is None else g
                      for g, l in zip(grads, leaves))
    except RuntimeError:
        per = [torch.autograd.grad(values, leaves, grad_outputs=batched[t], allow_unused=True, retain_graph=True)
               for t in range(n_targets)]
        grads = tuple(torch.stack([torch.zeros_like(l) if g is None else g for g in gs])
                      for gs, l in zip(zip(*per), leaves))
    return tuple(g.movedim(0, 1) for g in grads)

"""The gradient engine: d target / d (input or layer) at many points, chunked and reduced.

A method describes its points with a *point function* ``points(k, s) -> tuple`` (the
k-th point of sample s, in the attribution space: the inputs, or a layer's output) and
a *term function* ``terms(grads, k, s) -> list`` (what to add up from each point's
gradient). The engine walks the flat index ``j = k * N + s`` in chunks of at most
``batch_size`` points, evaluates the model once per chunk, takes one backward pass for
all selected targets (a vmapped backward when T > 1), and ``index_add``s the terms into
``[N, T, ...]`` accumulators. Memory therefore grows with the chunk size, not with the
number of points.

Gradients are always shaped ``[B, T, ...]`` inside the engine (T = number of targets per
sample, 1 unless the user asked for several); methods index per-point tensors with
``unsqueeze(1)``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from ..batching import CPU_AUTOGRAD_BUDGET, SavedBytes, check_batch_size, chunk_size, parse_memory, ranges
from ..inputs import as_input_tuple, check_forward_kwargs, index_kwargs
from ..layers import LayerTap, resolve_layer
from ..model_call import ModelCall, frozen_parameters
from ..targets import TargetSelector, resolve_target

PointFn = Callable[[Tensor, Tensor], tuple[Tensor, ...]]
TermFn = Callable[[tuple[Tensor, ...], Tensor, Tensor], Sequence[Tensor]]


@dataclass
class Prepared:
    """What one ``attribute`` call knows after the first forward pass on ``x``."""

    inputs: tuple[Tensor, ...]
    was_tuple: bool
    forward_kwargs: dict[str, Any]
    outputs: Tensor                      # model output on x, detached
    target: TargetSelector
    space: tuple[Tensor, ...]            # attribution space at x: the inputs or (layer tensor,)
    bytes_per_point: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.inputs[0].shape[0]

    def target_values(self) -> Tensor:
        """``[N, T]`` explained scalars on x."""
        return self.target.select(self.outputs, torch.arange(self.n, device=self.outputs.device)).detach()


class GradientEngine:
    """Evaluates and reduces gradients of selected outputs w.r.t. inputs or a layer."""

    def __init__(self, model: Any, *, layer: Any = None, layer_input: bool = False,
                 batch_size: int | None = None, memory_budget: Any = None, beta_smooth: float | None = None):
        from ..propagation.smoothing import check_beta
        self.beta_smooth = check_beta(beta_smooth)
        self.call = ModelCall(model)
        self.model = model
        self.tap = LayerTap(resolve_layer(model, layer), use_input=bool(layer_input)) if layer is not None else None
        self.batch_size = check_batch_size(batch_size)
        self.memory_budget = parse_memory(memory_budget)
        self.budget_given = memory_budget is not None

    # ------------------------------------------------------------------ preparation
    def prepare(self, x: Any, target: Any, forward_kwargs: Mapping[str, Any] | None,
                keep_graph: bool = False) -> Prepared:
        """One forward pass on x: outputs, target resolution, layer capture, memory estimate.

        ``keep_graph``: keep this pass's autograd graph so that a method with one point per
        sample (saliency) can take its gradient from it instead of a second forward pass.
        With ``layer=``, the layer's output is made the graph's leaf (``LayerTap.active(leaf=True)``):
        ``gradients_at_inputs`` then gives d target / d layer (GradCAM's gradients) from this pass.
        """
        inputs, was_tuple = as_input_tuple(x)
        kwargs = check_forward_kwargs(forward_kwargs)
        params = list(self.model.parameters()) if isinstance(self.model, torch.nn.Module) else []
        measure = SavedBytes(exclude=params)
        layer_graph = keep_graph and self.tap is not None and self.beta_smooth is None
        keep_graph = (keep_graph and self.beta_smooth is None
                      and (layer_graph or all(t.is_floating_point() for t in inputs)))
        n = inputs[0].shape[0]
        # the memory estimate needs autograd on; measure it on one sample unless this pass is kept
        measure_apart = self.batch_size is None and not keep_graph and n > 1
        grad_mode = keep_graph or (self.batch_size is None and not measure_apart)
        # with the layer's output as the leaf, nothing before it needs a graph: freeze the parameters
        # (model_guard restores them) so that only the layers after it record one, and are measured
        frozen = frozen_parameters(self.model) if layer_graph else contextlib.nullcontext()
        with torch.enable_grad() if grad_mode else torch.no_grad(), measure.measure(), frozen:
            leaves = tuple(t.detach().requires_grad_() if t.is_floating_point() and grad_mode and not layer_graph
                           else t.detach() for t in inputs)
            if self.tap is None:
                outputs = self.call.first_call(leaves, kwargs)
                space = inputs
            else:
                with self.tap.active(leaf=layer_graph):
                    outputs = self.call.first_call(leaves, kwargs)
                space = (self.tap.captured.detach(),)
                if layer_graph:
                    leaves = (self.tap.captured,)
                    keep_graph = self.tap.captured.requires_grad
        per_point = measure.total // max(1, n)
        if measure_apart:
            probe = SavedBytes(exclude=params)
            one = tuple(t[:1].detach().requires_grad_() if t.is_floating_point() else t[:1] for t in inputs)
            with torch.enable_grad(), probe.measure():
                self.call(one, index_kwargs(kwargs, n, torch.zeros(1, dtype=torch.long)) if kwargs else {})
            per_point = probe.total
        live = outputs
        outputs = outputs.detach()
        selector = resolve_target(target, outputs)
        prep = Prepared(inputs, was_tuple, kwargs, outputs, selector, space, bytes_per_point=per_point)
        if keep_graph and live.requires_grad:
            prep.extras["graph"] = (leaves, live)
        return prep

    def gradients_at_inputs(self, prep: Prepared) -> tuple[Tensor, ...] | None:
        """Gradients ``[N, T, ...]`` at x from the graph ``prepare(keep_graph=True)`` kept, when all N
        samples fit one chunk; None otherwise (the caller then uses ``reduce``)."""
        graph = prep.extras.pop("graph", None)
        if graph is None or self.chunk(prep, prep.n) < prep.n:
            return None
        leaves, live = graph
        with torch.enable_grad():
            values = prep.target.select(live, torch.arange(prep.n, device=live.device))
            return self._backward(values, leaves)

    def chunk(self, prep: Prepared, n_points: int) -> int:
        budget = self.memory_budget
        if not self.budget_given and prep.space[0].device.type == "cpu":
            budget = min(budget, CPU_AUTOGRAD_BUDGET)
        return chunk_size(self.batch_size, budget, prep.bytes_per_point, n_points)

    # ------------------------------------------------------------------ evaluation
    def _forward(self, prep: Prepared, points: tuple[Tensor, ...], sample_idx: Tensor) -> Tensor:
        from ..propagation.smoothing import beta_smoothing
        kwargs = index_kwargs(prep.forward_kwargs, prep.n, sample_idx) if prep.forward_kwargs else {}
        with beta_smoothing(self.model, self.beta_smooth):
            if self.tap is None:
                return self.call(points, kwargs)
            model_inputs = tuple(t.index_select(0, sample_idx.to(t.device)) for t in prep.inputs)
            with self.tap.active(replacement=points[0]):
                return self.call(model_inputs, kwargs)

    def values(self, prep: Prepared, points: tuple[Tensor, ...], sample_idx: Tensor) -> Tensor:
        """Target scalars ``[B, T]`` at ``points`` (no gradient)."""
        with torch.no_grad():
            return prep.target.select(self._forward(prep, points, sample_idx), sample_idx)

    def gradients(self, prep: Prepared, points: tuple[Tensor, ...], sample_idx: Tensor
                  ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Target scalars ``[B, T]`` and their gradients ``[B, T, ...]`` w.r.t. each point tensor."""
        with torch.enable_grad():
            leaves = tuple(p.detach().requires_grad_() for p in points)
            values = prep.target.select(self._forward(prep, leaves, sample_idx), sample_idx)
            grads = self._backward(values, leaves)
        return values.detach(), grads

    @staticmethod
    def _backward(values: Tensor, leaves: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        if values.shape[1] == 1:
            grads = torch.autograd.grad(values.sum(), leaves, allow_unused=True)
            return tuple(g.unsqueeze(1) for g in _fill_unused(grads, leaves))
        return _batched_backward(values, leaves)

    # ------------------------------------------------------------------ reduction
    def reduce(self, prep: Prepared, n_per_sample: int, points: PointFn, terms: TermFn,
               chunk: int | None = None) -> list[Tensor]:
        """Sum ``terms`` over the ``n_per_sample`` points of every sample.

        Returns one ``[N, T, ...]`` tensor per term. Points are visited in the order
        ``j = k * N + s`` so results do not depend on the chunk size.
        """
        n = prep.n
        total = n * n_per_sample
        size = chunk or self.chunk(prep, total)
        device = prep.space[0].device
        sums: list[Tensor] | None = None
        for start, stop in ranges(total, size):
            j = torch.arange(start, stop, device=device)
            k, s = j // n, j % n
            _, grads = self.gradients(prep, points(k, s), s)
            contributions = terms(grads, k, s)
            if sums is None:
                sums = [torch.zeros((n, *c.shape[1:]), dtype=c.dtype, device=c.device) for c in contributions]
            for acc, c in zip(sums, contributions):
                acc.index_add_(0, s, c)
        return sums or []


def _fill_unused(grads: Sequence[Tensor | None], leaves: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """An input the target does not depend on has a zero gradient."""
    return tuple(torch.zeros_like(leaf) if g is None else g for g, leaf in zip(grads, leaves))


def _batched_backward(values: Tensor, leaves: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Gradients of each of T target columns in one vmapped backward; ``[B, T, ...]``."""
    b, n_targets = values.shape
    eye = torch.eye(n_targets, dtype=values.dtype, device=values.device)
    grad_outputs = eye.unsqueeze(1).expand(n_targets, b, n_targets)
    try:
        grads = torch.autograd.grad(values, leaves, grad_outputs=grad_outputs, is_grads_batched=True,
                                    allow_unused=True, retain_graph=True)
        grads = tuple(g if g is not None else torch.zeros((n_targets, *leaf.shape), dtype=leaf.dtype,
                                                          device=leaf.device) for g, leaf in zip(grads, leaves))
    except RuntimeError:
        # some ops have no batching rule; fall back to one backward per target column
        per_target = []
        for t in range(n_targets):
            g = torch.autograd.grad(values[:, t].sum(), leaves, allow_unused=True, retain_graph=True)
            per_target.append(_fill_unused(g, leaves))
        grads = tuple(torch.stack(gs) for gs in zip(*per_target))
    return tuple(g.movedim(0, 1) for g in grads)

"""Shared plumbing of the gradient methods: engine construction and result formatting."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..base import Explanation, Method
from ..inputs import require_float, restore_structure
from .engine import GradientEngine, Prepared


class GradientMethod(Method):
    """A method computed from gradients of the target w.r.t. the inputs (or ``layer``).

    Common options: ``layer`` (module or dotted name: attribute to its output, or to its
    input with ``layer_input=True``), ``batch_size`` (most points per forward/backward
    chunk) and ``memory_budget`` (bytes or e.g. ``"2GB"`` of activations per chunk, used
    when ``batch_size`` is None).
    """

    family = "gradient"
    reuses_first_forward = False    # one point per sample at x itself: take the gradient from prepare's pass

    def __init__(self, model: Any, *, layer: Any = None, layer_input: bool = False,
                 batch_size: int | None = None, memory_budget: Any = None, beta_smooth: float | None = None,
                 **options: Any):
        super().__init__(model, **options)
        if layer is not None:
            self.options["layer"] = layer if isinstance(layer, str) else type(layer).__name__
        if beta_smooth is not None:
            self.options["beta_smooth"] = beta_smooth
        self.engine = GradientEngine(model, layer=layer, layer_input=layer_input,
                                     batch_size=batch_size, memory_budget=memory_budget, beta_smooth=beta_smooth)

    def _explain(self, x: Any, target: Any, forward_kwargs: dict[str, Any] | None) -> Explanation:
        if self.engine.tap is None:   # integer token ids and no layer=: the model's input embedding
            from ..layers import LayerTap
            from ..text.embedding import default_token_layer
            inputs = x if isinstance(x, tuple) else (x,)
            embedding = default_token_layer(self.model, inputs, forward_kwargs) if all(
                isinstance(t, Tensor) for t in inputs) else None
            if embedding is not None:
                self.engine.tap = LayerTap(embedding)
                try:
                    return self._explain(x, target, forward_kwargs)
                finally:
                    self.engine.tap = None
        prep = self.engine.prepare(x, target, forward_kwargs, keep_graph=self.reuses_first_forward)
        if self.engine.tap is None:
            require_float(prep.inputs, "x", self.name)
        attributions, delta = self._attribute(prep)
        if not prep.target.multi:
            attributions = tuple(a.squeeze(1) for a in attributions)
            delta = None if delta is None else delta[:, 0]
        as_tuple = prep.was_tuple and self.engine.tap is None
        return Explanation(restore_structure(tuple(attributions), as_tuple), prep.target.public(),
                           prep.outputs, delta, self.name, dict(self.options))

    def _attribute(self, prep: Prepared) -> tuple[tuple[Tensor, ...], Tensor | None]:
        """Attributions ``[N, T, ...]`` per space tensor, and delta ``[N, T]`` or None."""
        raise NotImplementedError


def rows(tensors: tuple[Tensor, ...], s: Tensor) -> tuple[Tensor, ...]:
    """The rows ``s`` of each tensor."""
    return tuple(t.index_select(0, s) for t in tensors)


def per_point(t: Tensor) -> Tensor:
    """Insert the target dimension so ``[B, ...]`` broadcasts against ``[B, T, ...]``."""
    return t.unsqueeze(1)


def completeness_delta(attributions: tuple[Tensor, ...], f_x: Tensor, f_baseline: Tensor) -> Tensor:
    """``sum(attributions) - (f(x) - f(baseline))`` per sample and target, ``[N, T]``."""
    total = sum(a.reshape(a.shape[0], a.shape[1], -1).sum(dim=2) for a in attributions)
    return total - (f_x - f_baseline)


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A generator on ``device``; with ``seed=None`` it is seeded from torch's global RNG."""
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen

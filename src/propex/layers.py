"""Layer selection and the hooks that read or replace a layer's output (or input).

Layer-level attribution (GradCAM's gradients, token embeddings, hidden units) treats a
layer's output as the attributed tensor: the engine captures it on ``x`` and, to take
gradients at other points (IG path points, noisy copies), substitutes the layer's
output with those points during the forward pass.
"""
from __future__ import annotations

import contextlib
import difflib
from typing import Any, Iterator

from torch import Tensor, nn


def resolve_layer(model: Any, layer: Any, name: str = "layer") -> nn.Module:
    """Return the module named by ``layer`` (a module of ``model`` or its dotted name)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name}= needs model to be an nn.Module, got {type(model).__name__}")
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError(f"{name}: the module {type(layer).__name__} given is not part of the model")
        return layer
    if isinstance(layer, str):
        modules = dict(model.named_modules())
        if layer in modules and layer != "":
            return modules[layer]
        close = difflib.get_close_matches(layer, [k for k in modules if k], n=5, cutoff=0.5)
        hint = f"; close matches: {', '.join(close)}" if close else f"; the model has e.g. {', '.join(list(k for k in modules if k)[:8])}"
        raise ValueError(f"{name}={layer!r} is not a module name of the model{hint}")
    raise TypeError(f"{name} must be an nn.Module of the model or its dotted name, got {type(layer).__name__}")


class LayerTap:
    """Captures, or replaces, a layer's output (``use_input=False``) or first input."""

    def __init__(self, module: nn.Module, use_input: bool = False, name: str = "layer"):
        self.module = module
        self.use_input = use_input
        self.name = name
        self.captured: Tensor | None = None
        self.replacement: Tensor | None = None
        self.leaf = False
        self._calls = 0

    def _check(self, value: Any) -> Tensor:
        self._calls += 1
        if self._calls > 1:
            raise ValueError(
                f"{self.name}: the module {type(self.module).__name__} is called more than once per forward "
                "pass, so its output is not one tensor to attribute to; choose a module used once"
            )
        if not isinstance(value, Tensor):
            what = "input" if self.use_input else "output"
            raise TypeError(
                f"{self.name}: the {what} of {type(self.module).__name__} is a {type(value).__name__}, "
                "not a tensor; choose a layer whose output is a single tensor"
            )
        return value

    # The model receives a clone of the captured (or substituted) tensor, never the tensor
    # itself: an in-place op after the layer (``nn.ReLU(inplace=True)``, ``x += ...`` as in
    # torchvision's ResNet) would otherwise overwrite ``captured`` or fail on the replacement,
    # which is a leaf that requires grad. The clone keeps both in the autograd graph.
    def _pre_hook(self, module: nn.Module, args: tuple) -> tuple | None:
        value = self._check(args[0] if args else None)
        if self.leaf and self.replacement is None and value.is_floating_point():
            value = value.detach().requires_grad_()
        self.captured = value
        if self.replacement is not None:
            return (self.replacement.clone(), *args[1:])
        return (value.clone(), *args[1:])

    def _hook(self, module: nn.Module, args: tuple, output: Any) -> Any:
        value = self._check(output)
        if self.leaf and self.replacement is None and value.is_floating_point():
            value = value.detach().requires_grad_()
        self.captured = value
        if self.replacement is not None:
            if self.replacement.shape != value.shape:
                raise ValueError(
                    f"{self.name}: replacement of shape {tuple(self.replacement.shape)} does not match the "
                    f"layer output {tuple(value.shape)}"
                )
            return self.replacement.clone()
        return value.clone()

    @contextlib.contextmanager
    def active(self, replacement: Tensor | None = None, leaf: bool = False) -> Iterator["LayerTap"]:
        """Install the hook for one forward pass; removed on exit, also on exceptions.

        ``leaf=True``: the captured tensor is made a new autograd leaf (detached from what came
        before the layer, ``requires_grad``) that the rest of the forward pass is built on, so
        that d output / d layer can be taken from this very pass (``GradientEngine.prepare``
        with ``keep_graph``) without differentiating through the layers before it.
        """
        self.captured, self.replacement, self._calls, self.leaf = None, replacement, 0, bool(leaf)
        if self.use_input:
            handle = self.module.register_forward_pre_hook(self._pre_hook)
        else:
            handle = self.module.register_forward_hook(self._hook)
        try:
            yield self
        finally:
            handle.remove()
            self.replacement = None
        if self._calls == 0:
            raise ValueError(f"{self.name}: the module {type(self.module).__name__} was not called by the forward pass")

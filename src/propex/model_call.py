"""Calling the user's model: output normalisation, clear errors, and leaving it as found.

``ModelCall`` is the one place that invokes the model. ``model_guard`` snapshots
everything an explanation could change on the model (training flags, buffers such as
BatchNorm running statistics, ``requires_grad`` flags, hooks, ``.grad``) and restores it
on exit, also when the forward raises.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from collections.abc import Mapping
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn


def normalize_output(out: Any) -> Tensor:
    """Accept a tensor, a mapping with ``"logits"`` or an object with ``.logits``."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Mapping) and isinstance(out.get("logits"), Tensor):
        return out["logits"]
    logits = getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    raise TypeError(
        "model must return a tensor [N, ...], a mapping with a 'logits' tensor or an object with a "
        f".logits tensor (e.g. a Hugging Face ModelOutput); it returned {type(out).__name__}. "
        "Wrap the model in a function that returns the tensor to explain."
    )


class ModelCall:
    """Calls ``model(*inputs, **forward_kwargs)`` and returns a checked ``[B, ...]`` tensor."""

    def __init__(self, model: Callable[..., Any]):
        if not callable(model):
            raise TypeError(f"model must be an nn.Module or a callable, got {type(model).__name__}")
        self.model = model

    def __call__(self, inputs: tuple[Tensor, ...], forward_kwargs: Mapping[str, Any]) -> Tensor:
        out = normalize_output(self.model(*inputs, **forward_kwargs))
        n = inputs[0].shape[0]
        if out.dim() == 0 or out.shape[0] != n:
            raise ValueError(
                f"model output must have the batch size of x first: x has N={n}, "
                f"the output has shape {tuple(out.shape)}"
            )
        return out

    def first_call(self, inputs: tuple[Tensor, ...], forward_kwargs: Mapping[str, Any]) -> Tensor:
        """Like ``__call__`` but turns a shape error deep inside torch into a ValueError on ``x``."""
        try:
            return self(inputs, forward_kwargs)
        except RuntimeError as err:
            shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
            raise ValueError(
                f"the model could not be evaluated on x of shape {shapes}: {err}. "
                "Check that x has the shape (and dtype) the model expects, batch dimension first."
            ) from err


@contextlib.contextmanager
def model_guard(model: Any) -> Iterator[None]:
    """Restore training flags, buffers, ``requires_grad``, ``.grad`` and hooks of ``model`` on exit.

    ``model`` may also be a bound method of a module (``net.forward``) or a ``functools.partial``
    of one: the module is guarded. Other callables cannot be inspected and are left alone.
    """
    model = _owning_module(model)
    if model is None:
        yield
        return
    modules = list(model.modules())
    training = [m.training for m in modules]
    params = list(model.parameters())
    requires_grad = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    hook_counts = [_hook_counts(m) for m in modules]
    # only modules whose forward depends on the mode make the explanation mode-dependent
    mode_dependent = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)
    if any(flag and isinstance(m, mode_dependent) for m, flag in zip(modules, training)):
        warnings.warn(
            "the model is in training mode: dropout and batch statistics make explanations "
            "stochastic and batch-dependent; call model.eval() first unless this is intended",
            stacklevel=_caller_stacklevel(),
        )
    try:
        yield
    finally:
        for m, flag in zip(modules, training):
            m.training = flag
        for p, flag, g in zip(params, requires_grad, grads):
            p.requires_grad_(flag)
            p.grad = g
        with torch.no_grad():
            for b, saved in buffers:
                if b.shape == saved.shape:
                    b.copy_(saved)
        for m, counts in zip(modules, hook_counts):
            if _hook_counts(m) != counts:  # pragma: no cover - a bug in propex if reached
                raise RuntimeError(f"propex left hooks on module {type(m).__name__}; please report this")


@contextlib.contextmanager
def frozen_parameters(model: Any) -> Iterator[None]:
    """Parameters do not require grad while an engine runs (restored on exit, also on errors), so
    that only tensors derived from the inputs form the autograd graph."""
    module = _owning_module(model)
    params = list(module.parameters()) if module is not None else []
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


def _owning_module(model: Any) -> nn.Module | None:
    """The module behind ``model``: itself, the owner of a bound method, or a partial's target."""
    if isinstance(model, nn.Module):
        return model
    if isinstance(model, functools.partial):
        return _owning_module(model.func)
    owner = getattr(model, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning from ``model_guard`` point at the user's code
    (the first frame outside propex and contextlib), however deep inside propex it was raised."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(2), 2   # level 1 is model_guard, which calls warnings.warn
    while frame is not None and (frame.f_code.co_filename.startswith(here)
                                 or frame.f_code.co_filename == contextlib.__file__):
        frame, level = frame.f_back, level + 1
    return level


def _hook_counts(m: nn.Module) -> tuple[int, ...]:
    return (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
            len(getattr(m, "_backward_pre_hooks", {})))

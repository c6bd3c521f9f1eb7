"""Finding the layer that embeds token ids: the default ``layer=`` for integer inputs.

Order of resolution:

1. ``model.get_input_embeddings()`` (Hugging Face models, and any model defining it);
2. the single ``nn.Embedding`` of the model;
3. with several, the ones that receive the ids themselves in a probe forward pass (position
   or token-type embeddings receive other tensors); exactly one must remain, else a
   ValueError names the candidates and asks for ``layer=``.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn


def _module_names(model: nn.Module) -> dict[nn.Module, str]:
    return {m: n for n, m in model.named_modules()}


def find_input_embedding(model: Any, input_ids: Tensor | None = None,
                         forward_kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """The module that embeds the token ids of ``model`` (see the module docstring)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module to find its input embedding, got {type(model).__name__}; "
                        "pass layer= explicitly")
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        try:
            found = getter()
        except NotImplementedError:
            found = None
        if isinstance(found, nn.Module) and any(m is found for m in model.modules()):
            return found
    names = _module_names(model)
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    if not embeddings:
        raise ValueError("layer: the model has no nn.Embedding and no get_input_embeddings(); pass layer= "
                         "(the module or dotted name of the layer that embeds the token ids)")
    if len(embeddings) == 1:
        return embeddings[0]
    if input_ids is None:
        raise ValueError(f"layer: the model has several nn.Embedding modules "
                         f"({', '.join(repr(names[m]) for m in embeddings)}); pass layer= to choose one")
    consumers = _probe_consumers(model, embeddings, input_ids, forward_kwargs or {})
    if len(consumers) == 1:
        return consumers[0]
    listed = consumers or embeddings
    raise ValueError(
        f"layer: cannot tell which embedding takes the token ids: {', '.join(repr(names[m]) for m in listed)} "
        f"{'all receive them' if consumers else 'are candidates'}; pass layer= to choose one")


def _probe_consumers(model: nn.Module, embeddings: list[nn.Module], ids: Tensor,
                     kwargs: Mapping[str, Any]) -> list[nn.Module]:
    """The embeddings whose input equals ``ids`` in one forward pass (no grad, hooks removed)."""
    hit: list[nn.Module] = []

    def pre_hook(module: nn.Module, args: tuple) -> None:
        value = args[0] if args else None
        if isinstance(value, Tensor) and value.shape == ids.shape and torch.equal(value, ids):
            if module not in hit:
                hit.append(module)
    handles = [m.register_forward_pre_hook(pre_hook) for m in embeddings]
    try:
        with torch.no_grad():
            model(ids, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return hit


def default_token_layer(model: Any, inputs: tuple[Tensor, ...], forward_kwargs: Mapping[str, Any] | None
                        ) -> nn.Module | None:
    """The embedding to attribute to when ``x`` is one tensor of integer token ids and no ``layer=``
    was given; None when ``x`` is floating point (attribute to the inputs as usual)."""
    if len(inputs) != 1 or inputs[0].is_floating_point() or inputs[0].is_complex() or inputs[0].dtype == torch.bool:
        return None
    if not isinstance(model, nn.Module):
        return None
    getter = getattr(model, "get_input_embeddings", None)
    if not callable(getter) and not any(isinstance(m, nn.Embedding) for m in model.modules()):
        return None   # nothing embeds the ids: the method's own error (pass layer=) applies
    return find_input_embedding(model, inputs[0], forward_kwargs)

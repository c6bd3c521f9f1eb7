"""Serrano & Smith's three rankings of the items one attention layer reads.

For the attention layer ``layer`` (call order) and the explained query ``position``, with α the
attention weights (heads averaged) and y the explained score (``target``, default the
predicted class):

* ``"attention"``: α_i;
* ``"gradient"``: ∂y/∂α_i (signed: erasing an item with a large positive gradient should lower y);
* ``"gradient_x_attention"``: α_i · ∂y/∂α_i.

Serrano, S. & Smith, N. A. "Is Attention Interpretable?", ACL 2019 (their section 5 rankings).
One forward and one backward pass; the result feeds ``propex.evaluate.erasure``.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from ..inputs import as_input_tuple, check_forward_kwargs
from ..model_call import model_guard
from ..targets import resolve_target
from .capture import capture_attention
from .methods import _rows, is_decoder, resolve_position, token_mask


def attention_rankings(model: Any, x: Tensor, target: Any = None, *, forward_kwargs: Mapping[str, Any] | None = None,
                       layer: int = -1, position: Any = None) -> dict[str, Tensor]:
    """``{"attention", "gradient", "gradient_x_attention"}`` → ``[N, T]`` scores (padding 0)."""
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"layer must be an int (attention call index), got {layer!r}")
    inputs, _ = as_input_tuple(x)
    fkw = check_forward_kwargs(forward_kwargs)
    with model_guard(model):
        maps = capture_attention(model, inputs, fkw)
        if not -len(maps.maps) <= layer < len(maps.maps):
            raise ValueError(f"layer={layer} is out of range: the model made {len(maps.maps)} attention calls")
        selector = resolve_target(target, maps.outputs.detach())
        if selector.multi:
            raise ValueError("target: one target per sample ([N] class indices), not [N, T]")
        n = inputs[0].shape[0]
        with torch.enable_grad():
            score = selector.select(maps.outputs, torch.arange(n, device=maps.outputs.device)).sum()
            grads = maps.gradients(score)
    a, g = maps.maps[layer].detach(), grads[layer].detach()
    t = a.shape[-1]
    mask = token_mask(fkw, n, t, a.device)
    pos = resolve_position(position, n, t, mask, decoder=is_decoder(model, maps))
    alpha, grad = _rows(a.mean(1), pos), _rows(g.mean(1), pos)
    keep = mask.to(alpha.dtype)
    return {"attention": alpha * keep, "gradient": grad * keep, "gradient_x_attention": alpha * grad * keep}

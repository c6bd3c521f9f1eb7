"""Attention-based explanations: raw attention, rollout, flow and gradient-weighted attention.

Every method returns ``attributions`` of shape ``[N, T]``: the relevance of each (key) token for
the explained query ``position`` (see ``resolve_position``). Padded tokens (``attention_mask == 0``
in ``forward_kwargs``) get 0. The maps come from ``propex.attention.capture`` (nn.MultiheadAttention
or eager Hugging Face attention), one forward pass with autograd on.

* ``attention``: A_l[position, :] of one layer (``layer=``, default the last; ``"mean"`` averages
  the layers), one head (``head=``) or the heads reduced (``reduce="mean"|"max"``).
* ``attention_rollout``: R = Â_L ··· Â_1 with Â = rownorm(0.5·Ā + 0.5·I), Ā the heads reduced;
  attributions R[position, :] (Abnar & Zuidema, ACL 2020).
* ``attention_flow``: maximum flow from each input token to the output node ``position`` in the
  layered graph with capacities Â (Abnar & Zuidema, ACL 2020).
* ``grad_attention``: Chefer, Gur & Wolf's generic rule for self-attention (ICCV 2021,
  "Generic Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder
  Transformers"): R ← R + Ā·R layer by layer from R = I, with Ā = E_h[(∇A ⊙ A)⁺] and ∇A the
  gradient of the explained score with respect to the attention probabilities; attributions
  R[position, :].
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from ..api import register
from ..base import Explanation, Method
from ..inputs import as_input_tuple, check_forward_kwargs
from ..targets import resolve_target
from .capture import AttentionMaps, capture_attention
from .graph import attention_flow, residual_attention, rollout

_REDUCTIONS = ("mean", "max")
_POSITIONS = ("first", "last")


class AttentionMethod(Method):
    """Shared machinery: capture, explained position, head reduction, padding.

    Args:
        position: the explained (query) token: an int (negative counts from the end), ``"first"``,
            ``"last"``, or a sequence / ``[N]`` tensor of one index per sample. ``None`` (default):
            ``"last"`` for decoders (``config.is_decoder`` or ``is_encoder_decoder``, an attention
            module with ``is_causal``, or maps that are all lower-triangular), else ``"first"``
            (the [CLS] token of BERT / ViT). With an ``attention_mask``, "first"/"last" mean the
            first/last non-padded token of each sample.
        reduce: how to combine the heads: ``"mean"`` (default, the papers' choice) or ``"max"``.
    """

    family = "attention"

    def __init__(self, model: Any, *, position: Any = None, reduce: str = "mean", **options: Any):
        if reduce not in _REDUCTIONS:
            raise ValueError(f"reduce must be one of {_REDUCTIONS}, got {reduce!r}")
        if isinstance(position, str) and position not in _POSITIONS:
            raise ValueError(f"position must be an int, 'first', 'last', a sequence of ints or None, got {position!r}")
        if isinstance(position, bool) or (position is not None and not isinstance(position, (int, str, Sequence, Tensor))):
            raise TypeError(f"position must be an int, 'first', 'last', a sequence of ints or None, got {position!r}")
        super().__init__(model, position=position, reduce=reduce, **options)
        self.position = position
        self.reduce = reduce

    # ------------------------------------------------------------------ the pass
    def _explain(self, x: Any, target: Any, forward_kwargs: dict[str, Any] | None) -> Explanation:
        inputs, _ = as_input_tuple(x)
        fkw = check_forward_kwargs(forward_kwargs)
        maps = capture_attention(self.model, inputs, fkw)
        selector = resolve_target(target, maps.outputs.detach())
        n, t = inputs[0].shape[0], maps.maps[-1].shape[-1]
        mask = token_mask(fkw, n, t, maps.maps[-1].device)
        position = resolve_position(self.position, n, t, mask, decoder=is_decoder(self.model, maps))
        scores = self._scores(maps, selector, position, mask)
        scores = (scores * mask.to(scores.dtype)).detach()
        return Explanation(attributions=scores, target=selector.public(), outputs=maps.outputs.detach(),
                           delta=None, method=self.name, options=dict(self.options))

    def _scores(self, maps: AttentionMaps, selector: Any, position: Tensor, mask: Tensor) -> Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def _heads(self, a: Tensor) -> Tensor:
        return a.mean(dim=1) if self.reduce == "mean" else a.amax(dim=1)

    def _square_maps(self, maps: AttentionMaps) -> list[Tensor]:
        """The maps as a stack of self-attention layers of one shape (rollout, flow, Chefer)."""
        shapes = {tuple(m.shape) for m in maps.maps}
        square = all(m.shape[-1] == m.shape[-2] for m in maps.maps)
        if len(shapes) != 1 or not square:
            listing = ", ".join(f"{name}: {tuple(m.shape)}" for name, m in zip(maps.modules, maps.maps))
            raise ValueError(f"{self.name} needs a stack of self-attention maps [N, H, T, T] of one shape; the model's "
                             f"attention modules gave {listing}. Explain a single self-attention stack (e.g. the "
                             "encoder of an encoder-decoder model), or use method='attention' with layer=")
        return maps.maps


def token_mask(forward_kwargs: dict[str, Any], n: int, t: int, device: torch.device) -> Tensor:
    """``[N, T]`` bool: True for real tokens (``forward_kwargs["attention_mask"]`` when it is ``[N, T]``)."""
    mask = forward_kwargs.get("attention_mask")
    if isinstance(mask, Tensor) and mask.dim() == 2 and tuple(mask.shape) == (n, t):
        return mask.to(device) != 0
    return torch.ones(n, t, dtype=torch.bool, device=device)


def is_decoder(model: Any, maps: AttentionMaps) -> bool:
    """Decoder (explain the last token) or encoder (the first): config flags, ``is_causal`` attention
    modules, or maps whose strictly upper triangles are all zero."""
    for module in getattr(model, "modules", lambda: [])():
        config = getattr(module, "config", None)
        if config is not None and (getattr(config, "is_decoder", False) or getattr(config, "is_encoder_decoder", False)):
            return True
    if maps.causal:
        return True
    if all(m.shape[-1] == m.shape[-2] and m.shape[-1] > 1 for m in maps.maps):
        return all(bool((torch.triu(m.detach(), diagonal=1) == 0).all()) for m in maps.maps)
    return False


def resolve_position(position: Any, n: int, t: int, mask: Tensor, decoder: bool) -> Tensor:
    """``[N]`` query indices for ``position`` (see ``AttentionMethod``)."""
    if position is None:
        position = "last" if decoder else "first"
    if position == "first":
        return mask.to(torch.uint8).argmax(dim=1)
    if position == "last":
        return t - 1 - mask.flip(1).to(torch.uint8).argmax(dim=1)
    if isinstance(position, int):
        if not -t <= position < t:
            raise ValueError(f"position={position} is out of range for sequences of T={t} tokens")
        return torch.full((n,), position % t, dtype=torch.long, device=mask.device)
    pos = torch.as_tensor(position, device=mask.device)
    if pos.dim() != 1 or pos.shape[0] != n or pos.is_floating_point():
        raise ValueError(f"position: a per-sample position must be N={n} ints, got {tuple(pos.shape)} {pos.dtype}")
    if bool(((pos < -t) | (pos >= t)).any()):
        raise ValueError(f"position: indices must lie in [-{t}, {t}), got {pos.tolist()}")
    return pos.long() % t


def _rows(a: Tensor, position: Tensor) -> Tensor:
    """``a[n, position[n], :]`` for ``a`` of shape ``[N, T_q, T_k]`` (row 0 when there is one query,
    e.g. a learned pooling query)."""
    if a.shape[1] == 1:
        return a[:, 0]
    if bool((position >= a.shape[1]).any()):
        raise ValueError(f"position {position.tolist()} is out of range for attention maps with {a.shape[1]} queries")
    return a[torch.arange(a.shape[0], device=a.device), position.to(a.device)]


@register
class RawAttention(AttentionMethod):
    """Raw attention weights A_l[position, :] of one layer (Bahdanau et al. 2015; read as an
    explanation, e.g. by Jain & Wallace 2019 and Serrano & Smith 2019, who question it).

    Args:
        layer: index of the attention call (call order, negative from the end; default -1, the
            last), or ``"mean"`` to average all layers (which must share a shape).
        head: one head's weights (int), or ``None`` (default) to reduce the heads with ``reduce``.
        position, reduce: see ``AttentionMethod``.
    """

    name = "attention"
    aliases = ("raw_attention",)

    def __init__(self, model: Any, *, layer: int | str = -1, head: int | None = None, position: Any = None,
                 reduce: str = "mean", **options: Any):
        if not (layer == "mean" or (isinstance(layer, int) and not isinstance(layer, bool))):
            raise TypeError(f"layer must be an int (attention call index) or 'mean', got {layer!r}")
        if head is not None and (isinstance(head, bool) or not isinstance(head, int)):
            raise TypeError(f"head must be an int or None, got {head!r}")
        super().__init__(model, position=position, reduce=reduce, layer=layer, head=head, **options)
        self.layer, self.head = layer, head

    def _one(self, a: Tensor) -> Tensor:
        if self.head is None:
            return self._heads(a)
        if not -a.shape[1] <= self.head < a.shape[1]:
            raise ValueError(f"head={self.head} is out of range: the layer has {a.shape[1]} heads")
        return a[:, self.head]

    def _scores(self, maps: AttentionMaps, selector: Any, position: Tensor, mask: Tensor) -> Tensor:
        layers = maps.maps
        if self.layer == "mean":
            stack = self._square_maps(maps) if len({tuple(m.shape) for m in layers}) > 1 else layers
            a = torch.stack([self._one(m) for m in stack]).mean(0)
        else:
            if not -len(layers) <= self.layer < len(layers):
                raise ValueError(f"layer={self.layer} is out of range: the model made {len(layers)} attention calls "
                                 f"({', '.join(maps.modules)})")
            a = self._one(layers[self.layer])
        return _rows(a.detach(), position)


@register
class AttentionRollout(AttentionMethod):
    """Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020).

    R = Â_L · Â_{L-1} ··· Â_1 with Â_l = rownorm(0.5·Ā_l + 0.5·I) and Ā_l the heads of layer l
    reduced (``reduce``); attributions R[position, :]. Rows of R sum to 1.
    """

    name = "attention_rollout"
    aliases = ("rollout",)

    def __init__(self, model: Any, *, position: Any = None, reduce: str = "mean", **options: Any):
        super().__init__(model, position=position, reduce=reduce, **options)

    def _scores(self, maps: AttentionMaps, selector: Any, position: Tensor, mask: Tensor) -> Tensor:
        layers = [self._heads(m.detach()) for m in self._square_maps(maps)]
        return _rows(rollout(layers), position)


@register
class AttentionFlow(AttentionMethod):
    """Attention flow (Abnar & Zuidema, ACL 2020).

    The layered graph has a node (l, i) per layer boundary l = 0..L and token i, and an edge
    (l-1, j) → (l, i) with capacity Â_l[i, j] (Â as in rollout). The attribution of token j is the
    value of a maximum flow from (0, j) to (L, position) (``propex.attention.graph.max_flow``:
    batched push-relabel, all N·T problems at once). Cost grows quickly with L·T; meant for small
    models / short sequences. Padded tokens are removed from the graph.
    """

    name = "attention_flow"
    aliases = ("flow",)

    def __init__(self, model: Any, *, position: Any = None, reduce: str = "mean", **options: Any):
        super().__init__(model, position=position, reduce=reduce, **options)

    def _scores(self, maps: AttentionMaps, selector: Any, position: Tensor, mask: Tensor) -> Tensor:
        layers = [residual_attention(self._heads(m.detach())) for m in self._square_maps(maps)]
        keep = mask.to(layers[0].dtype)
        keep = keep.unsqueeze(2) * keep.unsqueeze(1)
        return attention_flow([a * keep for a in layers], position)


@register
class GradAttention(AttentionMethod):
    """Gradient-weighted attention, Chefer, Gur & Wolf's generic rule (ICCV 2021).

    R⁰ = I; for each self-attention layer l (first to last): Ā_l = E_h[(∇A_l ⊙ A_l)⁺],
    R ← R + Ā_l · R, where ∇A_l = ∂y_t/∂A_l is the gradient of the explained score (``target``)
    with respect to the layer's attention probabilities (one backward pass for all layers and
    samples). Attributions R[position, :]; the position's own entry includes the identity R⁰.
    ``reduce="max"`` takes the maximum over heads instead of the mean.
    """

    name = "grad_attention"
    aliases = ("chefer", "generic_attention")

    def __init__(self, model: Any, *, position: Any = None, reduce: str = "mean", **options: Any):
        super().__init__(model, position=position, reduce=reduce, **options)

    def _scores(self, maps: AttentionMaps, selector: Any, position: Tensor, mask: Tensor) -> Tensor:
        layers = self._square_maps(maps)
        if selector.multi:
            raise ValueError("target: grad_attention explains one target per sample; pass [N] class indices, not [N, T]")
        n = maps.outputs.shape[0]
        with torch.enable_grad():
            score = selector.select(maps.outputs, torch.arange(n, device=maps.outputs.device))
            grads = maps.gradients(score.sum())
        t = layers[0].shape[-1]
        relevance = torch.eye(t, dtype=layers[0].dtype, device=layers[0].device).expand(n, t, t)
        for a, g in zip(layers, grads):
            cam = self._heads((g * a).detach().clamp_min(0))
            relevance = relevance + cam @ relevance
        return _rows(relevance, position)

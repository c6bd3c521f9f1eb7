r"""Token-level attribution: any method, at the embedding of the token ids, reduced per token.

``explain_tokens(model, input_ids, method, ...)`` attributes at the layer that embeds the ids
(``layer=``; by default the model's input embedding, see :mod:`propex.text.embedding`), so
attributions are ``[N, T, D]`` (``[N, K, T, D]`` for K targets per sample), and adds the
per-token scores ``[N, T]`` (``[N, K, T]``):

.. math:: s_t = \sum_d a_{t,d} \quad (\texttt{reduce="sum"}),\qquad
          s_t = \lVert a_{t,:}\rVert_2 \quad (\texttt{"l2"}),\qquad
          s_t = \sum_d |a_{t,d}| \quad (\texttt{"abs"}).

``sum`` keeps completeness (IG, DeepLIFT: the token scores add up to f(x) − f(baseline)); ``l2``
suits signless maps (saliency, SmoothGrad).

Baselines (IG, DeepLIFT and other methods with a ``baseline`` option): ``"pad"`` (default),
``"mask"``, a token id, or ``"zero"`` (the zero vector at the layer). The baseline replaces
the embedding at every *content* position; special tokens ([CLS], [SEP], BOS/EOS, …) and
padding keep their real embedding (``keep_special=False`` replaces special tokens too), so
their attribution under IG/DeepLIFT is 0 and the explanation is about the content tokens.
Padding positions (``attention_mask == 0``) get exactly 0 for every method.

LRP runs with ``composite="epsilon"`` unless a composite is given: the image default
(``epsilon_plus_flat``) applies the flat rule to the first op, which smears relevance across
neighbouring tokens.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..api import get_method
from ..base import Explanation, _accepted_options
from ..baselines import LayerBaseline
from ..layers import LayerTap, resolve_layer
from ..model_call import ModelCall, model_guard
from .embedding import find_input_embedding

REDUCTIONS = ("sum", "l2", "abs")
NAMED_BASELINES = ("pad", "mask", "zero")
_SPECIAL_CONFIG_KEYS = ("cls_token_id", "sep_token_id", "bos_token_id", "eos_token_id", "mask_token_id",
                        "unk_token_id_special")


@dataclass(repr=False)
class TokenExplanation(Explanation):
    """An :class:`~propex.Explanation` at the token embedding, with per-token scores.

    Extra attributes: ``token_attributions`` (``[N, T]`` or ``[N, K, T]``: the attributions reduced
    over the embedding dimension with ``reduce``, 0 at padding), ``input_ids``, ``attention_mask``
    (``[N, T]``, 1 = real token), ``special_mask`` (``[N, T]`` bool, special tokens), ``tokens``
    (token strings per sample when a tokenizer was given), ``reduce``, ``layer`` (the layer's name).
    """

    token_attributions: Tensor | None = None
    input_ids: Tensor | None = None
    attention_mask: Tensor | None = None
    special_mask: Tensor | None = None
    tokens: list[list[str]] | None = None
    reduce: str = "sum"
    layer: str = ""

    def __repr__(self) -> str:
        base = super().__repr__()[len("Explanation("):-1]
        return f"TokenExplanation({base}, tokens={tuple(self.token_attributions.shape)}, reduce={self.reduce!r})"


def token_scores(explanation: Explanation | Tensor, reduce: str = "sum", attention_mask: Tensor | None = None
                 ) -> Tensor:
    """Per-token scores from attributions at a token embedding ``[N, T, D]`` (or ``[N, K, T, D]``).

    ``reduce``: ``"sum"`` over D (keeps completeness), ``"l2"`` (the norm), ``"abs"`` (sum of |a|).
    Positions where ``attention_mask`` (``[N, T]``; taken from a :class:`TokenExplanation` when not
    given) is 0 are exactly 0. Returns ``[N, T]`` (or ``[N, K, T]``).
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")
    if isinstance(explanation, Explanation):
        attributions = explanation.attributions
        if attention_mask is None:
            attention_mask = getattr(explanation, "attention_mask", None)
    else:
        attributions = explanation
    if not isinstance(attributions, Tensor) or attributions.dim() < 3:
        shape = tuple(attributions.shape) if isinstance(attributions, Tensor) else type(attributions).__name__
        raise ValueError(f"explanation: token scores need attributions [N, T, D] (or [N, K, T, D]) at a token "
                         f"embedding, got {shape}")
    if reduce == "sum":
        scores = attributions.sum(-1)
    elif reduce == "l2":
        scores = attributions.norm(dim=-1)
    else:
        scores = attributions.abs().sum(-1)
    if attention_mask is not None:
        mask = _mask_like(attention_mask, scores, "attention_mask")
        scores = scores * mask
    return scores


def _mask_like(mask: Tensor, scores: Tensor, name: str) -> Tensor:
    """``mask`` ``[N, T]`` as a float tensor broadcasting to ``scores`` ``[N, T]`` or ``[N, K, T]``."""
    n, t = scores.shape[0], scores.shape[-1]
    if tuple(mask.shape) != (n, t):
        raise ValueError(f"{name} must be shaped [N, T] = {(n, t)}, got {tuple(mask.shape)}")
    mask = (mask != 0).to(device=scores.device, dtype=scores.dtype)
    return mask if scores.dim() == 2 else mask[:, None, :]


# ---------------------------------------------------------------------------------------------- checks
def _config(model: Any) -> Any:
    return getattr(model, "config", None)


def _config_int(model: Any, key: str) -> int | None:
    value = getattr(_config(model), key, None)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _check_ids(input_ids: Any, vocab: int | None, max_len: int | None) -> Tensor:
    if not isinstance(input_ids, Tensor):
        raise TypeError(f"input_ids must be a LongTensor [N, T] of token ids, got {type(input_ids).__name__}")
    if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
        raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    if input_ids.dim() != 2:
        hint = " (add a batch dimension: input_ids[None])" if input_ids.dim() == 1 else ""
        raise ValueError(f"input_ids must be shaped [N, T], got {tuple(input_ids.shape)}{hint}")
    if vocab is not None and input_ids.numel():
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= vocab:
            bad = input_ids[(input_ids < 0) | (input_ids >= vocab)].unique()[:5].tolist()
            raise ValueError(f"input_ids holds token ids outside the vocabulary [0, {vocab}): e.g. {bad}")
    if max_len is not None and input_ids.shape[1] > max_len:
        raise ValueError(f"input_ids has sequence length {input_ids.shape[1]}, longer than the model's maximum "
                         f"{max_len} (max_position_embeddings); truncate the text")
    return input_ids


def _check_mask(attention_mask: Any, input_ids: Tensor, pad_id: int | None) -> Tensor | None:
    if attention_mask is None:
        if pad_id is not None and bool((input_ids == pad_id).any()):
            count = int((input_ids == pad_id).sum())
            raise ValueError(f"attention_mask: input_ids holds the padding id {pad_id} at {count} positions but "
                             "no attention_mask was given; pass attention_mask= (1 = real token, 0 = padding), "
                             "e.g. the tokenizer's, so that padding is masked")
        return None
    if not isinstance(attention_mask, Tensor) or tuple(attention_mask.shape) != tuple(input_ids.shape):
        got = tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else type(attention_mask).__name__
        raise ValueError(f"attention_mask must be a tensor shaped like input_ids {tuple(input_ids.shape)}, "
                         f"got {got}")
    if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise ValueError("attention_mask must hold 0 (padding) and 1 (real token) only")
    return attention_mask


def _special_ids(model: Any, tokenizer: Any, special_ids: Any, pad_id: int | None) -> set[int]:
    if special_ids is not None:
        return {int(i) for i in special_ids}
    ids: set[int] = set()
    if tokenizer is not None:
        ids.update(int(i) for i in getattr(tokenizer, "all_special_ids", []) or [])
    else:
        for key in _SPECIAL_CONFIG_KEYS:
            value = _config_int(model, key)
            if value is not None:
                ids.add(value)
    ids.discard(-1)
    if pad_id is not None:
        ids.discard(pad_id)   # padding is told by the attention mask
    return ids


def _token_id(model: Any, tokenizer: Any, given: int | None, key: str) -> int | None:
    if given is not None:
        return int(given)
    if tokenizer is not None and getattr(tokenizer, key, None) is not None:
        return int(getattr(tokenizer, key))
    return _config_int(model, key)


# ---------------------------------------------------------------------------------------------- explain
def explain_tokens(model: Any, input_ids: Tensor, method: str = "integrated_gradients", target: Any = None, *,
                   attention_mask: Tensor | None = None, tokenizer: Any = None, layer: Any = None,
                   baseline: Any = "pad", keep_special: bool = True, special_ids: Any = None,
                   pad_token_id: int | None = None, mask_token_id: int | None = None, reduce: str = "sum",
                   forward_kwargs: Mapping[str, Any] | None = None, **options: Any) -> TokenExplanation:
    """Explain ``model(input_ids, attention_mask=...)`` at the token embedding.

    Args:
        model: an ``nn.Module`` taking token ids first (Hugging Face models as they are).
        input_ids: ``[N, T]`` integer ids (padded batches with ``attention_mask``).
        method: a gradient or propagation method name (``saliency``, ``input_x_gradient``,
            ``integrated_gradients``, ``smoothgrad``, ``deeplift``, ``lrp``, ...).
        target: as for ``propex.explain`` (``None``: the top class).
        attention_mask: ``[N, T]`` (1 = token, 0 = padding), passed to the model as
            ``attention_mask=``; required when ``input_ids`` contains the padding id.
        tokenizer: optional; gives the padding/mask/special ids and ``tokens``.
        layer: the embedding layer (module or dotted name); default: the input embedding.
        baseline: ``"pad"``, ``"mask"``, ``"zero"``, a token id, an ``[N, T]`` tensor of ids or a
            float tensor in the layer's space; used by methods with a ``baseline`` option.
        keep_special: special tokens keep their real embedding in the baseline.
        special_ids / pad_token_id / mask_token_id: override what the tokenizer / config say.
        reduce: ``"sum"``, ``"l2"`` or ``"abs"`` for ``token_attributions``.
        forward_kwargs: other keyword arguments of the forward pass (e.g. ``token_type_ids``).
        **options: the method's options (``n_steps``, ``batch_size``, ...).
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module that embeds token ids, got {type(model).__name__}")
    cls = get_method(method)
    accepted = _accepted_options(cls)
    if "layer" not in accepted:
        raise ValueError(f"method={method!r} cannot attribute at a layer; token attribution supports the gradient "
                         "and propagation methods (saliency, input_x_gradient, integrated_gradients, smoothgrad, "
                         "deeplift, lrp, ...)")
    kwargs = dict(forward_kwargs or {})
    if attention_mask is None and "attention_mask" in kwargs:
        attention_mask = kwargs.pop("attention_mask")
    pad_id = _token_id(model, tokenizer, pad_token_id, "pad_token_id")
    max_len = _config_int(model, "max_position_embeddings")
    embedding = resolve_layer(model, layer) if layer is not None else None
    vocab = _config_int(model, "vocab_size")
    if vocab is None:
        probe = embedding if embedding is not None else _quiet_embedding(model)
        vocab = probe.num_embeddings if isinstance(probe, nn.Embedding) else None
    input_ids = _check_ids(input_ids, vocab, max_len)
    attention_mask = _check_mask(attention_mask, input_ids, pad_id)
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if embedding is None:
        embedding = find_input_embedding(model, input_ids, kwargs)
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    specials = _special_ids(model, tokenizer, special_ids, pad_id)
    special_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    for sid in specials:
        special_mask |= input_ids == sid
    keep = (mask == 0) | (special_mask if keep_special else torch.zeros_like(special_mask))

    opts = dict(options)
    if cls.name == "lrp" and "composite" not in opts:
        # LRP-ε everywhere (Arras et al. 2017): the image default's flat rule on the first op would
        # spread each token's relevance over its neighbours (measured: trigger hit rate 0.81 vs 1.0)
        opts["composite"] = "epsilon"
    if "baseline" in accepted:
        opts["baseline"] = _baseline(model, embedding, input_ids, kwargs, baseline, keep, tokenizer, pad_id,
                                     mask_token_id, vocab)
    exp = cls(model, layer=embedding, **opts).explain(input_ids, target, forward_kwargs=kwargs)
    attributions = exp.attributions
    multi = exp.target is not None and exp.target.dim() == 2
    lead = attributions.shape[:3] if multi else attributions.shape[:2]
    expected = (input_ids.shape[0], *((lead[1],) if multi else ()), input_ids.shape[1])
    if attributions.dim() < len(expected) + 1 or tuple(lead) != expected:
        raise ValueError(f"layer: the layer's tensor {tuple(attributions.shape)} is not [N, T, D] per token; "
                         "choose the layer that embeds the token ids")
    pad_zero = (mask != 0).to(attributions.dtype)
    pad_zero = pad_zero[:, None, :, None] if multi else pad_zero[:, :, None]
    attributions = attributions * pad_zero.reshape(*pad_zero.shape, *[1] * (attributions.dim() - pad_zero.dim()))
    scores = token_scores(attributions if attributions.dim() == (4 if multi else 3)
                          else attributions.flatten(3 if multi else 2), reduce, mask)
    tokens = None
    if tokenizer is not None and hasattr(tokenizer, "convert_ids_to_tokens"):
        tokens = [list(tokenizer.convert_ids_to_tokens(row.tolist())) for row in input_ids]
    options_out = dict(exp.options)
    options_out["baseline"] = baseline if "baseline" in accepted else None
    return TokenExplanation(attributions, exp.target, exp.outputs, exp.delta, exp.method, options_out,
                            token_attributions=scores, input_ids=input_ids, attention_mask=mask,
                            special_mask=special_mask, tokens=tokens, reduce=reduce,
                            layer=_layer_name(model, embedding))


def _quiet_embedding(model: nn.Module) -> nn.Module | None:
    try:
        return find_input_embedding(model)
    except ValueError:
        return None


def _layer_name(model: nn.Module, layer: nn.Module) -> str:
    return next((name for name, m in model.named_modules() if m is layer), type(layer).__name__)


def _baseline(model: nn.Module, embedding: nn.Module, input_ids: Tensor, kwargs: dict[str, Any], spec: Any,
              keep: Tensor, tokenizer: Any, pad_id: int | None, mask_token_id: int | None, vocab: int | None) -> Any:
    """The baseline as token ids ``[N, T]`` (input space) or a :class:`LayerBaseline`."""
    if isinstance(spec, Tensor):
        if spec.is_floating_point():
            return LayerBaseline(spec)
        if tuple(spec.shape) != tuple(input_ids.shape):
            raise ValueError(f"baseline: a tensor of token ids must be shaped like input_ids "
                             f"{tuple(input_ids.shape)}, got {tuple(spec.shape)}")
        _check_ids(spec, vocab, None)
        return spec.to(device=input_ids.device, dtype=input_ids.dtype)
    if isinstance(spec, str) and spec == "zero":
        tap = LayerTap(embedding, name="layer")
        with torch.no_grad(), model_guard(model), tap.active():
            ModelCall(model).first_call((input_ids,), kwargs)
        value = tap.captured.detach()
        keep_f = keep.to(value.dtype).reshape(*keep.shape, *[1] * (value.dim() - 2))
        return LayerBaseline(value * keep_f)
    if isinstance(spec, str) and spec in ("pad", "mask"):
        key = "pad_token_id" if spec == "pad" else "mask_token_id"
        token = pad_id if spec == "pad" else _token_id(model, tokenizer, mask_token_id, key)
        if token is None:
            raise ValueError(f"baseline={spec!r}: the model's {key} is unknown (no tokenizer or config gives it); "
                             f"pass {key}= or a token id as baseline=")
    elif isinstance(spec, int) and not isinstance(spec, bool):
        token = spec
        if token < 0 or (vocab is not None and token >= vocab):
            raise ValueError(f"baseline: token id {token} is outside the vocabulary [0, {vocab})")
    else:
        raise ValueError(f"baseline must be one of {', '.join(map(repr, NAMED_BASELINES))}, a token id, or a tensor "
                         f"(token ids [N, T] or values in the layer's space); got {spec!r}")
    return torch.where(keep, input_ids, torch.full_like(input_ids, token))

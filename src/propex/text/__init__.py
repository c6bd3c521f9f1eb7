"""Token-level explanations for models that embed token ids (see docs/text.md).

* :func:`explain_tokens`: any gradient/propagation method at the token embedding, with
  pad/mask/zero baselines, padding and special tokens handled; a :class:`TokenExplanation`
  with ``attributions`` ``[N, T, D]`` and ``token_attributions`` ``[N, T]``.
* :func:`token_scores`: the per-token reduction (sum, L2, abs) of such attributions.
* :func:`find_input_embedding`: the layer that embeds the ids (the default ``layer=``).
* :func:`similarity_attributions`: which tokens of two sentences drive their embedding
  similarity (sentence-transformers style mean pooling); :func:`load_minilm` loads the offline
  all-MiniLM-L6-v2 (extra ``text``).

Core needs only torch; the similarity helpers import ``transformers`` lazily.
"""
from .embedding import default_token_layer, find_input_embedding
from .similarity import (SentenceSimilarity, SimilarityExplanation, load_minilm, sentence_embeddings,
                         similarity_attributions)
from .tokens import REDUCTIONS, TokenExplanation, explain_tokens, token_scores

__all__ = [
    "explain_tokens", "token_scores", "TokenExplanation", "REDUCTIONS", "find_input_embedding",
    "default_token_layer", "similarity_attributions", "SimilarityExplanation", "SentenceSimilarity",
    "sentence_embeddings", "load_minilm",
]

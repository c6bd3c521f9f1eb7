"""BiLRP on the embedded digits model: which pairs of 2×2 patches make two digits similar?

The embedding is the model's 64-d penultimate layer; the similarity is the dot product of two
embeddings. Run: ``python examples/bilrp_digits.py [out.png]``.
"""
import sys

import torch

import propex
from propex.models import load_digits_data, load_digits_model
from propex.pair_relevance import draw_pairs

model = load_digits_model()
embedder = torch.nn.Sequential(model.features, model.classifier[:3])      # [N, 64]
x, y = load_digits_data("test")
a = int((y == 3).nonzero()[0])
b = int((y == 3).nonzero()[1])
res = propex.bilrp(embedder, x[a:a + 1], x[b:b + 1], pool=2, composite="epsilon_plus", chunk=64)
print(f"similarity {res.similarity.item():.4f}, sum of pair relevances {res.relevance.sum().item():.4f} "
      f"(delta {res.delta.item():.2e})")
for i, j, r in res.top_pairs(5):
    print(f"  patch {divmod(i, 8)} of digit A with patch {divmod(j, 8)} of digit B: {r:+.4f}")
out = sys.argv[1] if len(sys.argv) > 1 else "bilrp_digits.png"
draw_pairs(x[a], x[b], res, top=25).save(out)
print("wrote", out)

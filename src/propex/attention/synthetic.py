"""Tiny attention classifiers whose attention is faithful, or unfaithful, by construction.

Both read token ids ``[N, T]`` (with an optional ``attention_mask``, 1 = token, 0 = padding) and
pool them with one ``nn.MultiheadAttention`` head driven by a learned query (Serrano & Smith's
single-attention-layer set-up): ``o = Σ_i α_i v(x_i)``, ``α = softmax_i(q·k(x_i) / √D)``. The
weights are set by hand (no training), so what the decision depends on is known exactly.

Vocabulary: 0 = padding, 1..9 = filler words, 10 = trigger, 11 = distractor. Class 1 iff the
trigger is present (fillers carry weak class-0 evidence).

* ``faithful_attention_model()``: the trigger has the highest key score (α_trigger ≈ 0.98) and the
  values are one-hot informative (trigger → class 1 by 8, filler → class 0 by 1); the output is a
  linear function of the attention-weighted value average and nothing else. Erasing the most
  attended token flips trigger samples; erasing a random one rarely does.
* ``unfaithful_attention_model()``: the attention output is multiplied by 0; the decision is made
  by a skip path, a bag of words ``Σ_i mask_i u(x_i)`` (trigger → class 1 by 3, filler → class 0 by
  0.1). Attention is concentrated on the distractor, which carries nothing, and the trigger gets
  the *lowest* key score. Erasing the most attended token changes nothing (JS = 0).

``trigger_batch(n, t, seed)`` draws data for them.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

PAD, TRIGGER, DISTRACTOR, VOCAB = 0, 10, 11, 12
_D = 4


class AttentionPoolClassifier(nn.Module):
    """Embedding → one-query attention pooling (nn.MultiheadAttention, 1 head) → 2 logits,
    plus a bag-of-words skip path: ``logits = W_att·o + Σ_i mask_i·W_skip·e(x_i) + b``."""

    def __init__(self, embedding: Tensor, query: Tensor, w_att: Tensor, w_skip: Tensor, bias: Tensor):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, _D, padding_idx=PAD)
        self.attn = nn.MultiheadAttention(_D, 1, bias=False, batch_first=True)
        self.query = nn.Parameter(query.reshape(1, 1, _D).clone())
        self.head_att = nn.Linear(_D, 2, bias=False)
        self.head_skip = nn.Linear(_D, 2)
        with torch.no_grad():
            self.embed.weight.copy_(embedding)
            eye = torch.eye(_D)
            self.attn.in_proj_weight.copy_(torch.cat([eye, eye, eye]))
            self.attn.out_proj.weight.copy_(eye)
            self.head_att.weight.copy_(w_att)
            self.head_skip.weight.copy_(w_skip)
            self.head_skip.bias.copy_(bias)

    def forward(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        e = self.embed(ids)
        mask = torch.ones(ids.shape, dtype=torch.bool, device=ids.device) if attention_mask is None \
            else attention_mask != 0
        q = self.query.expand(ids.shape[0], 1, _D)
        o = self.attn(q, e, e, key_padding_mask=~mask)[0][:, 0]
        skip = (self.head_skip(e) * mask.unsqueeze(-1).to(e.dtype)).sum(dim=1)
        return self.head_att(o) + skip


def _table(rows: dict[int, list[float]]) -> Tensor:
    table = torch.zeros(VOCAB, _D)
    for token, row in rows.items():
        table[token] = torch.tensor(row)
    return table


def faithful_attention_model() -> AttentionPoolClassifier:
    """Attention decides: see the module docstring. Features: [key score, class-0 value, class-1 value, 0]."""
    rows = {token: [0.0, 1.0, 0.0, 0.0] for token in range(1, 10)}
    rows.update({TRIGGER: [1.0, 0.0, 8.0, 0.0], DISTRACTOR: [0.0, 1.0, 0.0, 0.0]})
    pick = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    model = AttentionPoolClassifier(_table(rows), torch.tensor([12.0, 0, 0, 0]), w_att=pick,
                                    w_skip=torch.zeros(2, _D), bias=torch.zeros(2))
    return model.eval()


def unfaithful_attention_model() -> AttentionPoolClassifier:
    """A skip path decides; attention is on the distractor and least on the trigger (module docstring).
    Features: [key score, class-0 evidence, class-1 evidence, 0]."""
    rows = {token: [0.05 * token, 0.1, 0.0, 0.0] for token in range(1, 10)}
    rows.update({TRIGGER: [-1.0, 0.0, 3.0, 0.0], DISTRACTOR: [1.0, 0.0, 0.0, 0.0]})
    pick = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    model = AttentionPoolClassifier(_table(rows), torch.tensor([12.0, 0, 0, 0]), w_att=torch.zeros(2, _D),
                                    w_skip=pick, bias=torch.zeros(2))
    return model.eval()


def trigger_batch(n: int = 32, t: int = 10, seed: int = 0, trigger_rate: float = 0.5,
                  distractor: bool = True, max_padding: int = 2) -> tuple[Tensor, Tensor, Tensor]:
    """``(ids [N, T], attention_mask [N, T], labels [N])``: filler words, a trigger in a random
    position for about ``trigger_rate`` of the samples (label 1), one distractor (if
    ``distractor``), and 0..``max_padding`` padding tokens at the end."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 10, (n, t), generator=gen)
    pads = torch.randint(0, max_padding + 1, (n,), generator=gen)
    lengths = t - pads
    labels = (torch.rand(n, generator=gen) < trigger_rate).long()
    for i in range(n):
        slots = torch.randperm(int(lengths[i]), generator=gen)
        if labels[i]:
            ids[i, slots[0]] = TRIGGER
        if distractor:
            ids[i, slots[1]] = DISTRACTOR
    mask = (torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)).long()
    ids = ids.masked_fill(mask == 0, PAD)
    return ids, mask, labels

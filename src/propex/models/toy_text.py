"""A tiny text classifier with known deciding tokens: ground truth for token attributions.

The synthetic *trigger task*: a sequence is ``[CLS]`` followed by ``SEQ_LEN - 1`` tokens drawn
from a filler vocabulary; in about half of the sequences (label 1) one or two *trigger* tokens
(ids ``TRIGGER_IDS``) replace filler tokens at random positions. The label is 1 exactly when a
trigger is present, so a faithful explanation of the positive class must rank the trigger
tokens first. Optionally sequences are shorter and right-padded with ``[PAD]`` (attention mask 0).

Two architectures, both trained in a second or two on a CPU, deterministically:

* ``"transformer"`` (:class:`ToyTransformerClassifier`): token embedding + learned positions,
  one (or more) hand-written pre-residual attention blocks (``q/k/v/o`` ``nn.Linear``, an
  ``nn.Softmax`` module whose output is the attention matrix ``[N, H, T, T]``, so hooks can read
  it; plain ``matmul`` ops) with a ReLU MLP, read out at the ``[CLS]`` token.
  ``forward(ids, attention_mask=None, output_attentions=False)``; with ``output_attentions``
  it returns ``{"logits": ..., "attentions": (per layer [N, H, T, T], ...)}``.
* ``"conv"`` (:class:`ToyConvTextClassifier`): embedding → Conv1d(k=3) → ReLU → max over
  time → linear. No attention: the propagation methods need no transformer rules for it.

Padding is exact for both: padded positions are masked out (additive -1e4 on the attention
scores; zeroed embeddings and features in the conv model), so a padded sample's logits equal
the unpadded sample's.

>>> model, data, info = train_toy_text_classifier(seed=0)
>>> info["accuracy"] >= 0.95
True
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "VOCAB_SIZE", "SEQ_LEN", "PAD_ID", "CLS_ID", "TRIGGER_IDS", "FILLER_IDS",
    "ToyTextConfig", "ToyTransformerClassifier", "ToyConvTextClassifier", "TriggerData",
    "make_trigger_data", "train_toy_text_classifier",
]

VOCAB_SIZE = 50
SEQ_LEN = 16
PAD_ID = 0
CLS_ID = 1
TRIGGER_IDS: tuple[int, ...] = (2, 3, 4)
FILLER_IDS: tuple[int, ...] = tuple(range(5, VOCAB_SIZE))


@dataclass(frozen=True)
class ToyTextConfig:
    """Hugging Face-like config attributes that ``propex.text`` reads (vocabulary, maximum length,
    special ids)."""

    vocab_size: int = VOCAB_SIZE
    max_position_embeddings: int = SEQ_LEN
    pad_token_id: int = PAD_ID
    cls_token_id: int = CLS_ID
    hidden_size: int = 32
    num_attention_heads: int = 2
    num_hidden_layers: int = 1


@dataclass
class TriggerData:
    """A batch of the trigger task.

    ``input_ids`` ``[n, SEQ_LEN]`` (long), ``attention_mask`` ``[n, SEQ_LEN]`` (long, 1 = real
    token), ``labels`` ``[n]``, ``trigger_mask`` ``[n, SEQ_LEN]`` (bool, True at trigger tokens).
    """

    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor
    trigger_mask: Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def subset(self, index: Tensor | slice) -> "TriggerData":
        return TriggerData(self.input_ids[index], self.attention_mask[index], self.labels[index],
                           self.trigger_mask[index])


def make_trigger_data(n: int, seed: int = 0, *, min_length: int = SEQ_LEN, max_triggers: int = 2,
                      positive_fraction: float = 0.5) -> TriggerData:
    """``n`` sequences of the trigger task (deterministic for a given ``seed``).

    Each sequence has a length drawn from ``[min_length, SEQ_LEN]`` (``[CLS]`` included; the
    rest is ``[PAD]``); a positive one holds 1..``max_triggers`` trigger tokens at distinct random
    non-``[CLS]`` positions.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not 2 + max_triggers <= min_length + 1 <= SEQ_LEN + 1:
        raise ValueError(f"min_length must be in [{max_triggers + 1}, {SEQ_LEN}], got {min_length!r}")
    gen = torch.Generator().manual_seed(int(seed))
    filler = torch.tensor(FILLER_IDS)
    ids = filler[torch.randint(len(FILLER_IDS), (n, SEQ_LEN), generator=gen)]
    ids[:, 0] = CLS_ID
    lengths = torch.randint(min_length, SEQ_LEN + 1, (n,), generator=gen)
    labels = (torch.rand(n, generator=gen) < positive_fraction).long()
    n_trig = torch.randint(1, max_triggers + 1, (n,), generator=gen) * labels
    triggers = torch.tensor(TRIGGER_IDS)
    trigger_mask = torch.zeros(n, SEQ_LEN, dtype=torch.bool)
    for i in range(n):
        positions = 1 + torch.randperm(int(lengths[i]) - 1, generator=gen)[: int(n_trig[i])]
        ids[i, positions] = triggers[torch.randint(len(TRIGGER_IDS), (len(positions),), generator=gen)]
        trigger_mask[i, positions] = True
    mask = (torch.arange(SEQ_LEN) < lengths[:, None]).long()
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, PAD_ID))
    return TriggerData(ids, mask, labels, trigger_mask)


class ToyAttention(nn.Module):
    """Multi-head self-attention written out with plain ops (batch first).

    ``softmax(q kᵀ / sqrt(d_h) + mask_bias) v``; the ``softmax`` submodule's output is the
    attention matrix ``[N, H, T, T]``.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, h: Tensor, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
        n, t, d = h.shape

        def split(z: Tensor) -> Tensor:
            return z.reshape(n, t, self.heads, self.head_dim).transpose(1, 2)
        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / self.head_dim ** 0.5)
        if bias is not None:
            scores = scores + bias
        attn = self.softmax(scores)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(n, t, d)
        return self.o(out), attn


class ToyBlock(nn.Module):
    """``h + attn(h)`` then ``h + mlp(h)`` (ReLU MLP); no normalisation layers."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attention = ToyAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))

    def forward(self, h: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
        a, attn = self.attention(h, bias)
        h = h + a
        return h + self.mlp(h), attn


def _check_ids(ids: Tensor, vocab: int, max_len: int) -> None:
    if ids.dim() != 2 or ids.is_floating_point():
        raise ValueError(f"input_ids must be an integer tensor [N, T], got {ids.dtype} {tuple(ids.shape)}")
    if ids.shape[1] > max_len:
        raise ValueError(f"input_ids has length {ids.shape[1]}, the model takes at most {max_len}")


class ToyTransformerClassifier(nn.Module):
    """Embedding + learned positions + ``layers`` attention blocks + a linear head on ``[CLS]``."""

    def __init__(self, vocab_size: int = VOCAB_SIZE, max_len: int = SEQ_LEN, dim: int = 32, heads: int = 2,
                 layers: int = 1, n_classes: int = 2):
        super().__init__()
        self.config = ToyTextConfig(vocab_size, max_len, PAD_ID, CLS_ID, dim, heads, layers)
        self.embed = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.randn(max_len, dim) * 0.1)
        self.blocks = nn.ModuleList(ToyBlock(dim, heads) for _ in range(layers))
        self.head = nn.Linear(dim, n_classes)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                output_attentions: bool = False) -> Tensor | dict:
        _check_ids(input_ids, self.config.vocab_size, self.config.max_position_embeddings)
        t = input_ids.shape[1]
        h = self.embed(input_ids) + self.position[:t]
        bias = None
        if attention_mask is not None:
            bias = ((1.0 - attention_mask.to(h.dtype)) * -1e4)[:, None, None, :]
        attentions = []
        for block in self.blocks:
            h, attn = block(h, bias)
            attentions.append(attn)
        logits = self.head(h[:, 0])
        if output_attentions:
            return {"logits": logits, "attentions": tuple(attentions)}
        return logits


class ToyConvTextClassifier(nn.Module):
    """Embedding → Conv1d(k=3, padding 1) → ReLU → max over the real positions → linear."""

    def __init__(self, vocab_size: int = VOCAB_SIZE, max_len: int = SEQ_LEN, dim: int = 16, channels: int = 32,
                 n_classes: int = 2):
        super().__init__()
        self.config = ToyTextConfig(vocab_size, max_len, PAD_ID, CLS_ID, dim, 0, 0)
        self.embed = nn.Embedding(vocab_size, dim)
        self.conv = nn.Conv1d(dim, channels, kernel_size=3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(channels, n_classes)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        _check_ids(input_ids, self.config.vocab_size, self.config.max_position_embeddings)
        e = self.embed(input_ids)
        if attention_mask is not None:     # padding acts like the conv's zero padding
            e = e * attention_mask.to(e.dtype)[:, :, None]
        h = self.act(self.conv(e.transpose(1, 2)))
        if attention_mask is not None:     # features are >= 0: zeroed padding never wins the max
            h = h * attention_mask.to(h.dtype)[:, None, :]
        return self.head(F.adaptive_max_pool1d(h, 1).flatten(1))


ARCHITECTURES = {"transformer": ToyTransformerClassifier, "conv": ToyConvTextClassifier}


def train_toy_text_classifier(seed: int = 0, *, arch: str = "transformer", n_train: int = 2000,
                              n_test: int = 500, epochs: int = 8, min_length: int = 8, layers: int = 1
                              ) -> tuple[nn.Module, TriggerData, dict]:
    """Train a toy classifier on the trigger task; returns ``(model, test_data, info)``.

    Deterministic for a given ``seed`` (data, initialisation and batch order are seeded; CPU).
    ``test_data`` is a held-out :class:`TriggerData` (seed + 1) with variable lengths and padding;
    ``info`` holds ``accuracy`` on it, ``train_accuracy``, ``arch`` and ``seed``. The model is
    returned in eval mode. Adam (lr 3e-3), batch size 64.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}, got {arch!r}")
    train = make_trigger_data(n_train, seed=2 * seed, min_length=min_length)
    test = make_trigger_data(n_test, seed=2 * seed + 1, min_length=min_length)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ARCHITECTURES[arch](layers=layers) if arch == "transformer" else ARCHITECTURES[arch]()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(n_train, generator=gen)
            for start in range(0, n_train, 64):
                idx = order[start:start + 64]
                logits = model(train.input_ids[idx], attention_mask=train.attention_mask[idx])
                loss = F.cross_entropy(logits, train.labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(test.input_ids, attention_mask=test.attention_mask).argmax(1) == test.labels).float().mean()
        train_acc = (model(train.input_ids, attention_mask=train.attention_mask).argmax(1)
                     == train.labels).float().mean()
    return model, test, {"accuracy": float(acc), "train_accuracy": float(train_acc), "arch": arch, "seed": seed}

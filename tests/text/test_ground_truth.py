"""Ground truth: on the trigger task the methods must rank the trigger tokens first.

For each positive test sample with k trigger tokens, the k content tokens (real, non-[CLS]) with the
highest token scores are taken; the hit rate is the fraction of triggers among them, averaged over
40 samples. Thresholds sit a little below the rates measured with seed 0 (listed in docs/text.md).
"""
from __future__ import annotations

import pytest
import torch

from propex.models.toy_text import CLS_ID
from propex.text import explain_tokens

# method, options, reduction, threshold (measured rates: see docs/text.md)
GRADIENT_CASES = [
    ("saliency", {}, "l2", 0.9),
    ("input_x_gradient", {}, "sum", 0.9),
    ("integrated_gradients", {"n_steps": 24}, "sum", 0.95),
    ("smoothgrad", {"n_samples": 16, "seed": 0}, "l2", 0.9),
]
PROPAGATION_CASES = [
    ("deeplift", {}, "sum", 0.95),
    ("lrp", {}, "sum", 0.95),                       # LRP-ε (explain_tokens' default composite)
]
# DeepLIFT through the attention (softmax / matmul rules of propex.propagation.transformer) ranks
# the triggers less well than the other methods: measured 0.887 (seed 0), 0.988 (seed 1)
TRANSFORMER_PROPAGATION_CASES = [
    ("deeplift", {}, "sum", 0.85),
    ("lrp", {}, "sum", 0.95),
]


def hit_rate(scores: torch.Tensor, data) -> float:
    content = (data.attention_mask == 1) & (data.input_ids != CLS_ID)
    ranked = scores.masked_fill(~content, float("-inf")).argsort(dim=1, descending=True)
    rates = []
    for i in range(scores.shape[0]):
        k = int(data.trigger_mask[i].sum())
        rates.append(float(data.trigger_mask[i, ranked[i, :k]].float().mean()))
    return sum(rates) / len(rates)


def positives(data, n=40):
    return data.subset(torch.nonzero(data.labels == 1).flatten()[:n])


def rate(model, data, method, options, reduce):
    exp = explain_tokens(model, data.input_ids, method, 1, attention_mask=data.attention_mask, reduce=reduce,
                         **options)
    return hit_rate(exp.token_attributions, data)


@pytest.mark.parametrize("method, options, reduce, threshold", GRADIENT_CASES + TRANSFORMER_PROPAGATION_CASES)
def test_transformer_methods_find_the_triggers(toy_transformer, method, options, reduce, threshold):
    model, data, _ = toy_transformer
    assert rate(model, positives(data), method, options, reduce) >= threshold


@pytest.mark.parametrize("method, options, reduce, threshold", GRADIENT_CASES + PROPAGATION_CASES)
def test_conv_text_model_methods_find_the_triggers(toy_conv, method, options, reduce, threshold):
    model, data, _ = toy_conv
    assert rate(model, positives(data), method, options, reduce) >= threshold


def test_random_scores_do_not_pass(toy_conv):
    """The hit-rate measure itself discriminates: random scores score far below the thresholds."""
    _, data, _ = toy_conv
    pos = positives(data)
    gen = torch.Generator().manual_seed(0)
    assert hit_rate(torch.rand(pos.input_ids.shape, generator=gen), pos) < 0.4

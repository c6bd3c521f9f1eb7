"""explain_tokens / token_scores: layer resolution, baselines, padding, special tokens, bad input."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import propex
from propex.baselines import LayerBaseline
from propex.models.toy_text import CLS_ID, PAD_ID, SEQ_LEN
from propex.text import explain_tokens, find_input_embedding, token_scores


def padded_sample(data):
    """Index of a test sample shorter than SEQ_LEN, and its length."""
    short = (data.attention_mask.sum(1) < SEQ_LEN - 2).nonzero().flatten()
    i = int(short[short >= 1][0])        # not the first: the batch [i - 1, i] is used
    return i, int(data.attention_mask[i].sum())


class TwoEmbeddings(nn.Module):
    """Token and position nn.Embedding: only the probe pass tells which one takes the ids."""

    def __init__(self, share: bool = False):
        super().__init__()
        self.tok, self.pos = nn.Embedding(20, 4), nn.Embedding(20, 4)
        self.share = share
        self.out = nn.Linear(4, 2)

    def forward(self, ids):
        pos = ids if self.share else torch.arange(ids.shape[1]).expand_as(ids) + 7
        return self.out((self.tok(ids) + self.pos(pos)).mean(1))


def test_default_layer_is_the_input_embedding(toy_transformer):
    model, data, _ = toy_transformer
    assert find_input_embedding(model) is model.embed
    two = TwoEmbeddings()
    ids = torch.tensor([[1, 2, 3]])
    assert find_input_embedding(two, ids) is two.tok
    with pytest.raises(ValueError, match="'tok'.*'pos'|'pos'.*'tok'"):
        find_input_embedding(TwoEmbeddings(share=True), ids)
    with pytest.raises(ValueError, match="layer"):
        find_input_embedding(nn.Sequential(nn.Linear(2, 2)), ids)


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "deeplift"])
def test_explain_on_token_ids_defaults_to_the_embedding(toy_conv, method, model_snapshot):
    """propex.explain with integer ids and no layer= attributes at the input embedding."""
    model, data, _ = toy_conv
    x, mask = data.input_ids[:3], data.attention_mask[:3]
    snap = model_snapshot(model)
    auto = propex.explain(model, x, method, target=1, forward_kwargs={"attention_mask": mask})
    given = propex.explain(model, x, method, target=1, forward_kwargs={"attention_mask": mask}, layer="embed")
    snap.assert_unchanged()
    assert auto.attributions.shape == (3, SEQ_LEN, model.embed.embedding_dim)
    torch.testing.assert_close(auto.attributions, given.attributions)


def test_shapes_reductions_and_multi_target(toy_transformer):
    model, data, _ = toy_transformer
    x, mask = data.input_ids[:4], data.attention_mask[:4]
    exp = explain_tokens(model, x, "input_x_gradient", 1, attention_mask=mask)
    a = exp.attributions
    assert a.shape == (4, SEQ_LEN, 32) and exp.token_attributions.shape == (4, SEQ_LEN)
    torch.testing.assert_close(exp.token_attributions, a.sum(-1))
    torch.testing.assert_close(token_scores(exp, "l2"), a.norm(dim=-1))
    torch.testing.assert_close(token_scores(a, "abs"), a.abs().sum(-1))
    both = explain_tokens(model, x, "input_x_gradient", torch.tensor([[0, 1]] * 4), attention_mask=mask)
    assert both.attributions.shape == (4, 2, SEQ_LEN, 32) and both.token_attributions.shape == (4, 2, SEQ_LEN)
    torch.testing.assert_close(both.attributions[:, 1], a, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad",
                                    "deeplift", "lrp"])
def test_padding_positions_are_exactly_zero_and_padding_invariant(toy_conv, method):
    """A padded sample in a batch gets the attributions it gets alone, unpadded; padding gets 0."""
    model, data, _ = toy_conv
    i, length = padded_sample(data)
    opts = {"n_samples": 4, "seed": 0} if method == "smoothgrad" else {}
    batch = explain_tokens(model, data.input_ids[i - 1:i + 1], method, 1,
                           attention_mask=data.attention_mask[i - 1:i + 1], **opts)
    alone = explain_tokens(model, data.input_ids[i:i + 1, :length], method, 1, **opts)
    assert bool((batch.attributions[1, length:] == 0).all())
    assert bool((batch.token_attributions[1, length:] == 0).all())
    if method == "smoothgrad":   # noise depends on the other samples' draws; compare the deterministic methods
        return
    torch.testing.assert_close(batch.attributions[1, :length], alone.attributions[0], atol=1e-5, rtol=1e-4)


def test_transformer_padding_invariance(toy_transformer):
    model, data, _ = toy_transformer
    i, length = padded_sample(data)
    batch = explain_tokens(model, data.input_ids[i - 1:i + 1], "ig", 1,
                           attention_mask=data.attention_mask[i - 1:i + 1], n_steps=16)
    alone = explain_tokens(model, data.input_ids[i:i + 1, :length], "ig", 1, n_steps=16)
    torch.testing.assert_close(batch.attributions[1, :length], alone.attributions[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batch.delta[1], alone.delta[0], atol=1e-5, rtol=1e-4)


def test_baselines(toy_transformer, model_snapshot):
    model, data, _ = toy_transformer
    x, mask = data.input_ids[:3], data.attention_mask[:3]
    snap = model_snapshot(model)
    emb = model.embed.weight.detach()
    keep = (x == CLS_ID) | (mask == 0)
    for spec, token in (("pad", PAD_ID), (7, 7)):
        exp = explain_tokens(model, x, "ig", 1, attention_mask=mask, baseline=spec, n_steps=32)
        # IG completeness against the baseline built by hand: [PAD]/the id at content tokens, [CLS] and padding kept
        base_ids = torch.where(keep, x, torch.full_like(x, token))
        with torch.no_grad():
            f_x = model(x, attention_mask=mask)[:, 1]
            f_b = model(base_ids, attention_mask=mask)[:, 1]
        # delta is measured against exactly this baseline, and IG converged (1 %)
        torch.testing.assert_close(exp.token_attributions.sum(1) - (f_x - f_b), exp.delta, atol=1e-4, rtol=1e-4)
        assert bool((exp.delta.abs() <= 0.01 * (f_x - f_b).abs() + 1e-3).all())
        assert bool((exp.token_attributions[keep] == 0).all())     # IG: no difference from the baseline there
    zero = explain_tokens(model, x, "ig", 1, attention_mask=mask, baseline="zero", n_steps=32)
    layer_value = emb[x] * keep[..., None]
    manual = propex.explain(model, x, "ig", 1, forward_kwargs={"attention_mask": mask}, layer="embed",
                            baseline=LayerBaseline(layer_value), n_steps=32)
    torch.testing.assert_close(zero.attributions, manual.attributions)
    # "zero" differs from "pad": the embedding of [PAD] is not the zero vector
    pad = explain_tokens(model, x, "ig", 1, attention_mask=mask, baseline="pad", n_steps=32)
    assert not torch.allclose(zero.attributions, pad.attributions)
    # DeepLIFT with a layer-space baseline: summation to delta
    dl = explain_tokens(model, x, "deeplift", 1, attention_mask=mask, baseline="zero")
    assert float(dl.delta.abs().max()) < 1e-4
    snap.assert_unchanged()


def test_special_tokens_can_be_replaced_too(toy_transformer):
    model, data, _ = toy_transformer
    x, mask = data.input_ids[:2], data.attention_mask[:2]
    kept = explain_tokens(model, x, "ig", 1, attention_mask=mask, n_steps=8)
    replaced = explain_tokens(model, x, "ig", 1, attention_mask=mask, n_steps=8, keep_special=False)
    assert bool((kept.token_attributions[:, 0] == 0).all())
    assert bool((replaced.token_attributions[:, 0] != 0).all())
    assert bool(kept.special_mask[:, 0].all()) and not bool(kept.special_mask[:, 1:].any())


def test_mask_baseline_needs_a_mask_id(toy_transformer):
    model, data, _ = toy_transformer
    x, mask = data.input_ids[:2], data.attention_mask[:2]
    with pytest.raises(ValueError, match="mask_token_id"):
        explain_tokens(model, x, "ig", 1, attention_mask=mask, baseline="mask")
    with_id = explain_tokens(model, x, "ig", 1, attention_mask=mask, baseline="mask", mask_token_id=9, n_steps=8)
    by_id = explain_tokens(model, x, "ig", 1, attention_mask=mask, baseline=9, n_steps=8)
    torch.testing.assert_close(with_id.attributions, by_id.attributions)


def test_bad_inputs(toy_transformer):
    model, data, _ = toy_transformer
    x, mask = data.input_ids[:2], data.attention_mask[:2]
    with pytest.raises(ValueError, match=r"input_ids.*outside the vocabulary \[0, 50\).*77"):
        explain_tokens(model, torch.where(x == CLS_ID, torch.full_like(x, 77), x), "saliency", attention_mask=mask)
    with pytest.raises(ValueError, match="attention_mask: input_ids holds the padding id 0"):
        explain_tokens(model, x, "saliency")
    with pytest.raises(ValueError, match="longer than the model's maximum 16"):
        explain_tokens(model, torch.ones(1, 20, dtype=torch.long), "saliency")
    with pytest.raises(ValueError, match=r"input_ids must be shaped \[N, T\].*input_ids\[None\]"):
        explain_tokens(model, x[0], "saliency")
    with pytest.raises(TypeError, match="integer token ids"):
        explain_tokens(model, x.float(), "saliency")
    with pytest.raises(ValueError, match="attention_mask must be a tensor shaped like input_ids"):
        explain_tokens(model, x, "saliency", attention_mask=mask[:, :5])
    with pytest.raises(ValueError, match="baseline must be one of"):
        explain_tokens(model, x, "ig", attention_mask=mask, baseline="unk")
    with pytest.raises(ValueError, match="baseline: token id 99 is outside"):
        explain_tokens(model, x, "ig", attention_mask=mask, baseline=99)
    with pytest.raises(ValueError, match="reduce must be one of"):
        explain_tokens(model, x, "saliency", attention_mask=mask, reduce="max")
    with pytest.raises(ValueError, match="cannot attribute at a layer"):
        explain_tokens(model, x, "occlusion", attention_mask=mask)
    with pytest.raises(ValueError, match=r"token scores need attributions \[N, T, D\]"):
        token_scores(torch.zeros(3, 4))

"""Token attribution on a tiny Hugging Face BERT (random weights from a BertConfig): parity of
embedding-level IG with Captum's LayerIntegratedGradients, padding invariance, special tokens."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
captum_attr = pytest.importorskip("captum.attr")

import propex  # noqa: E402
from propex.text import explain_tokens, find_input_embedding  # noqa: E402

CLS, SEP, PAD = 2, 3, 0


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=24, num_labels=3,
                                  initializer_range=0.3, pad_token_id=PAD)
    cfg._attn_implementation = "eager"
    return transformers.BertForSequenceClassification(cfg).eval().double()


@pytest.fixture(scope="module")
def batch():
    ids = torch.tensor([[CLS, 15, 16, 17, 18, SEP, PAD, PAD], [CLS, 21, 22, 23, 24, 25, 26, SEP]])
    return ids, (ids != PAD).long()


def test_default_layer_is_word_embeddings(bert, batch):
    assert find_input_embedding(bert) is bert.bert.embeddings.word_embeddings
    ids, mask = batch
    plain = propex.explain(bert, ids, "input_x_gradient", 1, forward_kwargs={"attention_mask": mask})
    given = propex.explain(bert, ids, "input_x_gradient", 1, forward_kwargs={"attention_mask": mask},
                           layer="bert.embeddings.word_embeddings")
    assert plain.attributions.shape == (2, 8, 16)
    torch.testing.assert_close(plain.attributions, given.attributions)


def test_ig_matches_captum_layer_integrated_gradients(bert, batch):
    ids, mask = batch
    ours = explain_tokens(bert, ids, "integrated_gradients", 1, attention_mask=mask, special_ids=[CLS, SEP],
                          n_steps=20)
    base = torch.where((ids == CLS) | (ids == SEP) | (ids == PAD), ids, torch.full_like(ids, PAD))
    lig = captum_attr.LayerIntegratedGradients(lambda i, m: bert(i, attention_mask=m).logits,
                                               bert.bert.embeddings.word_embeddings)
    theirs = lig.attribute(ids, baselines=base, target=1, additional_forward_args=(mask,), n_steps=20)
    scale = float(theirs.abs().max())
    assert scale > 1e-3                      # the random model is not flat: the comparison means something
    torch.testing.assert_close(ours.attributions, theirs, atol=1e-5 * scale, rtol=0)
    assert float(ours.delta.abs().max()) < 1e-2 * float(ours.token_attributions.abs().sum(1).max())


def test_padded_sample_equals_the_sample_alone(bert, batch):
    ids, mask = batch
    both = explain_tokens(bert, ids, "ig", 0, attention_mask=mask, special_ids=[CLS, SEP], n_steps=8)
    alone = explain_tokens(bert, ids[:1, :6], "ig", 0, special_ids=[CLS, SEP], n_steps=8)
    torch.testing.assert_close(both.attributions[0, :6], alone.attributions[0], atol=1e-10, rtol=1e-8)
    assert bool((both.attributions[0, 6:] == 0).all())
    # special tokens keep their embedding in the baseline: IG gives them exactly 0
    assert bool((both.token_attributions[:, 0] == 0).all())


def test_bert_bad_inputs(bert, batch):
    ids, mask = batch
    with pytest.raises(ValueError, match="attention_mask: input_ids holds the padding id 0"):
        explain_tokens(bert, ids, "saliency")
    with pytest.raises(ValueError, match="max_position_embeddings"):
        explain_tokens(bert, torch.full((1, 30), 5), "saliency")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        explain_tokens(bert, torch.tensor([[CLS, 60, SEP]]), "saliency")


@pytest.mark.parametrize("method", ["deeplift", "lrp"])
def test_propagation_methods_through_bert(bert, batch, method):
    """DeepLIFT / LRP at the word embeddings through attention, LayerNorm and GELU (the transformer
    rules of propex.propagation): padding-invariant, zero at padding; DeepLIFT sums to delta."""
    ids, mask = batch
    both = explain_tokens(bert, ids, method, 1, attention_mask=mask, special_ids=[CLS, SEP])
    alone = explain_tokens(bert, ids[:1, :6], method, 1, special_ids=[CLS, SEP])
    torch.testing.assert_close(both.attributions[0, :6], alone.attributions[0], atol=1e-6, rtol=1e-5)
    assert bool((both.attributions[0, 6:] == 0).all())
    if method == "deeplift":
        assert float(both.delta.abs().max()) < 1e-8
        with torch.no_grad():
            base = torch.where(mask.bool() & (ids != CLS) & (ids != SEP), torch.full_like(ids, PAD), ids)
            diff = bert(ids, attention_mask=mask).logits[:, 1] - bert(base, attention_mask=mask).logits[:, 1]
        torch.testing.assert_close(both.token_attributions.sum(1), diff, atol=1e-8, rtol=1e-6)

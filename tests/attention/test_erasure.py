"""Serrano & Smith's erasure tests on models whose attention is faithful / unfaithful by construction."""
import math

import pytest
import torch

from propex.attention import attention_rankings
from propex.attention.synthetic import (TRIGGER, faithful_attention_model, trigger_batch,
                                        unfaithful_attention_model)
from propex.evaluate import erasure, js_divergence


@pytest.fixture(scope="module")
def data():
    return trigger_batch(32, 10, seed=0)


def _report(model, ids, mask, **kw):
    fk = {"attention_mask": mask}
    rankings = attention_rankings(model, ids, forward_kwargs=fk)
    rankings["input_x_gradient"] = ("input_x_gradient", {"layer": model.embed})
    return erasure(model, ids, rankings, forward_kwargs=fk, **kw)


def test_js_divergence_values():
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    q = torch.tensor([[0.0, 1.0], [0.5, 0.5]], dtype=torch.float64)
    assert torch.allclose(js_divergence(p, q), torch.tensor([1.0, 0.0], dtype=torch.float64))
    r = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    expected = 0.5 * (math.log2(1 / 0.75)) + 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25))
    assert abs(float(js_divergence(p[:1], r)) - expected) < 1e-12


def test_faithful_attention_ranks_the_trigger_first(data):
    ids, mask, labels = data
    model = faithful_attention_model()
    rep = _report(model, ids, mask)
    att = rep["attention"]
    has = labels == 1
    assert (ids[torch.arange(32), att.top_item][has] == TRIGGER).all()
    assert (att.flip_top == has).all()                         # erasing the trigger flips every trigger sample
    assert att.js_top.mean() > 3 * att.js_random.mean()
    table = att.flip_table
    assert table.sum() == 32 and table[0, 1] > table[1, 0]
    expected = 1.0 / mask.sum(1).float()
    assert torch.allclose(att.fraction_to_flip[has], expected[has])
    assert not att.flipped[~has].any()
    assert att.summary()["median_fraction_to_flip"] < rep["random"].summary()["median_fraction_to_flip"]


def test_unfaithful_attention_is_caught_by_the_metrics(data):
    ids, mask, labels = data
    model = unfaithful_attention_model()
    rep = _report(model, ids, mask)
    att, grad = rep["attention"], rep["input_x_gradient"]
    has = labels == 1
    assert (rep["attention"].js_top == 0).all()               # the attended distractor carries nothing
    assert not att.flip_top.any() and not att.flipped.any()  # the trigger is attended least: never erased
    assert (grad.flip_top == has).all()
    assert torch.allclose(grad.fraction_to_flip[has], 1.0 / mask.sum(1).float()[has])
    assert att.js_top.mean() < att.js_random.mean() < grad.js_top.mean()
    assert "| attention |" in rep.to_markdown()


def test_replace_and_callable_erasure_agree_with_mask_on_bag_of_words(data):
    ids, mask, _ = data
    model = unfaithful_attention_model()      # skip path = bag of words; pad token embeds to ~0 evidence
    scores = {"s": (ids == TRIGGER).float()}
    by_mask = erasure(model, ids, scores, forward_kwargs={"attention_mask": mask}, include_random=False)
    by_replace = erasure(model, ids, scores, forward_kwargs={"attention_mask": mask}, erase="replace",
                         replacement=0, include_random=False)

    def erase(x, fkw, erased):
        return x, {"attention_mask": fkw["attention_mask"] * (~erased).long()}
    by_fn = erasure(model, ids, scores, forward_kwargs={"attention_mask": mask}, erase=erase, include_random=False)
    assert torch.equal(by_mask["s"].flip_top, by_fn["s"].flip_top)
    assert torch.allclose(by_mask["s"].js_top, by_fn["s"].js_top)
    assert torch.equal(by_mask["s"].flip_top, by_replace["s"].flip_top)


def test_exclude_and_padding_are_never_erased(data):
    ids, mask, _ = data
    model = faithful_attention_model()
    exclude = ids == TRIGGER
    rep = erasure(model, ids, {"a": attention_rankings(model, ids, forward_kwargs={"attention_mask": mask})["attention"]},
                  forward_kwargs={"attention_mask": mask}, exclude=exclude)
    assert not (ids[torch.arange(32), rep["a"].top_item] == TRIGGER).any()
    assert (mask[torch.arange(32), rep.random_item] == 1).all()
    assert not rep["a"].flip_top.any()


def test_erasure_bad_input(data):
    ids, mask, _ = data
    model = faithful_attention_model()
    fk = {"attention_mask": mask}
    with pytest.raises(ValueError, match=r"must give scores \[N, T\]"):
        erasure(model, ids, {"bad": torch.ones(32, 3)}, forward_kwargs=fk)
    with pytest.raises(ValueError, match="erase must be"):
        erasure(model, ids, {"a": torch.ones(32, 10)}, forward_kwargs=fk, erase="zero")
    with pytest.raises(ValueError, match="exclude must be a bool"):
        erasure(model, ids, {"a": torch.ones(32, 10)}, forward_kwargs=fk, exclude=torch.ones(3, dtype=torch.bool))
    with pytest.raises(TypeError, match="must be a"):
        erasure(model, ids, {"a": 3}, forward_kwargs=fk)
    with pytest.raises(ValueError, match="NaN or Inf"):
        erasure(model, ids, {"a": torch.full((32, 10), float("nan"))}, forward_kwargs=fk)


def test_toy_text_classifier_erasure_is_robustly_better_than_random():
    toy_text = pytest.importorskip("propex.models.toy_text")
    model, data, info = toy_text.train_toy_text_classifier(seed=0)
    model.eval()
    ids, mask = data.input_ids[:100], data.attention_mask[:100]
    fk = {"attention_mask": mask}
    rankings = attention_rankings(model, ids, forward_kwargs=fk)      # via output_attentions=True
    rankings["input_x_gradient"] = ("input_x_gradient", {"layer": model.embed})
    rep = erasure(model, ids, rankings, forward_kwargs=fk, exclude=ids == toy_text.CLS_ID)
    # what is robust across seeds: erasing the top item (by attention or by gradient) flips far more
    # decisions than erasing a random one; which of the two ranks better is not (docs/attention.md)
    for name in ("attention", "input_x_gradient"):
        table = rep[name].flip_table
        assert table[0, 1] > 3 * max(int(table[1, 0]), 1)
        assert rep[name].js_top.mean() > 2 * rep[name].js_random.mean()

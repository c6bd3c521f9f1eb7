"""The toy trigger task and its classifiers: learnable, deterministic, padding-exact."""
from __future__ import annotations

import pytest
import torch

from propex.models.toy_text import (CLS_ID, PAD_ID, SEQ_LEN, TRIGGER_IDS, ToyTransformerClassifier,
                                    make_trigger_data, train_toy_text_classifier)


def test_trigger_data_labels_are_trigger_presence():
    d = make_trigger_data(300, seed=3)
    has_trigger = torch.isin(d.input_ids, torch.tensor(TRIGGER_IDS)).any(1)
    assert torch.equal(has_trigger.long(), d.labels)
    assert torch.equal(d.trigger_mask, torch.isin(d.input_ids, torch.tensor(TRIGGER_IDS)))
    assert bool((d.input_ids[:, 0] == CLS_ID).all())
    assert torch.equal(d.input_ids == PAD_ID, d.attention_mask == 0)
    assert 0.35 < d.labels.float().mean() < 0.65
    assert torch.equal(make_trigger_data(50, seed=3).input_ids, make_trigger_data(50, seed=3).input_ids)


@pytest.mark.parametrize("fixture", ["toy_transformer", "toy_conv"])
def test_toy_classifiers_learn_the_task(fixture, request):
    model, data, info = request.getfixturevalue(fixture)
    assert info["accuracy"] >= 0.95
    assert not model.training


def test_training_is_deterministic(toy_conv):
    model, _, info = toy_conv
    again, _, info2 = train_toy_text_classifier(seed=0, arch="conv")
    assert info == info2
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("fixture", ["toy_transformer", "toy_conv"])
def test_padding_does_not_change_the_logits(fixture, request):
    model, data, _ = request.getfixturevalue(fixture)
    i = int((data.attention_mask.sum(1) < SEQ_LEN).nonzero()[0])
    length = int(data.attention_mask[i].sum())
    with torch.no_grad():
        padded = model(data.input_ids[i:i + 1], attention_mask=data.attention_mask[i:i + 1])
        alone = model(data.input_ids[i:i + 1, :length])
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_transformer_returns_attentions():
    model = ToyTransformerClassifier(layers=2).eval()
    d = make_trigger_data(3, seed=0, min_length=10)
    with torch.no_grad():
        out = model(d.input_ids, attention_mask=d.attention_mask, output_attentions=True)
    assert out["logits"].shape == (3, 2) and len(out["attentions"]) == 2
    att = out["attentions"][0]
    assert att.shape == (3, 2, SEQ_LEN, SEQ_LEN)
    torch.testing.assert_close(att.sum(-1), torch.ones(3, 2, SEQ_LEN))
    assert float(att[d.attention_mask[:, None, None, :].expand_as(att) == 0].max()) == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="arch"):
        train_toy_text_classifier(arch="rnn")
    with pytest.raises(ValueError, match="min_length"):
        make_trigger_data(4, min_length=1)

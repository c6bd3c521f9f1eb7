"""The attention methods on Hugging Face models, nn.MultiheadAttention and a hand-checkable toy."""
import pytest
import torch
from torch import nn

import propex
from propex.attention import patch_map, rollout
from propex.model_call import _hook_counts


def _ids(n=3, t=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 40, (n, t), generator=gen)
    mask = torch.ones(n, t, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 4:] = 0
    return ids, mask


def test_registered_in_attention_family():
    assert propex.methods("attention") == ["attention", "attention_rollout", "attention_flow", "grad_attention"]


def test_raw_attention_equals_output_attentions(bert):
    ids, mask = _ids()
    ref = bert(ids, attention_mask=mask, output_attentions=True).attentions
    for layer, head in [(0, 1), (1, 0), (-1, None)]:
        exp = propex.explain(bert, ids, "attention", forward_kwargs={"attention_mask": mask}, layer=layer, head=head)
        a = ref[layer]
        a = a.mean(1) if head is None else a[:, head]
        assert torch.allclose(exp.attributions, a[:, 0] * mask, atol=1e-6)
    exp = propex.explain(bert, ids, "attention", forward_kwargs={"attention_mask": mask}, reduce="max")
    assert torch.allclose(exp.attributions, ref[-1].amax(1)[:, 0] * mask, atol=1e-6)
    assert exp.attributions.shape == (3, 7) and exp.target.shape == (3,)


def test_rollout_on_bert_equals_product_of_output_attentions(bert):
    ids, mask = _ids()
    ref = bert(ids, attention_mask=mask, output_attentions=True).attentions
    eye = torch.eye(7)
    a_hat = [(0.5 * a.mean(1) + 0.5 * eye) for a in ref]
    a_hat = [a / a.sum(-1, keepdim=True) for a in a_hat]
    expected = (a_hat[1] @ a_hat[0])[:, 0] * mask
    exp = propex.explain(bert, ids, "attention_rollout", forward_kwargs={"attention_mask": mask})
    assert torch.allclose(exp.attributions, expected, atol=1e-6)
    assert torch.allclose(rollout([a.mean(1) for a in ref])[:, 0] * mask, expected, atol=1e-6)


@pytest.mark.parametrize("method", ["attention", "attention_rollout", "attention_flow", "grad_attention"])
def test_padding_gets_zero_and_matches_unpadded_sequence(bert, method):
    ids, mask = _ids()
    exp = propex.explain(bert, ids, method, forward_kwargs={"attention_mask": mask})
    assert (exp.attributions[mask == 0] == 0).all()
    short = propex.explain(bert, ids[1:2, :5], method, target=exp.target[1:2])
    assert torch.allclose(exp.attributions[1, :5], short.attributions[0], atol=1e-5)


def test_decoder_explains_last_real_token(gpt2):
    ids, mask = _ids()
    ref = gpt2(ids, attention_mask=mask, output_attentions=True).attentions[-1].mean(1)
    target = lambda out: out[:, -1, 0]   # noqa: E731
    exp = propex.explain(gpt2, ids, "attention", target, forward_kwargs={"attention_mask": mask})
    last = torch.tensor([6, 4, 3])
    assert torch.allclose(exp.attributions, ref[torch.arange(3), last] * mask, atol=1e-6)
    exp0 = propex.explain(gpt2, ids, "attention", target, forward_kwargs={"attention_mask": mask}, position=0)
    assert torch.allclose(exp0.attributions[:, 0], torch.ones(3))   # causal: token 0 sees only itself


def test_vit_tokens_and_patch_map(vit):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for method in ["attention_rollout", "grad_attention"]:
        exp = propex.explain(vit, x, method)
        assert exp.attributions.shape == (2, 17)
        assert torch.isfinite(exp.attributions).all()
        assert patch_map(exp.attributions).shape == (2, 1, 4, 4)
    assert torch.allclose(patch_map(exp.attributions)[0, 0, 1], exp.attributions[0, 5:9])
    with pytest.raises(ValueError, match="grid"):
        patch_map(exp.attributions, grid=(3, 5))


class SelfAttentionToy(nn.Module):
    """One self-attention layer (nn.MultiheadAttention, 2 heads); y = W (attention output at token 0)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.embed = nn.Embedding(20, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, ids):
        e = self.embed(ids)
        return self.head(self.attn(e, e, e)[0][:, 0])


def test_grad_attention_hand_checked_on_one_layer():
    model = SelfAttentionToy().eval()
    ids = torch.tensor([[1, 5, 7, 2, 9], [3, 3, 4, 11, 0]])
    exp = propex.explain(model, ids, "grad_attention", target=torch.tensor([2, 0]))
    # by hand: o_0 = W_o concat_h(Σ_j A_h[0, j] v_hj) + b, y = w_c·o_0, so ∂y/∂A_h[0, j] = w_c W_o[:, h] · v_hj
    # and ∂y/∂A_h[i, j] = 0 for i ≠ 0; R = I + mean_h (∇A ⊙ A)⁺, row 0
    e = model.embed(ids)
    a, w_in, d = model.attn, model.attn.in_proj_weight, 4
    v = (e @ w_in[16:].T + a.in_proj_bias[16:]).reshape(2, 5, 2, d)
    _, weights = a(e, e, e, average_attn_weights=False)
    w_c = model.head.weight[[2, 0]]                        # [N, 8]
    expected = torch.zeros(2, 5)
    for h in range(2):
        w_oh = a.out_proj.weight[:, h * d:(h + 1) * d]     # [8, d]
        grad = torch.einsum("ne,ed,njd->nj", w_c, w_oh, v[:, :, h])
        expected += (grad * weights[:, h, 0]).clamp_min(0) / 2
    expected[:, 0] += 1
    assert torch.allclose(exp.attributions, expected.detach(), atol=1e-5)


def test_transformer_encoder_with_frozen_parameters_under_no_grad():
    torch.manual_seed(4)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), 2,
                                enable_nested_tensor=False)
    model = nn.Sequential(nn.Embedding(20, 8), enc, nn.Flatten(), nn.Linear(40, 3)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    hooks = [_hook_counts(m) for m in model.modules()]
    ids = torch.randint(0, 20, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        exp = propex.explain(model, ids, "attention_rollout")
        grad = propex.explain(model, ids, "grad_attention")
    assert exp.attributions.shape == (2, 5)
    assert torch.allclose(exp.attributions.sum(1), torch.ones(2), atol=1e-5)   # rollout rows sum to 1
    assert grad.attributions.abs().sum() > 0
    assert all(not p.requires_grad for p in model.parameters())
    assert hooks == [_hook_counts(m) for m in model.modules()]


def test_model_left_as_found(bert):
    flags = [p.requires_grad for p in bert.parameters()]
    hooks = [_hook_counts(m) for m in bert.modules()]
    ids, mask = _ids()
    propex.explain(bert, ids, "grad_attention", forward_kwargs={"attention_mask": mask})
    assert flags == [p.requires_grad for p in bert.parameters()]
    assert hooks == [_hook_counts(m) for m in bert.modules()]
    assert not bert.config.output_attentions and bert.config._attn_implementation == "eager"
    assert all(p.grad is None for p in bert.parameters())


def test_fused_kernel_is_a_clear_error():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32, num_labels=3)
    model = transformers.BertForSequenceClassification(cfg).eval()
    model.set_attn_implementation("sdpa")
    with pytest.raises(ValueError, match=r"sdpa.*set_attn_implementation\('eager'\)"):
        propex.explain(model, torch.ones(1, 4, dtype=torch.long), "attention")


def test_model_without_attention_is_a_clear_error():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2))
    with pytest.raises(ValueError, match="no attention module"):
        propex.explain(model, torch.ones(1, 3, dtype=torch.long), "attention_rollout")


def test_attention_modules_that_return_no_weights():
    class NoWeights(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, ids):
            e = self.embed(ids)
            out = self.attn(e, e, e)[0]
            return out[:, 0, :2]

    model = NoWeights().eval()
    model.attn.register_forward_hook(lambda m, i, o: (o[0], None))   # a wrapper that drops the weights
    with pytest.raises(ValueError, match="returned no attention weights"):
        propex.explain(model, torch.ones(1, 3, dtype=torch.long), "attention")


def test_option_and_shape_errors(bert):
    ids, mask = _ids()
    with pytest.raises(ValueError, match="reduce must be one of"):
        propex.explain(bert, ids, "attention", reduce="sum")
    with pytest.raises(ValueError, match="layer=5 is out of range"):
        propex.explain(bert, ids, "attention", layer=5)
    with pytest.raises(ValueError, match="position=9 is out of range"):
        propex.explain(bert, ids, "attention_rollout", position=9)
    with pytest.raises(ValueError, match="head=4 is out of range"):
        propex.explain(bert, ids, "attention", head=4)
    with pytest.raises(TypeError, match="unknown option"):
        propex.explain(bert, ids, "attention_rollout", head=1)
    with pytest.raises(ValueError, match="one target per sample"):
        propex.explain(bert, ids, "grad_attention", target=[[0, 1]] * 3)


def test_torchvision_vit_attention_is_captured_from_multihead_attention():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(5)
    model = torchvision.models.VisionTransformer(image_size=16, patch_size=4, num_layers=2, num_heads=2,
                                                 hidden_dim=16, mlp_dim=32, num_classes=4).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    exp = propex.explain(model, x, "attention", layer=0, head=1)
    with torch.no_grad():   # by hand: the first block's attention on [class token; patches] + positions
        h = torch.cat([model.class_token.expand(2, -1, -1), model._process_input(x)], 1) + model.encoder.pos_embedding
        y = model.encoder.layers[0].ln_1(h)
        _, w = model.encoder.layers[0].self_attention(y, y, y, average_attn_weights=False)
    assert torch.allclose(exp.attributions, w[:, 1, 0], atol=1e-6)
    grad = propex.explain(model, x, "grad_attention")
    assert patch_map(grad.attributions).shape == (2, 1, 4, 4) and torch.isfinite(grad.attributions).all()

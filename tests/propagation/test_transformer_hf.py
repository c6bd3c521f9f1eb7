"""Transformer rules on Hugging Face models (BERT, GPT-2, LLaMA, ViT from tiny configs, random weights,
eager and sdpa attention) and torchvision's ViT: conservation, DeepLIFT's summation-to-delta, eager = sdpa,
and parity with LXT 2.1 (lxt.efficient's rules applied to the same modules)."""
from __future__ import annotations

import functools
import pathlib
import sys
import types

import pytest
import torch
from torch import nn

from propex.propagation import LRP, DeepLift

transformers = pytest.importorskip("transformers")
DT = torch.float64
HIDDEN = 16


class Logits(nn.Module):
    """inputs_embeds -> logits [N, C] (the last position for causal LMs)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, embeds):
        logits = self.model(inputs_embeds=embeds).logits
        return logits if logits.dim() == 2 else logits[:, -1]


@functools.lru_cache(maxsize=None)
def hf_model(kind: str, impl: str) -> nn.Module:
    torch.manual_seed(0)
    common = dict(vocab_size=40, attn_implementation=impl)
    if kind == "bert":
        model = transformers.BertForSequenceClassification(transformers.BertConfig(
            hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=16, num_labels=3, **common))
    elif kind == "gpt2":
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            n_embd=HIDDEN, n_layer=2, n_head=2, n_positions=16, bos_token_id=0, eos_token_id=0, **common))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=32, max_position_embeddings=16, **common))
    return Logits(model.to(DT).eval()).eval()


def embeds(n: int = 2, length: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, length, HIDDEN, dtype=DT, generator=torch.Generator().manual_seed(seed))


TARGET = torch.tensor([0, 2])
# conservation tolerance |Σ R - f| / |f| with biases excluded, float64 (LLaMA computes its RMSNorm
# and softmax in float32 inside the float64 model: float32 rounding)
TOLERANCE = {"bert": 1e-8, "gpt2": 1e-8, "llama": 1e-5}


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
def test_lrp_conserves_on_hf_models(kind, impl):
    model = hf_model(kind, impl)
    x = embeds()
    for attention in ("attnlrp", "cp"):
        e = LRP(model, composite="zero", epsilon=1e-12, ignore_bias=True, attention=attention).explain(x, target=TARGET)
        f = e.outputs[torch.arange(2), TARGET]
        torch.testing.assert_close(e.outputs, model(x).detach())
        assert (e.delta.abs() / f.abs()).max().item() < TOLERANCE[kind], (kind, impl, attention)


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
def test_eager_and_sdpa_attention_get_the_same_relevance(kind):
    x = embeds(seed=2)
    a = LRP(hf_model(kind, "eager"), composite="epsilon").explain(x, target=TARGET)
    b = LRP(hf_model(kind, "sdpa"), composite="epsilon").explain(x, target=TARGET)
    torch.testing.assert_close(a.attributions, b.attributions, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
def test_deeplift_summation_to_delta_on_hf_models(kind):
    model = hf_model(kind, "sdpa")
    x = embeds(seed=3)
    e = DeepLift(model).explain(x, target=TARGET)
    diff = (model(x) - model(torch.zeros_like(x)))[torch.arange(2), TARGET].detach()
    tol = 1e-10 if kind != "llama" else 1e-3       # LLaMA: float32 inside
    assert (e.delta.abs() / diff.abs()).max().item() < tol


def test_default_settings_float32_bert():
    """The settings a user gets (ε-rule composite, float32, biases kept) run; with biases excluded the
    conservation error is the ε = 1e-6 stabiliser's."""
    model = hf_model("bert", "sdpa")
    m32 = Logits(transformers.BertForSequenceClassification(model.model.config).eval())
    m32.model.load_state_dict({k: v.float() for k, v in model.model.state_dict().items()})
    x = embeds().float()
    e = LRP(m32, composite="epsilon", ignore_bias=True).explain(x, target=TARGET)
    f = e.outputs[torch.arange(2), TARGET]
    assert (e.delta.abs() / f.abs()).max().item() < 1e-2
    assert torch.isfinite(LRP(m32, composite="epsilon").explain(x, target=TARGET).attributions).all()


# ---- ViT: the class token is a learned constant input ----------------------------------------
class HFViTWithClassToken(nn.Module):
    """HF ViT classifier with its class token as a second input (so its relevance is counted)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixels, cls):
        vit = self.model.vit
        h = vit.embeddings.patch_embeddings(pixels)
        h = torch.cat([cls, h], dim=1) + vit.embeddings.position_embeddings
        for layer in vit.layers:
            h = layer(h)
        h = vit.layernorm(h)
        return self.model.classifier(h[:, 0])


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_lrp_conserves_on_hf_vit(impl):
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=HIDDEN,
                                    num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                    num_labels=4, attn_implementation=impl)
    model = transformers.ViTForImageClassification(config).to(DT).eval()
    with torch.no_grad():
        model.vit.embeddings.cls_token.normal_()
    pixels = torch.randn(2, 3, 16, 16, dtype=DT, generator=torch.Generator().manual_seed(4))
    cls = model.vit.embeddings.cls_token.detach().expand(2, -1, -1).clone()
    wrapped = HFViTWithClassToken(model).eval()
    torch.testing.assert_close(wrapped(pixels, cls), model(pixel_values=pixels).logits)
    for attention in ("attnlrp", "cp"):
        e = LRP(wrapped, composite="zero", epsilon=1e-12, ignore_bias=True, attention=attention).explain(
            (pixels, cls), target=TARGET % 4)
        total = sum(a.flatten(1).sum(1) for a in e.attributions)
        f = e.outputs[torch.arange(2), TARGET % 4]
        assert ((total - f).abs() / f.abs()).max().item() < 1e-8


# ---- parity with LXT ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lxt_rules():
    """lxt.efficient's ``rules`` and ``patches`` modules. Importing the package ``lxt.efficient`` itself fails
    with transformers 5 (its models/bert.py imports a removed helper), so the two modules are loaded alone."""
    lxt = pytest.importorskip("lxt")
    saved = sys.modules.get("lxt.efficient")
    stub = types.ModuleType("lxt.efficient")
    stub.__path__ = [str(pathlib.Path(lxt.__file__).parent / "efficient")]
    sys.modules["lxt.efficient"] = stub
    try:
        from lxt.efficient import patches, rules
    finally:
        if saved is None:
            sys.modules.pop("lxt.efficient", None)
        else:
            sys.modules["lxt.efficient"] = saved
    return patches, rules


def lxt_relevance(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """LXT's efficient mode: relevance = input × gradient of the patched model (seeded with 1)."""
    x = x.clone().requires_grad_()
    out = model(x)[torch.arange(len(x)), target]
    out.backward(torch.ones_like(out))
    return (x.grad * x).detach()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _patch_lxt(mp: pytest.MonkeyPatch, kind: str, patches, rules) -> None:
    """LXT's AttnLRP patch maps for these models, applied (and undone) with monkeypatch."""
    if kind == "llama":
        from transformers.models.llama import modeling_llama as mod
        mp.setattr(mod.LlamaMLP, "forward", patches.gated_mlp_forward)
        mp.setattr(mod.LlamaRMSNorm, "forward", patches.rms_norm_forward)
    elif kind == "bert":
        from transformers.models.bert import modeling_bert as mod
        mp.setattr(nn.LayerNorm, "forward", patches.layer_norm_forward)
        identity = rules.identity_rule_implicit
        mp.setattr(mod.BertIntermediate, "forward", lambda self, h: identity(self.intermediate_act_fn, self.dense(h)))
        mp.setattr(mod.BertPooler, "forward", lambda self, h: identity(self.activation, self.dense(h[:, 0])))
    else:
        from transformers.models.gpt2 import modeling_gpt2 as mod
        mp.setattr(nn.LayerNorm, "forward", patches.layer_norm_forward)
        identity = rules.identity_rule_implicit
        mp.setattr(mod.GPT2MLP, "forward", lambda self, h: self.c_proj(identity(self.act, self.c_fc(h))))
    mp.setattr(mod, "eager_attention_forward", patches.wrap_attention_forward(mod.eager_attention_forward))


# max relative difference to LXT, measured: llama 7e-8 (float32 inside), bert 3e-9, gpt2 1e-10
@pytest.mark.parametrize("kind,tol", [("llama", 1e-6), ("bert", 1e-7), ("gpt2", 1e-8)])
def test_attnlrp_matches_lxt(kind, tol, lxt_rules):
    model = hf_model(kind, "eager")
    x = embeds(seed=5)
    ours = LRP(model, composite="zero", epsilon=1e-12).explain(x, target=TARGET).attributions
    with pytest.MonkeyPatch.context() as mp:
        _patch_lxt(mp, kind, *lxt_rules)
        ref = lxt_relevance(model, x, TARGET)
    assert rel_err(ours, ref) < tol
    assert rel_err(model(x), model(x)) == 0      # the patches are gone


def test_cp_lrp_matches_lxt_on_torchvision_vit(lxt_rules):
    patches, _ = lxt_rules
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=16, patch_size=4, num_layers=2, num_heads=2,
                                               hidden_dim=HIDDEN, mlp_dim=32, num_classes=5).to(DT).eval()
    with torch.no_grad():
        vit.heads.head.weight.normal_()
        vit.class_token.normal_()
    x = torch.randn(2, 3, 16, 16, dtype=DT, generator=torch.Generator().manual_seed(6))
    target = torch.tensor([0, 3])
    ours = LRP(vit, composite="zero", epsilon=1e-12, attention="cp").explain(x, target=target).attributions
    with pytest.MonkeyPatch.context() as mp:     # LXT's vit_torch.cp_LRP map
        mp.setattr(nn.GELU, "original_forward", nn.GELU.forward, raising=False)
        mp.setattr(nn.GELU, "forward", patches.non_linear_forward)
        mp.setattr(nn.LayerNorm, "forward", patches.layer_norm_forward)
        mp.setattr(nn.MultiheadAttention, "original_forward", nn.MultiheadAttention.forward, raising=False)
        mp.setattr(nn.MultiheadAttention, "forward", patches.cp_multi_head_attention_forward)
        ref = lxt_relevance(vit, x, target)
    assert rel_err(ours, ref) < 1e-7               # measured 6e-9

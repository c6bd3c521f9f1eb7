"""Capturing a model's attention maps during one forward pass.

Two kinds of attention modules are recognised, in any model (also a wrapper around them):

* ``torch.nn.MultiheadAttention``: a forward pre-hook asks every call for its weights
  (``need_weights=True, average_attn_weights=False``), a forward hook takes them
  (``[N, H, T_q, T_k]``). ``nn.TransformerEncoderLayer``'s fused fast path skips the module; it
  is only taken without autograd, and the capture always runs with autograd enabled.
* Hugging Face models (transformers >= 5): the attention classes that the model's
  ``_can_record_outputs["attentions"]`` names (what ``output_attentions=True`` would return),
  hooked the same way. Their weights exist only with ``attn_implementation="eager"``; a fused
  kernel (``sdpa``, ``flash_attention_*``) returns none, which is a ``ValueError`` saying how to
  switch: ``model.set_attn_implementation("eager")`` (or ``from_pretrained(...,
  attn_implementation="eager")``).

The maps are captured in call order (a module used twice appears twice) and stay in the autograd
graph, so ``torch.autograd.grad(score, maps.grad_handles)`` gives ∂score/∂A for Chefer's rule.
Every hook is removed in a ``finally``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor, nn

from ..model_call import ModelCall, _owning_module

_FUSED_HINT = (
    "Switch the model to eager attention: model.set_attn_implementation('eager') (transformers >= 4.48/5), "
    "or load it with from_pretrained(..., attn_implementation='eager')"
)


@dataclass
class AttentionMaps:
    """The attention probabilities of one forward pass.

    Attributes:
        maps: one ``[N, H, T_q, T_k]`` tensor per attention call, in call order.
        handles: for each map, the tensor the model multiplied with the values (``maps[i]`` itself,
            or the ``[N·H, T_q, T_k]`` base tensor for ``nn.MultiheadAttention``), to differentiate to.
        modules: the module names, in call order.
        causal: whether any captured module declares ``is_causal``.
        outputs: the model output (logits) of the pass.
    """

    maps: list[Tensor]
    handles: list[Tensor]
    modules: list[str]
    causal: bool
    outputs: Tensor
    shapes: list[torch.Size] = field(default_factory=list)

    def gradients(self, score: Tensor) -> list[Tensor]:
        """∂score/∂A for every map, shaped like the maps (zeros where a map does not affect score)."""
        grads = torch.autograd.grad(score, self.handles, allow_unused=True)
        return [torch.zeros_like(m) if g is None else g.reshape(m.shape) for g, m in zip(grads, self.maps)]


def hf_attention_targets(model: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """``(name, module, output index)`` of the Hugging Face attention modules inside ``model``."""
    found: dict[int, tuple[str, nn.Module, int]] = {}
    for owner_name, owner in model.named_modules():
        spec = getattr(owner, "_can_record_outputs", None)
        if not isinstance(spec, Mapping) or "attentions" not in spec:
            continue
        entry = spec["attentions"]
        cls = getattr(entry, "target_class", entry)
        index = getattr(entry, "index", 1) if not isinstance(entry, type) else 1
        layer_name = getattr(entry, "layer_name", None)
        if not isinstance(cls, type):
            continue
        for name, module in owner.named_modules():
            full = f"{owner_name}.{name}".strip(".")
            if isinstance(module, cls) and (layer_name is None or full.endswith(layer_name.lstrip(".")) or layer_name in full):
                found.setdefault(id(module), (full, module, index))
    return list(found.values())


def _hf_config_issue(model: nn.Module) -> str | None:
    """The name of a non-eager attention implementation used by an HF model inside ``model``."""
    for module in model.modules():
        config = getattr(module, "config", None)
        impl = getattr(config, "_attn_implementation", None)
        if isinstance(impl, str) and impl != "eager" and getattr(module, "_can_record_outputs", None):
            return impl
    return None


@contextlib.contextmanager
def _hooks(model: nn.Module, store: list[tuple[str, nn.Module, Any]]) -> Iterator[int]:
    """Install the capture hooks; yield how many attention modules were hooked."""
    handles = []
    try:
        for name, module in model.named_modules():
            if isinstance(module, nn.MultiheadAttention):
                handles.append(module.register_forward_pre_hook(_force_weights, with_kwargs=True))
                handles.append(module.register_forward_hook(_recorder(store, name, 1)))
        for name, module, index in hf_attention_targets(model):
            handles.append(module.register_forward_hook(_recorder(store, name, index)))
        yield len(handles)
    finally:
        for h in handles:
            h.remove()


def _force_weights(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    kwargs = dict(kwargs)
    # need_weights / average_attn_weights are positions 4 and 7 of MultiheadAttention.forward
    args = list(args)
    if len(args) > 4:
        args[4] = True
    else:
        kwargs["need_weights"] = True
    if len(args) > 7:
        args[7] = False
    else:
        kwargs["average_attn_weights"] = False
    if kwargs.get("is_causal") and kwargs.get("attn_mask") is None and (len(args) <= 5 or args[5] is None):
        kwargs["is_causal"] = False   # the weights path needs an explicit mask; is_causal is only a hint
    return tuple(args), kwargs


def _recorder(store: list, name: str, index: int):
    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        weights = output[index] if isinstance(output, (tuple, list)) and len(output) > index else None
        store.append((name, module, weights))
    return hook


def capture_attention(model: Any, inputs: tuple[Tensor, ...], forward_kwargs: Mapping[str, Any]) -> AttentionMaps:
    """Run ``model(*inputs, **forward_kwargs)`` once with autograd on and return its attention maps.

    Raises:
        ValueError: the model has no attention module propex can read (neither
            ``nn.MultiheadAttention`` nor a Hugging Face attention class), or its attention runs a
            fused kernel that returns no weights (the message says how to switch to eager).
    """
    module = _owning_module(model)
    if module is None:
        raise TypeError(f"model: attention methods need an nn.Module (or a bound method of one) to find its "
                        f"attention layers, got {type(model).__name__}")
    impl = _hf_config_issue(module)
    if impl is not None:
        raise ValueError(f"model runs attention with the fused '{impl}' kernel, which does not return the "
                         f"attention weights. {_FUSED_HINT}.")
    store: list[tuple[str, nn.Module, Any]] = []
    params = list(module.parameters())
    flags = [p.requires_grad for p in params]
    try:
        # with autograd on and parameters requiring grad, nn.TransformerEncoderLayer takes the
        # module path (its fused fast path would hide the weights) and the maps are differentiable
        for p in params:
            if p.is_floating_point():
                p.requires_grad_(True)
        with _hooks(module, store) as n_hooks, torch.enable_grad():
            if n_hooks == 0:
                returned = _returned_attentions(model, inputs, forward_kwargs)
                if returned is not None:
                    return returned
                raise ValueError(
                    f"model ({type(module).__name__}) has no attention module propex can read: it looks for "
                    "torch.nn.MultiheadAttention, the attention classes of Hugging Face models, and a forward "
                    "accepting output_attentions=True that returns a mapping with 'attentions'. Wrap a custom "
                    "attention so that it uses nn.MultiheadAttention, or pass precomputed maps to "
                    "propex.attention.rollout / attention_flow_matrix")
            outputs = ModelCall(model).first_call(inputs, forward_kwargs)
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
    if not store:
        raise ValueError("model: no attention module ran during the forward pass (a fused fast path, e.g. "
                         "nn.TransformerEncoder's, bypasses nn.MultiheadAttention); run the model in eval mode "
                         "with autograd and parameters that require grad, or build it with batch_first=False")
    missing = [name for name, _, w in store if not isinstance(w, Tensor)]
    if missing:
        raise ValueError(f"model: the attention module(s) {', '.join(sorted(set(missing)))} returned no attention "
                         f"weights (a fused kernel such as sdpa / flash attention hides them). {_FUSED_HINT}; for "
                         "nn.MultiheadAttention make sure the module is called with need_weights honoured.")
    maps, handles, names, causal = [], [], [], False
    for name, mod, w in store:
        if isinstance(mod, nn.MultiheadAttention):
            if w.dim() == 3:            # unbatched call
                w = w.unsqueeze(0)
            handle = w._base if w._base is not None else w
        else:
            handle = w
        if w.dim() != 4:
            raise ValueError(f"model: attention module {name} returned weights of shape {tuple(w.shape)}; "
                             "expected [N, heads, T_q, T_k]")
        maps.append(w)
        handles.append(handle)
        names.append(name)
        causal = causal or bool(getattr(mod, "is_causal", False))
    return AttentionMaps(maps=maps, handles=handles, modules=names, causal=causal, outputs=outputs,
                         shapes=[m.shape for m in maps])


def _returned_attentions(model: Any, inputs: tuple[Tensor, ...], forward_kwargs: Mapping[str, Any]
                         ) -> AttentionMaps | None:
    """Fallback for custom models: ``model(..., output_attentions=True)`` returning a mapping (or
    object) with ``logits`` and ``attentions`` (a sequence of ``[N, H, T, T]``); None if it does not."""
    try:
        out = model(*inputs, **forward_kwargs, output_attentions=True)
    except TypeError:
        return None
    attentions = out.get("attentions") if isinstance(out, Mapping) else getattr(out, "attentions", None)
    if not attentions or not all(isinstance(a, Tensor) and a.dim() == 4 for a in attentions):
        return None
    from ..model_call import normalize_output
    maps = list(attentions)
    return AttentionMaps(maps=maps, handles=maps, modules=[f"attentions[{i}]" for i in range(len(maps))],
                         causal=False, outputs=normalize_output(out), shapes=[m.shape for m in maps])

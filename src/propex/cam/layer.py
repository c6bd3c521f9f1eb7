"""Choosing the CAM layer: the last convolutional feature map, found by one probe pass.

The rule (``default_layer``), on one forward pass of the first sample with a forward hook
on every submodule:

1. candidates are the module calls, in the order they *finish*, whose output is a
   floating-point ``[N, C, H, W]`` tensor; skipped are the root module, modules called more
   than once in the pass (their output is not one tensor), adaptive pooling layers (the
   classifier head's pooling: ``AdaptiveAvgPool2d`` in resnet and vgg) and 1×1 maps that
   come after larger ones (global pooling and the head after it, e.g. convnext's
   ``LayerNorm2d`` on the pooled features);
2. the last candidate to finish is the model's last feature map; it is usually produced
   by a container (``layer4``, ``features``), and then its last child that returned the very
   same tensor is reported instead: ``layer4.1`` (= ``model.layer4[-1]``) for resnet,
   ``features.30`` (= ``model.features[-1]``) for vgg16, ``features.18`` for mobilenet_v2,
   ``features.norm5`` for densenet121, ``features.8`` for efficientnet_b0 — the layers the
   pytorch-grad-cam README recommends (the map is the same tensor either way);
3. if the model goes on computing on token-shaped ``[N, L, D]`` tensors after that map (a
   vision transformer, whose only 4-D output is the patch embedding) no layer is chosen:
   a ``ValueError`` asks for ``layer=`` and ``reshape=``.

The choice is cached per model and input shape (weakly: the cache does not keep models
alive), so only the first call on a model pays the one-sample probe pass; a cached name is
re-checked against the model's current modules.
"""
from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor, nn

from ..inputs import index_kwargs

_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple[str, nn.Module]]]" = weakref.WeakKeyDictionary()
_HEAD_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def layer_name(model: nn.Module, layer: nn.Module) -> str:
    """The dotted name of ``layer`` in ``model``."""
    for name, module in model.named_modules():
        if module is layer:
            return name
    return type(layer).__name__


def default_layer(model: Any, inputs: tuple[Tensor, ...], forward_kwargs: dict[str, Any]) -> tuple[str, nn.Module]:
    """``(name, module)`` of the last convolutional feature map of ``model`` on inputs like these."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"finding the CAM layer needs model to be an nn.Module, got {type(model).__name__}; "
                        "pass layer= explicitly")
    key = tuple((tuple(t.shape[1:]), t.dtype, t.device.type) for t in inputs)
    cached = _CACHE.get(model, {}).get(key)
    if cached is not None and dict(model.named_modules()).get(cached[0]) is cached[1]:
        return cached
    found = _probe(model, inputs, forward_kwargs)
    _CACHE.setdefault(model, {})[key] = found
    return found


class _Call:
    __slots__ = ("name", "module", "output", "shape", "order")

    def __init__(self, name: str, module: nn.Module, output: Any, order: int):
        self.name, self.module, self.output, self.order = name, module, output, order
        self.shape = tuple(output.shape) if isinstance(output, Tensor) else None


def _probe(model: nn.Module, inputs: tuple[Tensor, ...], forward_kwargs: dict[str, Any]) -> tuple[str, nn.Module]:
    calls: list[_Call] = []
    counts: dict[int, int] = {}
    pooled: set[int] = set()       # 1x1 maps after larger ones: global pooling and the head after it
    larger = [False]
    named = [(name, m) for name, m in model.named_modules() if name]

    def make_hook(name: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            counts[id(module)] = counts.get(id(module), 0) + 1
            if isinstance(output, Tensor) and output.dim() == 4:
                if output.shape[2] * output.shape[3] > 1:
                    larger[0] = True
                elif larger[0]:
                    pooled.add(len(calls))
            calls.append(_Call(name, module, output, len(calls)))
        return hook

    handles = [m.register_forward_hook(make_hook(name)) for name, m in named]
    try:
        n = inputs[0].shape[0]
        one = tuple(t[:1] for t in inputs)
        kwargs = index_kwargs(forward_kwargs, n, torch.zeros(1, dtype=torch.long)) if forward_kwargs else {}
        with torch.no_grad():
            model(*one, **kwargs)
    except Exception as err:
        raise ValueError(f"layer=None: the probe pass that looks for the last convolutional layer failed ({err}); "
                         "check x, or pass layer= explicitly") from err
    finally:
        for h in handles:
            h.remove()

    def spatial(c: _Call) -> bool:
        return (c.shape is not None and len(c.shape) == 4 and c.output.is_floating_point()
                and counts[id(c.module)] == 1 and not isinstance(c.module, _HEAD_POOLS)
                and c.order not in pooled)

    maps = [c for c in calls if spatial(c)]
    if not maps:
        tokens = [c.name for c in calls if c.shape is not None and len(c.shape) == 3 and counts[id(c.module)] == 1]
        hint = (f" It has token-shaped [N, L, D] outputs (e.g. {', '.join(tokens[-3:])}): pass layer= one of them "
                "and reshape=(h, w) (or a callable) to lay the tokens out on a grid.") if tokens else ""
        raise ValueError("layer=None: the model has no submodule with a spatial [N, C, H, W] output, so there is "
                         f"no convolutional layer to use by default.{hint}")
    last = maps[-1]
    later_tokens = [c for c in calls if c.order > last.order and c.shape is not None and len(c.shape) == 3
                    and c.output.is_floating_point() and counts[id(c.module)] == 1]
    if later_tokens:
        names = ", ".join(c.name for c in later_tokens[-3:])
        raise ValueError(
            f"layer=None: the last module with a spatial [N, C, H, W] output is {last.name!r}, but the model goes on "
            f"computing on token-shaped tensors after it (e.g. {names}, shape {list(later_tokens[-1].shape)}), as a "
            "vision transformer does. Pass layer= the layer to explain (for a ViT, the first norm of the last block, "
            "e.g. 'encoder.layers.encoder_layer_11.ln_1' in torchvision, 'blocks.11.norm1' in timm) and "
            "reshape=(h, w) for its patch grid (leading class tokens are dropped)."
        )
    # report the last child of the container that returned this very tensor (model.layer4[-1])
    prefix = last.name + "."
    children = [c for c in maps if c.name.startswith(prefix) and "." not in c.name[len(prefix):]
                and c.output is last.output]
    chosen = children[-1] if children else last
    return chosen.name, chosen.module

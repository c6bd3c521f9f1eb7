"""What every CAM method shares: the layer, its maps, and turning channel maps into a heatmap.

A CAM method looks at one layer's activations :math:`A \\in \\mathbb R^{C\\times h\\times w}`
(per sample) and, for the gradient-based ones, the gradient :math:`G = \\partial f_y/\\partial A`
of the explained scalar, and combines them into one map :math:`[h, w]`. ``CAMMethod`` owns

* the layer: ``layer=`` (a module or dotted name), or by default the last convolutional
  feature map (``propex.cam.layer.default_layer``);
* ``reshape=``: token-shaped layers ``[N, L, D]`` (vision transformers) laid out on a grid;
* the finishing steps: ``relu`` (default on), ``upsample`` (bilinear to the input's spatial
  size by default), ``normalize`` (per-map min-max to [0, 1], off by default).

Results are ``[N, 1, H, W]`` (``[N, T, 1, H, W]`` for T targets per sample).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import Explanation, Method
from ..batching import check_batch_size, parse_memory
from ..inputs import as_input_tuple, check_forward_kwargs
from ..layers import resolve_layer
from .layer import default_layer, layer_name

INTERPOLATIONS = ("bilinear", "nearest", "nearest-exact", "bicubic", "area")


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_size(value: Any, name: str) -> tuple[int, int]:
    """A ``(h, w)`` pair of positive ints."""
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        return int(value[0]), int(value[1])
    raise ValueError(f"{name} must be a pair (h, w) of positive ints, got {value!r}")


class CAMMethod(Method):
    """Base of the CAM family (see the module docstring for the shared options).

    Options:
        layer: a module of the model or its dotted name; ``None`` picks the last convolutional
            feature map (``model.layer4[-1]`` for resnet, ``model.features[-1]`` for vgg; the
            rule is in ``propex.cam.layer``).
        reshape: for layers whose output is not ``[N, C, H, W]``: ``(h, w)`` lays token outputs
            ``[N, L, D]`` out on an h×w grid, dropping the first ``L - h*w`` tokens (a class
            token), or a callable ``Tensor -> [N, C, H, W]`` that only rearranges/selects values
            (it is applied to the activations and to their gradients alike, as in pytorch-grad-cam).
        relu: clamp the map at 0 (the papers' ReLU; ``False`` gives the signed map).
        upsample: ``True``: resize the map to x's spatial size ``x.shape[-2:]`` (x must be
            ``[N, C, H, W]``; for a tuple x, its first tensor); ``False``: keep the layer's
            resolution; ``(H, W)``: that size.
        normalize: rescale each map to [0, 1] by its min and max (applied last).
        interpolation: ``F.interpolate`` mode for upsampling (``"bilinear"``, ``"nearest"``, ...).
        align_corners: ``F.interpolate``'s flag for ``bilinear``/``bicubic`` (default False).
        batch_size / memory_budget: bound the samples per pass (as for the gradient methods).
    """

    family = "cam"

    def __init__(self, model: Any, *, layer: Any = None, reshape: Any = None, relu: bool = True,
                 upsample: bool | tuple[int, int] = True, normalize: bool = False,
                 interpolation: str = "bilinear", align_corners: bool = False,
                 batch_size: int | None = None, memory_budget: Any = None, **options: Any):
        super().__init__(model, **options)
        self.relu = check_bool(relu, "relu")
        self.normalize = check_bool(normalize, "normalize")
        if isinstance(upsample, bool):
            self.upsample: bool | tuple[int, int] = upsample
        else:
            self.upsample = check_size(upsample, "upsample")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
        self.interpolation = interpolation
        self.align_corners = check_bool(align_corners, "align_corners")
        if reshape is None or callable(reshape):
            self.reshape: Callable[[Tensor], Tensor] | tuple[int, int] | None = reshape
        else:
            self.reshape = check_size(reshape, "reshape")
        self.batch_size = check_batch_size(batch_size)
        parse_memory(memory_budget)
        self.memory_budget = memory_budget
        self.layer: nn.Module | None = resolve_layer(model, layer) if layer is not None else None
        self._layer_name = layer_name(model, self.layer) if self.layer is not None else None
        for key, value in (("relu", self.relu), ("upsample", self.upsample), ("normalize", self.normalize)):
            self.options[key] = value
        if self.reshape is not None:
            self.options["reshape"] = self.reshape if isinstance(self.reshape, tuple) else "callable"
        if interpolation != "bilinear" or align_corners:
            self.options.update(interpolation=interpolation, align_corners=align_corners)
        if batch_size is not None:
            self.options["batch_size"] = batch_size

    # ------------------------------------------------------------------ the layer
    def resolve_layer(self, x: Any, forward_kwargs: dict[str, Any] | None) -> nn.Module:
        """The layer given, or the default one for inputs like ``x`` (cached per model and shape)."""
        if self.layer is not None:
            return self.layer
        inputs, _ = as_input_tuple(x)
        name, module = default_layer(self.model, inputs, check_forward_kwargs(forward_kwargs))
        self._layer_name = name
        return module

    # ------------------------------------------------------------------ channel maps
    def as_maps(self, t: Tensor, n: int, what: str = "activations") -> Tensor:
        """The layer tensor ``[n, ...]`` as channel maps ``[n, C, h, w]`` (after ``reshape``)."""
        where = f"layer {self._layer_name!r}"
        if self.reshape is None:
            if t.dim() != 4:
                raise ValueError(
                    f"{self.name}: {where} has output shape {list(t.shape)}, not a spatial [N, C, H, W] map. "
                    "For token outputs [N, L, D] (vision transformers) pass reshape=(h, w), the patch grid "
                    "(leading class tokens are dropped), or a callable returning [N, C, H, W]; otherwise choose "
                    "a convolutional layer."
                )
            return t
        if callable(self.reshape):
            out = self.reshape(t)
            if not isinstance(out, Tensor) or out.dim() != 4 or out.shape[0] != n:
                got = f"shape {list(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"reshape: the callable must turn the {what} of {where} (shape {list(t.shape)}) "
                                 f"into [N, C, H, W] maps with N={n}; it returned {got}")
            return out
        h, w = self.reshape
        if t.dim() != 3:
            raise ValueError(f"reshape=(h, w) lays token outputs [N, L, D] out on a grid, but {where} has output "
                             f"shape {list(t.shape)}; pass a callable reshape for other layouts")
        extra = t.shape[1] - h * w
        if extra < 0:
            raise ValueError(f"reshape={self.reshape}: {where} has {t.shape[1]} tokens, fewer than h*w = {h * w}")
        return t[:, extra:, :].reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)

    def layer_maps(self, a: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        """Activations ``[N, ...]`` and gradients ``[N, T, ...]`` as ``[N, C, h, w]`` and ``[N, T, C, h, w]``."""
        n, n_targets = g.shape[:2]
        maps = self.as_maps(a, n)
        grads = self.as_maps(g.reshape(n * n_targets, *g.shape[2:]), n * n_targets, "gradients")
        if grads.shape[1:] != maps.shape[1:]:
            raise ValueError(f"reshape: the callable gave maps of shape {list(maps.shape[1:])} for the activations "
                             f"but {list(grads.shape[1:])} for their gradients; it must only rearrange values")
        return maps, grads.reshape(n, n_targets, *maps.shape[1:])

    # ------------------------------------------------------------------ finishing
    def output_size(self, inputs: tuple[Tensor, ...]) -> tuple[int, int] | None:
        if self.upsample is False:
            return None
        if self.upsample is True:
            x = inputs[0]
            if x.dim() != 4:
                raise ValueError(f"upsample=True resizes the map to x's spatial size, but x has shape {list(x.shape)} "
                                 "(not [N, C, H, W]); pass upsample=False or upsample=(H, W)")
            return int(x.shape[2]), int(x.shape[3])
        return self.upsample

    def resize(self, maps: Tensor, size: tuple[int, int]) -> Tensor:
        """``[..., h, w] -> [..., H, W]`` with the configured interpolation."""
        lead = maps.shape[:-2]
        flat = maps.reshape(-1, 1, *maps.shape[-2:])
        corners = self.align_corners if self.interpolation in ("bilinear", "bicubic") else None
        out = F.interpolate(flat, size=size, mode=self.interpolation, align_corners=corners)
        return out.reshape(*lead, *size)

    def finish(self, cam: Tensor, inputs: tuple[Tensor, ...]) -> Tensor:
        """``[N, T, h, w]`` raw maps -> ReLU, upsampling, normalisation -> ``[N, T, 1, H, W]``."""
        if self.relu:
            cam = cam.clamp(min=0)
        size = self.output_size(inputs)
        if size is not None and tuple(cam.shape[-2:]) != size:
            cam = self.resize(cam, size)
        if self.normalize:
            cam = min_max(cam)
        return cam.unsqueeze(2)

    def explanation(self, cam: Tensor, selector: Any, outputs: Tensor) -> Explanation:
        if not selector.multi:
            cam = cam[:, 0]
        options = dict(self.options)
        options["layer"] = self._layer_name
        return Explanation(cam, selector.public(), outputs, None, self.name, options)


def min_max(maps: Tensor) -> Tensor:
    """Each map ``[..., H, W]`` rescaled to [0, 1]; a constant map becomes 0."""
    flat = maps.reshape(*maps.shape[:-2], -1)
    low = flat.min(dim=-1, keepdim=True).values
    span = flat.max(dim=-1, keepdim=True).values - low
    out = torch.where(span > 0, (flat - low) / torch.where(span > 0, span, torch.ones_like(span)),
                      torch.zeros_like(flat))
    return out.reshape(maps.shape)

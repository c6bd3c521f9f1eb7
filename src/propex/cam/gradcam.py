"""The gradient-weighted CAMs: GradCAM, GradCAM++, HiResCAM and LayerCAM.

All four take the activations :math:`A` of one layer and the gradient
:math:`G = \\partial f_y / \\partial A` from the gradient engine: one forward pass in which the
layer's output becomes the autograd leaf (``GradientEngine.prepare(keep_graph=True)``) and one
backward pass from the target to that layer only, for the whole batch and all T targets (a
vmapped backward when T > 1). They differ only in how they combine ``A`` and ``G``.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..api import register
from ..base import Explanation
from ..gradient.base import rows
from ..gradient.engine import GradientEngine, Prepared
from .base import CAMMethod


class GradientCAM(CAMMethod):
    """A CAM computed from a layer's activations and the target's gradient w.r.t. them."""

    def _explain(self, x: Any, target: Any, forward_kwargs: dict[str, Any] | None) -> Explanation:
        cam, prep = self.raw_maps(x, target, forward_kwargs)
        return self.explanation(self.finish(cam, prep.inputs), prep.target, prep.outputs)

    def raw_maps(self, x: Any, target: Any, forward_kwargs: dict[str, Any] | None) -> tuple[Tensor, Prepared]:
        """The maps ``[N, T, h, w]`` at the layer's resolution before ReLU, and the engine's ``Prepared``."""
        layer = self.resolve_layer(x, forward_kwargs)
        engine = GradientEngine(self.model, layer=layer, batch_size=self.batch_size, memory_budget=self.memory_budget)
        prep = engine.prepare(x, target, forward_kwargs, keep_graph=True)
        activations = prep.space[0]
        self.as_maps(activations, prep.n)           # a layer without a spatial map fails before the backward
        self.output_size(prep.inputs)
        grads = engine.gradients_at_inputs(prep)
        if grads is None:                           # more samples than fit one pass: chunked, as saliency
            grads = tuple(engine.reduce(prep, 1, lambda k, s: rows(prep.space, s), lambda g, k, s: [g[0]]))
        maps, g = self.layer_maps(activations, grads[0])
        return self.combine(maps, g), prep

    def combine(self, a: Tensor, g: Tensor) -> Tensor:
        """Raw maps ``[N, T, h, w]`` from activations ``[N, C, h, w]`` and gradients ``[N, T, C, h, w]``."""
        raise NotImplementedError


def weighted_sum(weights: Tensor, a: Tensor) -> Tensor:
    """:math:`\\sum_k w_k A^k`: ``[N, T, C]`` weights and ``[N, C, h, w]`` maps -> ``[N, T, h, w]``."""
    return torch.einsum("ntc,nchw->nthw", weights, a)


@register
class GradCAM(GradientCAM):
    r"""Grad-CAM: channel maps weighted by their spatially averaged gradients.

    .. math:: \alpha_k = \frac{1}{hw}\sum_{i,j}\frac{\partial f_y}{\partial A^k_{ij}}, \qquad
              L = \mathrm{ReLU}\Big(\sum_k \alpha_k A^k\Big)

    then upsampled (bilinear) to the input size. On a model whose score is linear in the
    globally average-pooled activations, :math:`f_y = \sum_k w_k \frac1{hw}\sum_{ij}A^k_{ij} + b`,
    it is :math:`\frac1{hw}\sum_k w_k A^k`, the CAM of Zhou et al. (2016) divided by :math:`hw`.

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization", ICCV 2017. Matches pytorch-grad-cam's ``GradCAM`` and Captum's ``LayerGradCam``
    (``relu_attributions=True``) followed by ``LayerAttribution.interpolate``.
    """

    name = "gradcam"
    aliases = ("grad_cam",)

    def combine(self, a: Tensor, g: Tensor) -> Tensor:
        return weighted_sum(g.mean(dim=(-2, -1)), a)


@register
class GradCAMPlusPlus(GradientCAM):
    r"""Grad-CAM++: channel weights from positive gradients, weighted per position.

    .. math:: w_k = \sum_{i,j} \alpha^k_{ij}\,\mathrm{ReLU}(G^k_{ij}), \qquad
              \alpha^k_{ij} = \frac{(G^k_{ij})^2}{2 (G^k_{ij})^2 + \sum_{a,b} A^k_{ab}\,(G^k_{ij})^3},
              \qquad L = \mathrm{ReLU}\Big(\sum_k w_k A^k\Big)

    with :math:`G = \partial f_y/\partial A`. This is the paper's closed form for the
    exponentiated score :math:`Y = \exp(f_y)` of a piecewise-linear network, whose higher
    derivatives are :math:`\exp(f_y)\,G^2` and :math:`\exp(f_y)\,G^3`; the common factor
    :math:`\exp(f_y)` of the weights is dropped (it only scales the map), as in the authors' code
    and pytorch-grad-cam. :math:`\alpha = 0` where :math:`G = 0` or the denominator is 0.

    Option ``eps`` (default 0) is added to the denominator: ``eps=1e-6`` reproduces
    pytorch-grad-cam's ``GradCAMPlusPlus`` exactly. Note that a fixed ``eps`` makes the map
    depend on the scale of the scores (gradients at a late layer are often ~1e-3, so
    :math:`G^2` is of the order of 1e-6 itself).

    Chattopadhay, Sarkar, Howlader & Balasubramanian, "Grad-CAM++: Generalized Gradient-based
    Visual Explanations for Deep Convolutional Networks", WACV 2018.
    """

    name = "gradcam_pp"
    aliases = ("gradcam_plus_plus", "gradcampp", "grad_cam_pp", "gradcam++")

    def __init__(self, model: Any, *, eps: float = 0.0, **options: Any):
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
            raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
        super().__init__(model, eps=float(eps), **options)
        self.eps = float(eps)

    def combine(self, a: Tensor, g: Tensor) -> Tensor:
        total = a.sum(dim=(-2, -1))[:, None, :, None, None]             # [N, 1, C, 1, 1]
        g2 = g * g
        denominator = 2 * g2 + total * g2 * g + self.eps
        usable = (g != 0) & (denominator != 0)
        alpha = torch.where(usable, g2 / torch.where(usable, denominator, torch.ones_like(denominator)),
                            torch.zeros_like(g))
        weights = (alpha * g.clamp(min=0)).sum(dim=(-2, -1))
        return weighted_sum(weights, a)


@register
class HiResCAM(GradientCAM):
    r"""HiResCAM: the gradient times the activation, summed over channels, position by position.

    .. math:: L_{ij} = \mathrm{ReLU}\Big(\sum_k G^k_{ij}\,A^k_{ij}\Big), \qquad G = \partial f_y/\partial A

    Unlike Grad-CAM it does not average the gradient over positions, so the map provably
    shows the locations the score used when the layer is followed by a linear head (then
    :math:`\sum_{ij} L_{ij}` without the ReLU is :math:`f_y - b`). Equal to Grad-CAM when the
    gradient is constant over positions (a global-average-pooled linear head).

    Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of
    convolutional neural networks", 2020 (arXiv:2011.08891).
    """

    name = "hirescam"
    aliases = ("hires_cam",)

    def combine(self, a: Tensor, g: Tensor) -> Tensor:
        return (g * a.unsqueeze(1)).sum(dim=2)


@register
class LayerCAM(GradientCAM):
    r"""LayerCAM: activations weighted position by position by their positive gradients.

    .. math:: L_{ij} = \mathrm{ReLU}\Big(\sum_k \mathrm{ReLU}(G^k_{ij})\,A^k_{ij}\Big)

    Meant to work at any layer, including shallow ones with high resolution.

    Jiang, Zhang, Hou, Cheng & Wei, "LayerCAM: Exploring Hierarchical Class Activation Maps
    for Localization", IEEE TIP 2021.
    """

    name = "layercam"
    aliases = ("layer_cam",)

    def combine(self, a: Tensor, g: Tensor) -> Tensor:
        return (g.clamp(min=0) * a.unsqueeze(1)).sum(dim=2)

"""Score-CAM on the perturbation engine: channel maps weighted by the score of the input they mask."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..api import register
from ..base import Explanation
from ..layers import LayerTap
from ..perturbation.engine import PerturbationEngine
from .base import CAMMethod


@register
class ScoreCAM(CAMMethod):
    r"""Score-CAM: each channel map, upsampled and rescaled to [0, 1], masks the input; the
    target's score on the masked input weighs the channel.

    .. math:: H^k = \frac{\mathrm{up}(A^k) - \min \mathrm{up}(A^k)}{\max \mathrm{up}(A^k) - \min \mathrm{up}(A^k)},
              \qquad \alpha = \mathrm{softmax}_k\big(f_y(x \odot H^k)\big), \qquad
              L = \mathrm{ReLU}\Big(\sum_k \alpha_k A^k\Big)

    (the paper's "channel-wise increase of confidence" :math:`f_y(x\odot H^k) - f_y(x_b)` has the
    same softmax: the baseline term is common to all channels). A constant channel map gives
    :math:`H^k = 0`. No gradients: C forward passes per sample (C = the layer's channels), run by
    the perturbation engine over all (channel, sample) pairs in chunks bounded by
    ``batch_size`` / ``memory_budget``.

    Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
    Networks", CVPR workshops 2020. pytorch-grad-cam's ``ScoreCAM`` upsamples the maps with
    ``align_corners=True`` (``nn.UpsamplingBilinear2d``): pass ``align_corners=True`` to match it.
    The masks are resized with ``interpolation`` / ``align_corners`` like the output map.
    """

    name = "scorecam"
    aliases = ("score_cam",)

    def _explain(self, x: Any, target: Any, forward_kwargs: dict[str, Any] | None) -> Explanation:
        tap = LayerTap(self.resolve_layer(x, forward_kwargs))
        engine = PerturbationEngine(self.model, batch_size=self.batch_size, memory_budget=self.memory_budget)
        with tap.active():
            prep = engine.prepare(x, target, forward_kwargs)
        maps = self.as_maps(tap.captured.detach(), prep.n)            # [N, C, h, w]
        self.output_size(prep.inputs)
        for i, t in enumerate(prep.inputs):
            if t.dim() != 4:
                label = f"x[{i}]" if prep.was_tuple else "x"
                raise ValueError(f"scorecam masks image inputs [N, C, H, W] with the layer's maps; {label} has "
                                 f"shape {list(t.shape)}")
        sizes = sorted({tuple(t.shape[-2:]) for t in prep.inputs})

        def masks_at(size: tuple[int, int]):
            def masks(k: Tensor, s: Tensor) -> Tensor:
                up = self.resize(maps[s, k], size)                   # [B, H, W]
                flat = up.reshape(up.shape[0], -1)
                low = flat.min(dim=1).values[:, None, None]
                span = flat.max(dim=1).values[:, None, None] - low
                unit = torch.where(span > 0, (up - low) / torch.where(span > 0, span, torch.ones_like(span)),
                                   torch.zeros_like(up))
                return unit.unsqueeze(1)                             # [B, 1, H, W]: the same on every channel
            return masks

        getters = {size: masks_at(size) for size in sizes}
        per_input = tuple(getters[tuple(t.shape[-2:])] for t in prep.inputs)
        scores = engine.evaluate_masks(prep, per_input if prep.was_tuple else per_input[0], None,
                                       n_masks=maps.shape[1])     # [N, C, T]
        weights = torch.softmax(scores.to(maps.dtype), dim=1)
        cam = torch.einsum("nct,nchw->nthw", weights, maps)
        return self.explanation(self.finish(cam, prep.inputs), prep.target, prep.outputs)

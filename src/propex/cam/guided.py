"""Guided Grad-CAM: guided backpropagation times the upsampled Grad-CAM map."""
from __future__ import annotations

from typing import Any

from ..api import register
from ..base import Explanation
from ..inputs import restore_structure
from ..propagation.engine import UNKNOWN_OPS
from ..propagation.guided import GuidedBackprop
from ..targets import TargetSelector
from .base import min_max
from .gradcam import GradCAM


@register
class GuidedGradCAM(GradCAM):
    r"""Guided Grad-CAM: the guided-backpropagation map gated by the upsampled Grad-CAM map.

    .. math:: a_{c,i,j} = \mathrm{GB}_{c,i,j}(x)\cdot \mathrm{up}\big(L^{\text{Grad-CAM}}\big)_{i,j}

    where :math:`\mathrm{GB}` is guided backpropagation (``guided_backprop``, on the propagation
    engine) and :math:`L^{\text{Grad-CAM}}` is ``gradcam``'s map (ReLU on by default) resized to
    each input tensor's spatial size. Attributions are shaped like x.

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization", ICCV 2017, section 3.2. Captum's ``GuidedGradCam`` resizes the Grad-CAM map
    with ``interpolate_mode="nearest"`` by default; pass ``interpolation="nearest"`` to get the same
    (propex's default is the paper's bilinear). ``normalize=True`` rescales the Grad-CAM map to
    [0, 1] before the product (pytorch-grad-cam's example does so); ``upsample`` must stay True.
    ``unknown_ops`` is passed to guided backpropagation.
    """

    name = "guided_gradcam"
    aliases = ("guided_grad_cam",)

    def __init__(self, model: Any, *, unknown_ops: str = "raise", **options: Any):
        if unknown_ops not in UNKNOWN_OPS:
            raise ValueError(f"unknown_ops must be one of {', '.join(UNKNOWN_OPS)}, got {unknown_ops!r}")
        super().__init__(model, **options)
        if self.upsample is not True:
            raise ValueError(f"guided_gradcam multiplies the Grad-CAM map with guided backpropagation at each "
                             f"input's resolution, so upsample must be True, got {self.upsample!r}")
        self.unknown_ops = unknown_ops
        if unknown_ops != "raise":
            self.options["unknown_ops"] = unknown_ops

    def _explain(self, x: Any, target: Any, forward_kwargs: dict[str, Any] | None) -> Explanation:
        cam, prep = self.raw_maps(x, target, forward_kwargs)
        for i, t in enumerate(prep.inputs):
            if t.dim() != 4:
                label = f"x[{i}]" if prep.was_tuple else "x"
                raise ValueError(f"guided_gradcam needs image inputs [N, C, H, W]; {label} has shape {list(t.shape)}")
        if self.relu:
            cam = cam.clamp(min=0)
        guided = GuidedBackprop(self.model, unknown_ops=self.unknown_ops, batch_size=self.batch_size)
        gb = guided._explain(x, _same_target(prep.target, target), forward_kwargs)  # inside explain's model_guard
        gb_maps = gb.attributions if isinstance(gb.attributions, tuple) else (gb.attributions,)
        out = []
        for g in gb_maps:
            if not prep.target.multi:
                g = g.unsqueeze(1)                                   # [N, T, C, H, W]
            gate = self.resize(cam, tuple(g.shape[-2:])) if tuple(cam.shape[-2:]) != tuple(g.shape[-2:]) else cam
            if self.normalize:
                gate = min_max(gate)
            a = g * gate.unsqueeze(2)
            out.append(a if prep.target.multi else a[:, 0])
        options = dict(self.options)
        options["layer"] = self._layer_name
        return Explanation(restore_structure(tuple(out), prep.was_tuple), prep.target.public(), prep.outputs,
                           None, self.name, options)


def _same_target(selector: TargetSelector, target: Any) -> Any:
    """The target of the Grad-CAM pass for the guided pass: the resolved class indices where there are
    some (so that ``target=None`` names the same classes), else the user's target as given."""
    if selector.indices is None:
        return target
    return selector.indices if selector.multi else selector.indices[:, 0]


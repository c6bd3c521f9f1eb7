"""Complexity / understandability of explanations: sparseness, entropy, compressed file size.

All three judge the map alone: ``model`` and ``target`` are accepted for the common metric
signature ``(model, x, attributions, target=None, **options)`` (so that ``compare`` can call
every metric alike) and are not used; ``model`` may be ``None``. ``x`` is used to check the
attributions' shape only. The attributions are scored as given (a channel-reduced map is not
repeated over the channels).
"""
from __future__ import annotations

import io
from typing import Any

import torch
from torch import Tensor

from ._common import check_attributions, check_choice, check_inputs, check_int, check_number


def _flat_attributions(x: Any, attributions: Any) -> tuple[Tensor, Tensor]:
    """Validated ``x`` and the attributions flattened per sample as given (``[N, F]``)."""
    x = check_inputs(x)
    a = check_attributions(attributions, x, broadcast=False)
    return x, a.reshape(a.shape[0], -1)


def sparseness(model: Any, x: Tensor, attributions: Tensor, target: Any = None, *, abs: bool = True,
               eps: float = 0.0) -> Tensor:
    r"""Sparseness: the Gini index of the attribution magnitudes, per sample → ``[N]``.

    .. math:: G(a) = \frac{\sum_{i=1}^{F} (2i - F - 1)\, a_{(i)}}{F \sum_{i=1}^{F} a_{(i)}}

    with :math:`a_{(1)} \le \dots \le a_{(F)}` the sorted magnitudes :math:`|a_i|` (+ ``eps``).
    G = 0 for a uniform map, → 1 when one feature holds all the relevance. Higher = sparser =
    more concise. Chalasani, Chen, Chowdhury, Jha & Wu, "Concise Explanations of Neural
    Networks using Adversarial Training", ICML 2020 (Gini index after Hurley & Rickard 2009).

    ``abs=False`` scores the signed values (then they should be non-negative). A zero map
    (all ``|a_i| + eps`` zero) scores 0, the value of a uniform map. Quantus' ``Sparseness``
    adds 1e-7 to every value (``eps=1e-7``) after dividing by the batch-wide max, which
    changes nothing else: the Gini index is scale invariant.
    """
    _, a = _flat_attributions(x, attributions)
    if not isinstance(abs, bool):
        raise TypeError(f"abs must be True or False, got {type(abs).__name__} {abs!r}")
    eps = check_number(eps, "eps", minimum=0.0)
    v = (a.abs() if abs else a) + eps
    f = v.shape[1]
    v, _ = torch.sort(v, dim=1)
    i = torch.arange(1, f + 1, device=v.device, dtype=v.dtype)
    total = v.sum(dim=1)
    g = ((2 * i - f - 1) * v).sum(dim=1) / (f * total)
    return torch.where(total > 0, g, torch.zeros_like(g))


def complexity(model: Any, x: Tensor, attributions: Tensor, target: Any = None) -> Tensor:
    r"""Complexity: the entropy of the fractional contributions, per sample → ``[N]``.

    .. math:: P_i = \frac{|a_i|}{\sum_j |a_j|}, \qquad C(a) = -\sum_i P_i \ln P_i

    (0 ln 0 = 0). Lower = fewer features carry the explanation. Bhatt, Weller & Moura,
    "Evaluating and Aggregating Feature-based Model Explanations", IJCAI 2020. Ranges from 0
    (one feature) to ln F (uniform). A zero map has no distribution: NaN. Quantus'
    ``Complexity`` computes ``-Σ P ln(P + 1e-12)``, which differs by less than F·1e-12.
    """
    _, a = _flat_attributions(x, attributions)
    mag = a.abs()
    total = mag.sum(dim=1, keepdim=True)
    p = mag / total
    h = -torch.special.xlogy(p, p).sum(dim=1)
    return torch.where(total[:, 0] > 0, h, torch.full_like(h, float("nan")))


def _pil():
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - exercised only without Pillow
        raise ImportError("compressed_size renders heatmaps with Pillow: pip install 'propex[viz]' "
                          "(or pip install pillow)") from err
    return Image


def render_heatmap(attribution: Tensor, *, reduce: str = "sum", clip_percentile: float = 99.5,
                   colour: bool = True) -> Tensor:
    """One sample's map as an 8-bit image ``[H, W, 3]`` (``colour``) or ``[H, W]`` (grey).

    The map is the one ``propex.visualize.to_heatmap`` draws (channels combined by ``reduce``,
    scaled by the ``clip_percentile``-th percentile of magnitudes to [-1, 1]); colours follow
    the signed blue-white-red scale of ``propex.visualize.attribution_grid`` (matplotlib's
    ``bwr``: -1 blue, 0 white, +1 red); ``colour=False`` gives the magnitude in grey levels.
    """
    from ..visualize.heatmap import to_heatmap

    v = to_heatmap(attribution, reduce=reduce, clip_percentile=clip_percentile)   # [H, W] in [-1, 1]
    if not colour:
        return torch.round(v.abs() * 255).to(torch.uint8)
    t = (v + 1) / 2
    r = torch.clamp(2 * t, max=1.0)
    g = 1 - (2 * t - 1).abs()
    b = torch.clamp(2 - 2 * t, max=1.0)
    return torch.round(torch.stack([r, g, b], dim=-1) * 255).to(torch.uint8)


def compressed_size(model: Any, x: Tensor, attributions: Tensor, target: Any = None, *, format: str = "png",
                    quality: int = 75, reduce: str = "sum", clip_percentile: float = 99.5,
                    colour: bool = True) -> Tensor:
    r"""Bytes of the rendered heatmap compressed as PNG or JPEG, per sample → ``[N]``.

    .. math:: S(a) = |\operatorname{encode}(\operatorname{render}(a))| \text{ bytes}

    The understandability proxy of seed 001 (simpler maps compress better, so fewer bytes =
    easier to take in; cf. the file-size complexity measure of Machado et al. 2015 for
    images). ``render`` is ``render_heatmap`` (the colouring of ``propex.visualize``);
    ``format`` is ``"png"`` (lossless, zlib level 9, no metadata) or ``"jpeg"`` (``quality``
    1..95, baseline, no metadata). Needs Pillow (the ``viz`` extra). Image-like attributions
    only: ``[N, C, H, W]``, ``[N, 1, H, W]`` or ``[N, H, W]``.
    """
    x = check_inputs(x)
    a = check_attributions(attributions, x)
    fmt = check_choice(format, "format", ("png", "jpeg", "jpg"))
    fmt = "jpeg" if fmt == "jpg" else fmt
    quality = check_int(quality, "quality", minimum=1, maximum=95)
    check_choice(reduce, "reduce", ("sum", "abs", "max_abs"))
    if not isinstance(clip_percentile, (int, float)) or isinstance(clip_percentile, bool) \
            or not 0 < clip_percentile <= 100:
        raise ValueError(f"clip_percentile must be in (0, 100], got {clip_percentile!r}")
    if x.dim() not in (3, 4):
        raise ValueError(f"compressed_size renders 2-D heatmaps: x must be [N, C, H, W] or [N, H, W], "
                         f"got shape {tuple(x.shape)}")
    image = _pil()
    if x.dim() == 3:
        a = a.unsqueeze(1)
    sizes = []
    for row in a:
        pixels = render_heatmap(row, reduce=reduce, clip_percentile=float(clip_percentile), colour=bool(colour))
        img = image.fromarray(pixels.numpy())
        buf = io.BytesIO()
        if fmt == "png":
            img.save(buf, format="PNG", optimize=False, compress_level=9)
        else:
            img.save(buf, format="JPEG", quality=quality, optimize=False, progressive=False)
        sizes.append(len(buf.getvalue()))
    return torch.tensor(sizes, dtype=torch.float32 if x.dtype != torch.float64 else torch.float64, device=x.device)


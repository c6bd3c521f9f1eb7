"""Localisation: does the map point at the object? Pointing game, relevance mass / energy
pointing game, relevance rank accuracy, IoU of the thresholded map's bounding box, and rank
correlation between two maps (e.g. with a human attention map).

Common conventions. ``mask`` (the ground truth: object segmentation or box, as a bool or 0/1
tensor) is shaped like ``x`` or channel-reduced (``[N, 1, H, W]`` / ``[N, H, W]``); a pixel
belongs to it if any of its channels does. The attributions are reduced to one map per
sample by summing over the channels (a pixel's relevance is the sum over its channels), so
``[N, C, H, W]``, ``[N, 1, H, W]`` and ``[N, H, W]`` attributions score alike. Inputs without
a channel dimension (``[N, F]``) are used as they are. ``model`` and ``target`` are accepted
for the common metric signature and not used (``model`` may be ``None``). A sample whose
mask is empty scores NaN.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import check_attributions, check_choice, check_fraction, check_inputs, check_mask, check_number
from ._stats import spearman


def _spatial(x: Tensor, t: Tensor, *, any_channel: bool = False) -> Tensor:
    """``[N, *S]``: channels summed (or OR-ed for masks) for x ``[N, C, *S]``; as is for ``[N, F]``."""
    if x.dim() >= 3:
        return t.any(dim=1) if any_channel else t.sum(dim=1)
    return t


def _maps_and_mask(x: Any, attributions: Any, mask: Any) -> tuple[Tensor, Tensor, Tensor]:
    x = check_inputs(x)
    a = check_attributions(attributions, x, broadcast=False)   # channel-reduced maps stay [N, 1, *S]
    m = check_mask(mask, x, "mask")
    return x, _spatial(x, a), _spatial(x, m, any_channel=True)


def _nan_empty(values: Tensor, mask_flat: Tensor) -> Tensor:
    empty = mask_flat.sum(dim=1) == 0
    return torch.where(empty, torch.full_like(values, float("nan")), values)


def pointing_game(model: Any, x: Tensor, attributions: Tensor, mask: Tensor, target: Any = None, *,
                  tolerance: float = 15) -> Tensor:
    r"""Pointing game: 1 if the map's maximum lies on the object (within ``tolerance``), else 0.

    .. math:: \text{hit}(a, M) = \big[\exists\, p \in \arg\max_q a_q:\ \min_{m \in M} \lVert p - m\rVert_2 \le \tau\big]

    Zhang, Bargal, Lin, Brandt, Shen & Sclaroff, "Top-down Neural Attention by Excitation
    Backprop", ECCV 2016 / IJCV 2018: a hit when the maximum point lies within τ = 15 pixels
    of the annotated region (to absorb annotation slack). ``tolerance`` is τ in pixels
    (Euclidean, on the map's grid; 1-D and 3-D maps alike); ``tolerance=0`` requires the
    maximum on the mask, which is what Quantus' ``PointingGame`` computes (it has no
    tolerance). Ties for the maximum: a hit if any maximal point hits. Returns ``[N]`` of
    0.0 / 1.0 (NaN for an empty mask).
    """
    x, a, m = _maps_and_mask(x, attributions, mask)
    tol = check_number(tolerance, "tolerance", minimum=0.0)
    n = a.shape[0]
    flat = a.reshape(n, -1)
    is_max = flat == flat.amax(dim=1, keepdim=True)
    hit_region = _dilate(m, tol).reshape(n, -1) if tol > 0 else m.reshape(n, -1)
    hit = (is_max & hit_region).any(dim=1).to(a.dtype)
    return _nan_empty(hit, m.reshape(n, -1))


def _dilate(mask: Tensor, radius: float) -> Tensor:
    """``mask`` ``[N, *S]`` (1 to 3 spatial dims) grown by a Euclidean ball of ``radius`` grid units."""
    d = mask.dim() - 1
    if d not in (1, 2, 3):
        raise ValueError(f"pointing_game: tolerance needs 1 to 3 spatial dimensions, the maps have {d}")
    r = int(radius)
    if r == 0:
        return mask
    grid = torch.meshgrid(*[torch.arange(-r, r + 1, dtype=torch.float32, device=mask.device)] * d, indexing="ij")
    ball = (sum(g * g for g in grid) <= radius * radius + 1e-9).to(torch.float32)
    conv = (F.conv1d, F.conv2d, F.conv3d)[d - 1]
    out = conv(mask.unsqueeze(1).to(torch.float32), ball[None, None], padding=r)
    return out[:, 0] > 0.5


def relevance_mass(model: Any, x: Tensor, attributions: Tensor, mask: Tensor, target: Any = None, *,
                   positive: bool = True) -> Tensor:
    r"""Relevance mass accuracy: the share of the (positive) relevance that falls on the object.

    .. math:: \mathrm{RMA}(a, M) = \frac{\sum_{p \in M} a_p^+}{\sum_{p} a_p^+}

    Arras, Osman & Samek, "CLEVR-XAI: A benchmark dataset for the ground truth evaluation of
    neural network explanations", Information Fusion 2022 ("we only consider positive
    relevance"). ``positive=False`` uses the signed values, as Quantus'
    ``RelevanceMassAccuracy`` does (its docstring says positive, its code does not clamp).
    The same quantity on a bounding-box mask is the *energy-based pointing game* of Score-CAM
    (``energy_pointing_game``). A map without positive relevance scores 0. Returns ``[N]``.
    """
    x, a, m = _maps_and_mask(x, attributions, mask)
    if not isinstance(positive, bool):
        raise TypeError(f"positive must be True or False, got {type(positive).__name__} {positive!r}")
    n = a.shape[0]
    v = a.reshape(n, -1)
    if positive:
        v = v.clamp_min(0)
    mm = m.reshape(n, -1)
    inside = (v * mm).sum(dim=1)
    total = v.sum(dim=1)
    if positive:
        out = torch.where(total > 0, inside / torch.where(total > 0, total, torch.ones_like(total)),
                          torch.zeros_like(total))
    else:
        out = inside / total
    return _nan_empty(out, mm)


def energy_pointing_game(model: Any, x: Tensor, attributions: Tensor, mask: Tensor, target: Any = None) -> Tensor:
    r"""Energy-based pointing game: the share of the map's (positive) energy inside the box.

    .. math:: \text{Proportion} = \frac{\sum_{p \in \text{bbox}} L_p}{\sum_p L_p}

    Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
    Networks", CVPR workshops 2020, Sec. 5.2. ``mask`` is the box (or any region); the map's
    negative values are clipped at 0 (CAM maps are non-negative). Identical to
    ``relevance_mass(..., positive=True)``. Returns ``[N]``.
    """
    return relevance_mass(model, x, attributions, mask, target, positive=True)


def relevance_rank(model: Any, x: Tensor, attributions: Tensor, mask: Tensor, target: Any = None) -> Tensor:
    r"""Relevance rank accuracy: the fraction of the K most relevant pixels that lie on the object,
    with K = |M| the object's size.

    .. math:: \mathrm{RRA}(a, M) = \frac{|\operatorname{top}_{|M|}(a) \cap M|}{|M|}

    Arras, Osman & Samek, Information Fusion 2022 (CLEVR-XAI). Ties at the K-th value are
    broken by position (stable descending sort). Returns ``[N]``.
    """
    x, a, m = _maps_and_mask(x, attributions, mask)
    n = a.shape[0]
    v = a.reshape(n, -1)
    mm = m.reshape(n, -1)
    k = mm.sum(dim=1)
    order = torch.sort(v, dim=1, descending=True, stable=True).indices
    on_object = mm.gather(1, order)
    rank = torch.arange(v.shape[1], device=v.device).unsqueeze(0)
    hits = (on_object & (rank < k.unsqueeze(1))).sum(dim=1).to(a.dtype)
    out = hits / k.clamp_min(1).to(a.dtype)
    return _nan_empty(out, mm)


def bbox_iou(model: Any, x: Tensor, attributions: Tensor, mask: Tensor, target: Any = None, *,
             fraction: float = 0.15, component: str = "largest") -> Tensor:
    r"""IoU of the bounding box of the map binarised at ``fraction`` of its maximum with the
    bounding box of ``mask`` (weakly supervised localisation).

    .. math:: B = \{p : a_p \ge \theta \max_q a_q\}, \qquad
              \mathrm{IoU} = \frac{|\operatorname{box}(B) \cap \operatorname{box}(M)|}{|\operatorname{box}(B) \cup \operatorname{box}(M)|}

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization", ICCV 2017, Sec. 4.1 (θ = 15 %, a box around the single largest segment;
    after CAM, Zhou et al. 2016, who used 20 %). ``component="largest"`` takes the largest
    8-connected segment of B, ``"all"`` the box around all of B. Boxes are inclusive pixel
    rectangles; 2-D maps only. A map whose maximum is not positive has no box: IoU 0.
    Returns ``[N]``.
    """
    x, a, m = _maps_and_mask(x, attributions, mask)
    theta = check_fraction(fraction, "fraction")
    comp = check_choice(component, "component", ("largest", "all"))
    if a.dim() != 3:
        raise ValueError(f"bbox_iou needs 2-D maps (x [N, C, H, W] or [N, H, W]), got maps of shape {tuple(a.shape)}")
    n = a.shape[0]
    peak = a.reshape(n, -1).amax(dim=1)
    binary = (a >= theta * peak.reshape(n, 1, 1)) & (peak.reshape(n, 1, 1) > 0)
    if comp == "largest":
        binary = largest_component(binary)
    box_a = _bbox(binary)
    box_m = _bbox(m)
    out = _box_iou(box_a, box_m).to(a.dtype)
    return _nan_empty(out, m.reshape(n, -1))


def largest_component(binary: Tensor) -> Tensor:
    """The largest 8-connected component of each ``[N, H, W]`` bool map (ties: the one holding
    the first pixel in row-major order). Batched label propagation: each foreground pixel starts
    with its own label and takes the maximum label of its 3x3 neighbourhood until nothing changes."""
    n, h, w = binary.shape
    fg = binary.to(torch.float32)
    labels = (torch.arange(1, h * w + 1, device=binary.device, dtype=torch.float32).reshape(1, h, w)
              .expand(n, h, w) * fg).unsqueeze(1)
    fg4 = fg.unsqueeze(1)
    while True:
        grown = F.max_pool2d(labels, 3, stride=1, padding=1) * fg4
        if torch.equal(grown, labels):
            break
        labels = grown
    lab = labels[:, 0].reshape(n, -1).to(torch.long)                  # 0 = background
    counts = torch.zeros(n, h * w + 1, dtype=torch.long, device=binary.device)
    counts.scatter_add_(1, lab, torch.ones_like(lab))
    counts[:, 0] = 0
    # among equally large components prefer the one with the largest label (deterministic)
    best = counts.flip(1).argmax(dim=1)
    best = h * w - best
    keep = (lab == best.unsqueeze(1)) & (lab > 0)
    return keep.reshape(n, h, w)


def _bbox(binary: Tensor) -> Tensor:
    """``[N, 4]`` inclusive boxes (row0, col0, row1, col1); rows of -1 for empty maps."""
    n, h, w = binary.shape
    rows = binary.any(dim=2)
    cols = binary.any(dim=1)
    ar_h = torch.arange(h, device=binary.device)
    ar_w = torch.arange(w, device=binary.device)
    big = h + w + 1
    r0 = torch.where(rows, ar_h, big).amin(dim=1)
    r1 = torch.where(rows, ar_h, -1).amax(dim=1)
    c0 = torch.where(cols, ar_w, big).amin(dim=1)
    c1 = torch.where(cols, ar_w, -1).amax(dim=1)
    empty = ~rows.any(dim=1)
    box = torch.stack([r0, c0, r1, c1], dim=1)
    return torch.where(empty.unsqueeze(1), torch.full_like(box, -1), box)


def _box_iou(b1: Tensor, b2: Tensor) -> Tensor:
    def area(b: Tensor) -> Tensor:
        return ((b[:, 2] - b[:, 0] + 1).clamp_min(0) * (b[:, 3] - b[:, 1] + 1).clamp_min(0)) * (b[:, 0] >= 0)
    ih = (torch.minimum(b1[:, 2], b2[:, 2]) - torch.maximum(b1[:, 0], b2[:, 0]) + 1).clamp_min(0)
    iw = (torch.minimum(b1[:, 3], b2[:, 3]) - torch.maximum(b1[:, 1], b2[:, 1]) + 1).clamp_min(0)
    valid = (b1[:, 0] >= 0) & (b2[:, 0] >= 0)
    inter = ih * iw * valid
    union = area(b1) + area(b2) - inter
    return torch.where(union > 0, inter.to(torch.float64) / union.clamp_min(1), torch.zeros_like(inter, dtype=torch.float64))


def rank_correlation(attributions: Tensor, reference: Tensor, *, abs: bool = False) -> Tensor:
    r"""Spearman rank correlation between two maps per sample (e.g. an explanation and a human
    attention / eye-tracking map, or two methods' maps) → ``[N]``.

    .. math:: \rho = \operatorname{corr}\big(R(m_1), R(m_2)\big)

    with average ranks for ties (seed 002: agreement with human attention; Das et al., "Human
    Attention in Visual Question Answering", 2017, used this rank correlation). Maps with a
    channel dimension (``[N, C, H, W]``) are summed over the channels when the other map has
    none (``[N, H, W]`` or ``[N, 1, H, W]``); ``abs=True`` correlates magnitudes.
    """
    a = _as_map(attributions, "attributions")
    b = _as_map(reference, "reference")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"attributions have N={a.shape[0]} maps but reference has N={b.shape[0]}")
    if a.shape != b.shape:
        if a.dim() == 4 and a.shape[2:] == b.shape[-2:]:
            a = a.sum(dim=1)
        if b.dim() == 4 and b.shape[2:] == a.shape[-2:]:
            b = b.sum(dim=1)
        if a.dim() == 4 and a.shape[1] == 1:
            a = a[:, 0]
        if b.dim() == 4 and b.shape[1] == 1:
            b = b[:, 0]
    if a.shape != b.shape:
        raise ValueError(f"attributions of shape {tuple(attributions.shape)} and reference of shape "
                         f"{tuple(reference.shape)} do not describe the same pixels")
    if not isinstance(abs, bool):
        raise TypeError(f"abs must be True or False, got {type(abs).__name__} {abs!r}")
    if abs:
        a, b = a.abs(), b.abs()
    return spearman(a, b)


def _as_map(t: Any, name: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a tensor [N, ...], got {type(t).__name__}")
    if t.dim() < 2 or t.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch of maps [N, ...], got shape {tuple(t.shape)}")
    t = t.detach()
    if not t.is_floating_point():
        t = t.to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return t

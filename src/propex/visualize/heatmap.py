"""Heatmaps of attributions and a samples × methods grid saved as PNG."""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import torch
from torch import Tensor


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError("propex.visualize needs matplotlib: pip install 'propex[viz]'") from err
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def to_heatmap(attribution: Tensor, reduce: str = "sum", clip_percentile: float = 99.5) -> Tensor:
    """Turn one sample's attribution ``[C, H, W]`` (or ``[H, W]``) into a map in [-1, 1].

    Channels are combined by ``reduce`` (``"sum"``, ``"abs"``: sum of magnitudes, or
    ``"max_abs"``); the map is divided by its ``clip_percentile``-th percentile of
    magnitudes (so a few extreme pixels do not wash out the picture) and clipped.
    """
    a = attribution.detach().to(torch.float32).cpu()
    if a.dim() == 3:
        if reduce == "sum":
            a = a.sum(0)
        elif reduce == "abs":
            a = a.abs().sum(0)
        elif reduce == "max_abs":
            a = a.abs().amax(0)
        else:
            raise ValueError(f"reduce must be 'sum', 'abs' or 'max_abs', got {reduce!r}")
    if a.dim() != 2:
        raise ValueError(f"attribution must be [C, H, W] or [H, W], got shape {tuple(attribution.shape)}")
    if not 0 < clip_percentile <= 100:
        raise ValueError(f"clip_percentile must be in (0, 100], got {clip_percentile}")
    scale = torch.quantile(a.abs().flatten(), clip_percentile / 100)
    if scale <= 0:
        return torch.zeros_like(a)
    return (a / scale).clamp(-1, 1)


def attribution_grid(inputs: Tensor, attributions: Mapping[str, Tensor], path: str | os.PathLike,
                     row_labels: Sequence[str] | None = None, cmap: str = "bwr", dpi: int = 120) -> str:
    """Save a grid: one row per sample; columns: the input, then one heatmap per method.

    Heatmaps are signed (red positive, blue negative, white zero) on a symmetric scale per
    map. ``inputs`` is ``[N, C, H, W]`` (1 or 3 channels); each attribution is shaped like it.
    Returns the path written.
    """
    plt = _pyplot()
    n = inputs.shape[0]
    names = list(attributions)
    for name in names:
        if attributions[name].shape[0] != n:
            raise ValueError(f"attributions[{name!r}] has {attributions[name].shape[0]} samples, inputs have {n}")
    cols = 1 + len(names)
    fig, axes = plt.subplots(n, cols, figsize=(1.5 * cols, 1.5 * n + 0.4), squeeze=False)
    for i in range(n):
        img = inputs[i].detach().to(torch.float32).cpu()
        ax = axes[i][0]
        if img.shape[0] == 1:
            ax.imshow(img[0].numpy(), cmap="gray_r")
        else:
            lo, hi = img.min(), img.max()
            ax.imshow(((img - lo) / (hi - lo + 1e-12)).permute(1, 2, 0).numpy())
        if row_labels is not None:
            ax.set_ylabel(row_labels[i], fontsize=8)
        for j, name in enumerate(names, start=1):
            axes[i][j].imshow(to_heatmap(attributions[name][i]).numpy(), cmap=cmap, vmin=-1, vmax=1)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    for j, title in enumerate(["input", *names]):
        axes[0][j].set_title(title.replace("_", " "), fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return str(path)

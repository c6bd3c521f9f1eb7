"""Walk drawings: the graph with its most relevant walks as coloured paths (matplotlib, ``viz`` extra)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor


def draw_walks(adjacency: Tensor, walks: Mapping[tuple[int, ...], float], *, top: int = 8,
               positions: Mapping[int, tuple[float, float]] | None = None, size: tuple[int, int] = (420, 420),
               title: str | None = None, seed: int = 0) -> Any:
    """Draw the graph (grey) and its ``top`` walks by |relevance|: red for positive, blue for
    negative evidence, line width proportional to |relevance|; walks are drawn as smooth paths
    through their nodes, slightly offset so that walks sharing edges stay visible.

    ``positions``: node -> (x, y); default a seeded spring layout (networkx, ``graph`` extra) or a circle.
    Returns a ``propex.visualize.Picture``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..visualize.picture import Picture

    a = torch.as_tensor(adjacency).detach().cpu()
    n = a.shape[0]
    if a.dim() != 2 or a.shape[1] != n:
        raise ValueError(f"adjacency must be [n, n], got {tuple(a.shape)}")
    pos = dict(positions) if positions is not None else _layout(a, seed)
    xy = np.array([pos[i] for i in range(n)], dtype=float)
    h, w = size
    fig = Figure(figsize=(w / 100, h / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i in range(n):
        for j in range(i + 1, n):
            if a[i, j] != 0 or a[j, i] != 0:
                ax.plot(xy[[i, j], 0], xy[[i, j], 1], color="0.75", linewidth=1.2, zorder=1)
    chosen = sorted(walks.items(), key=lambda kv: -abs(kv[1]))[:top]
    scale = max((abs(r) for _, r in chosen), default=1.0) or 1.0
    span = float(np.ptp(xy, axis=0).max()) or 1.0
    for rank, (walk, rel) in enumerate(chosen):
        pts = xy[list(walk)] + (rank - len(chosen) / 2) * 0.012 * span
        pts = _smooth(pts)
        ax.plot(pts[:, 0], pts[:, 1], color="#d62728" if rel > 0 else "#1f77b4", alpha=0.75,
                linewidth=1.0 + 5.0 * abs(rel) / scale, zorder=2, solid_capstyle="round")
    ax.scatter(xy[:, 0], xy[:, 1], s=140, color="white", edgecolors="0.2", zorder=3)
    for i in range(n):
        ax.annotate(str(i), xy[i], ha="center", va="center", fontsize=7, zorder=4)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    return Picture(rgb, {"walks": [list(w) for w, _ in chosen], "relevance": [r for _, r in chosen]})


def _layout(a: Tensor, seed: int) -> dict[int, tuple[float, float]]:
    try:
        import networkx as nx
    except ImportError:
        n = a.shape[0]
        return {i: (float(np.cos(2 * np.pi * i / n)), float(np.sin(2 * np.pi * i / n))) for i in range(n)}
    graph = nx.from_numpy_array(((a != 0) | (a.T != 0)).int().numpy())
    return {int(k): (float(v[0]), float(v[1])) for k, v in nx.spring_layout(graph, seed=seed).items()}


def _smooth(points: np.ndarray, per_step: int = 12) -> np.ndarray:
    """A path through ``points`` with rounded corners (self-loop steps become small detours)."""
    out = [points[0]]
    for p, q in zip(points[:-1], points[1:]):
        if np.allclose(p, q):
            t = np.linspace(0, 2 * np.pi, per_step)
            out.extend(p + 0.03 * np.stack([np.sin(t), 1 - np.cos(t)], 1))
        else:
            t = np.linspace(0, 1, per_step)[1:, None]
            out.extend(p + t * (q - p))
    return np.asarray(out)

r"""BiLRP: which pairs of features make two inputs similar (Eberle et al. 2020).

For a dot-product similarity model :math:`y(x, x') = \langle \phi(x), \phi(x') \rangle
= \sum_k \phi_k(x)\,\phi_k(x')`, the second-order relevance of the feature pair :math:`(i, j)` is

.. math:: R_{ij} = \sum_k R_i^{(k)}(x)\; R_j^{(k)}(x')

where :math:`R^{(k)}(x)` is a first-order explanation (LRP by default) of the embedding dimension
:math:`\phi_k` on :math:`x`. When each :math:`R^{(k)}` is conservative
(:math:`\sum_i R_i^{(k)}(x) = \phi_k(x)`, LRP with biases excluded) the pair relevances sum to the
similarity: :math:`\sum_{ij} R_{ij} = \sum_k \phi_k(x)\phi_k(x') = y(x, x')`.

Features are pooled before the product (pixels summed over channels and patches, tokens over
the embedding width), so the result is ``[N, G1, G2]`` for G1 and G2 pooled features. The
explanations of all embedding dimensions come from batched backward passes (``chunk`` dimensions
per pass, one vmapped backward each), not one sequential pass per dimension. With
``projection=k`` the embedding is first multiplied by a seeded Gaussian matrix
:math:`P \in \mathbb{R}^{D\times k}/\sqrt{k}` (Johnson–Lindenstrauss: :math:`\langle P^\top\phi,
P^\top\phi'\rangle \approx \langle\phi, \phi'\rangle`), which bounds the cost by k backward rows for
any width D; the pair relevances then sum to the projected similarity, which is reported.

Eberle, Büttner, Kräutli, Müller, Valleriani, Montavon, "Building and Interpreting Deep
Similarity Models", IEEE TPAMI 2020.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

PoolSpec = Any   # None | int | (ph, pw) | integer group mask | callable


@dataclass
class PairRelevance:
    """The result of ``propex.bilrp``.

    Attributes:
        relevance: ``[N, G1, G2]`` relevance of each pair of pooled features of x1 and x2.
        similarity: ``[N]`` the (projected) similarity :math:`\\langle\\phi(x_1), \\phi(x_2)\\rangle`.
        delta: ``[N]`` ``relevance.sum((1, 2)) - similarity`` (0 up to rounding for conservative
            first-order methods).
        first, second: ``[N, K, G]`` the pooled first-order explanations of each embedding dimension.
    """

    relevance: Tensor
    similarity: Tensor
    delta: Tensor
    first: Tensor
    second: Tensor

    def top_pairs(self, k: int = 5, sample: int = 0) -> list[tuple[int, int, float]]:
        """The ``k`` pairs ``(i, j, relevance)`` of one sample with the largest relevance."""
        r = self.relevance[sample]
        vals, idx = r.flatten().topk(min(k, r.numel()))
        return [(int(i) // r.shape[1], int(i) % r.shape[1], float(v)) for v, i in zip(vals, idx)]


class _Projected(nn.Module):
    """``phi(x) @ P``: the embedding seen through a fixed projection (a linear map the engines explain)."""

    def __init__(self, embedder: Any, projection: Tensor):
        super().__init__()
        self.embedder = embedder
        self.register_buffer("projection", projection)

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        return torch.matmul(_embedding(self.embedder(*args, **kwargs)), self.projection)


def _embedding(out: Any) -> Tensor:
    if isinstance(out, Tensor):
        return out
    for key in ("sentence_embedding", "pooler_output", "logits"):
        value = out.get(key) if isinstance(out, dict) else getattr(out, key, None)
        if isinstance(value, Tensor):
            return value
    raise TypeError(f"embedder must return a tensor [N, D] (or a mapping with 'sentence_embedding'), got "
                    f"{type(out).__name__}")


def bilrp(embedder: Any, x1: Tensor, x2: Tensor, *, method: str = "lrp", pool: PoolSpec = None,
          projection: int | None = None, chunk: int = 64, seed: int = 0,
          forward_kwargs1: dict[str, Any] | None = None, forward_kwargs2: dict[str, Any] | None = None,
          **options: Any) -> PairRelevance:
    """Relevance of feature pairs for the similarity ``<embedder(x1), embedder(x2)>`` (BiLRP).

    Args:
        embedder: a module or callable ``x -> [N, D]`` (the embedding :math:`\\phi`).
        x1, x2: the paired inputs, ``[N, ...]`` each (same N; shapes may differ, e.g. two
            sentences of different lengths).
        method: the first-order method explaining each embedding dimension (``"lrp"``; any
            propex method name works, e.g. ``"input_x_gradient"``). For ``"lrp"``,
            ``ignore_bias=True`` is the default so that the pair relevances sum to the similarity.
        pool: how features are pooled: ``None`` — images ``[N, C, H, W]`` summed over channels
            (one feature per pixel), token embeddings ``[N, T, D]`` over D (one per token), other
            shapes flattened; an int or ``(ph, pw)`` — images summed over channels and patches of
            that size; an integer tensor of group ids shaped like one sample (pixels or elements
            with the same id pooled); or a callable ``[N, K, ...] -> [N, K, G]``.
        projection: explain ``k`` random directions of the embedding instead of its D dimensions.
        chunk: embedding dimensions explained per backward pass (memory vs. number of passes).
        seed: seed of the projection.
        forward_kwargs1, forward_kwargs2: per-input extra forward arguments (e.g. attention masks).
        **options: the method's options (``composite=``, ``layer=`` for token embeddings, ...).
    """
    from .api import explain

    for name, x in (("x1", x1), ("x2", x2)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a tensor [N, ...], got {type(x).__name__}")
    if x1.shape[0] != x2.shape[0]:
        raise ValueError(f"x1 and x2 must hold the same number of pairs, got {x1.shape[0]} and {x2.shape[0]}")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    if projection is not None and (not isinstance(projection, int) or projection < 1):
        raise ValueError(f"projection must be None or a positive int (number of directions), got {projection!r}")
    if method == "lrp":
        options.setdefault("ignore_bias", True)

    with torch.no_grad():
        width = _embedding(embedder(x1[:1], **_first(forward_kwargs1, x1.shape[0]))).shape
    if len(width) != 2:
        raise ValueError(f"embedder must return [N, D] embeddings, got shape {tuple(width)}")
    model: Any = embedder
    dims = width[1]
    if projection is not None:
        gen = torch.Generator().manual_seed(seed)
        p = torch.randn(dims, projection, generator=gen, dtype=torch.float64) / projection ** 0.5
        ref = next((t for t in _params(embedder)), x1 if x1.is_floating_point() else None)
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
        device = ref.device if ref is not None else x1.device
        model = _Projected(embedder, p.to(dtype=dtype, device=device))
        dims = projection

    sides = []
    for x, kwargs in ((x1, forward_kwargs1), (x2, forward_kwargs2)):
        parts, emb = [], []
        for start in range(0, dims, chunk):
            ks = torch.arange(start, min(start + chunk, dims), device=x.device)
            target = ks.expand(x.shape[0], -1)
            exp = explain(model, x, method, target=target, forward_kwargs=kwargs, **options)
            a = exp.attributions
            if isinstance(a, tuple):
                raise TypeError("bilrp explains a single input tensor per side; got tuple attributions")
            parts.append(_pool(a, pool))
            emb.append(_embedding(exp.outputs))
        sides.append((torch.cat(parts, 1), emb[0]))
    (r1, phi1), (r2, phi2) = sides
    relevance = torch.einsum("nkp,nkq->npq", r1, r2)
    similarity = (phi1 * phi2).sum(1).to(relevance.dtype)
    return PairRelevance(relevance, similarity, relevance.sum((1, 2)) - similarity, r1, r2)


def _first(kwargs: dict[str, Any] | None, n: int) -> dict[str, Any]:
    if not kwargs:
        return {}
    return {k: v[:1] if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == n else v for k, v in kwargs.items()}


def _params(m: Any):
    return m.parameters() if isinstance(m, nn.Module) else iter(())


def _pool(a: Tensor, pool: PoolSpec) -> Tensor:
    """``[N, K, ...]`` first-order explanations -> ``[N, K, G]`` pooled features."""
    n, k = a.shape[:2]
    feat = a.shape[2:]
    if callable(pool) and not isinstance(pool, Tensor):
        out = pool(a)
        if not isinstance(out, Tensor) or out.dim() != 3 or out.shape[:2] != (n, k):
            raise ValueError(f"pool callable must return [N, K, G] = [{n}, {k}, G], got "
                             f"{getattr(out, 'shape', type(out).__name__)}")
        return out
    if isinstance(pool, Tensor):
        if pool.dtype in (torch.float16, torch.float32, torch.float64, torch.bfloat16, torch.bool):
            raise TypeError(f"pool as a tensor must hold integer group ids, got dtype {pool.dtype}")
        ids = pool.to(a.device)
        if len(feat) == 3 and ids.shape == feat[1:]:
            a, feat = a.sum(2), feat[1:]          # a pixel mask: channels pooled first
        if ids.shape != feat:
            raise ValueError(f"pool mask must be shaped like one sample {tuple(feat)} (or its [H, W]), "
                             f"got {tuple(ids.shape)}")
        uniq, group = torch.unique(ids.flatten(), return_inverse=True)
        out = torch.zeros(n, k, uniq.numel(), dtype=a.dtype, device=a.device)
        return out.index_add_(2, group, a.reshape(n, k, -1))
    if pool is None:
        if len(feat) == 3:                       # [C, H, W]: one feature per pixel
            return a.sum(2).reshape(n, k, -1)
        if len(feat) == 2:                       # [T, D]: one feature per token
            return a.sum(3)
        return a.reshape(n, k, -1)
    if len(feat) != 3:
        raise ValueError(f"pool={pool!r} (patches) needs image attributions [C, H, W], got {tuple(feat)}")
    ph, pw = (pool, pool) if isinstance(pool, int) else tuple(pool)
    h, w = feat[1:]
    if not (isinstance(ph, int) and isinstance(pw, int) and ph > 0 and pw > 0 and h % ph == 0 and w % pw == 0):
        raise ValueError(f"pool patches {(ph, pw)} must be positive ints dividing the image size {(h, w)}")
    a = a.sum(2).reshape(n, k, h // ph, ph, w // pw, pw)
    return a.sum((3, 5)).reshape(n, k, -1)



def draw_pairs(image1: Any, image2: Any, result: PairRelevance, *, sample: int = 0, top: int = 20,
               grid1: tuple[int, int] | None = None, grid2: tuple[int, int] | None = None,
               size: tuple[int, int] = (300, 600)) -> Any:
    """The two images side by side with their ``top`` feature pairs by |relevance| joined by lines
    (red: the pair makes the inputs more similar, blue: less; width ∝ |relevance|).

    ``grid1``/``grid2``: the ``(rows, cols)`` layout of each image's pooled features (default: square,
    e.g. ``pool=8`` on 224² gives 28×28). Images are ``[C, H, W]`` tensors or anything
    ``propex.visualize`` accepts. Returns a ``propex.visualize.Picture``.
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .visualize.compose import to_rgb
    from .visualize.picture import Picture

    rel = result.relevance[sample].detach().cpu().double()
    g1, g2 = rel.shape
    grids = []
    for g, grid in ((g1, grid1), (g2, grid2)):
        if grid is None:
            side = int(round(g ** 0.5))
            if side * side != g:
                raise ValueError(f"cannot infer a square layout for {g} pooled features: pass grid1=/grid2=")
            grid = (side, side)
        if grid[0] * grid[1] != g:
            raise ValueError(f"grid {grid} does not hold {g} pooled features")
        grids.append(grid)
    a, b = (_uint8(to_rgb(im, name)) for im, name in ((image1, "image1"), (image2, "image2")))
    h = max(a.shape[0], b.shape[0])
    canvas_img = np.full((h, a.shape[1] + b.shape[1], 3), 255, dtype=np.uint8)
    canvas_img[:a.shape[0], :a.shape[1]] = a
    canvas_img[:b.shape[0], a.shape[1]:] = b
    fig = Figure(figsize=(size[1] / 100, size[0] / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(canvas_img)
    order = rel.flatten().abs().argsort(descending=True)[:top]
    scale = float(rel.abs().max()) or 1.0

    def centre(i: int, grid: tuple[int, int], img: np.ndarray, dx: int) -> tuple[float, float]:
        r, c = divmod(i, grid[1])
        return dx + (c + 0.5) * img.shape[1] / grid[1], (r + 0.5) * img.shape[0] / grid[0]

    for flat in order.tolist():
        i, j = divmod(flat, g2)
        v = float(rel[i, j])
        (x1, y1), (x2, y2) = centre(i, grids[0], a, 0), centre(j, grids[1], b, a.shape[1])
        ax.plot([x1, x2], [y1, y2], color="#d62728" if v > 0 else "#1f77b4", alpha=0.7,
                linewidth=0.5 + 3.0 * abs(v) / scale)
    ax.set_axis_off()
    fig.tight_layout(pad=0.2)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    return Picture(rgb, {"pairs": [divmod(f, g2) for f in order.tolist()]})


def _uint8(rgb: Any) -> Any:
    import numpy as np
    rgb = np.broadcast_to(rgb, rgb.shape[:2] + (3,)) if rgb.shape[2] == 1 else rgb
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)

"""Vision transformers: token attributions ``[N, T]`` as patch maps ``[N, 1, h, w]``."""
from __future__ import annotations

import math

from torch import Tensor


def patch_map(attributions: Tensor, grid: tuple[int, int] | None = None, prefix_tokens: int = 1) -> Tensor:
    """Reshape token scores ``[N, T]`` of a ViT to a patch map ``[N, 1, h, w]``.

    Args:
        attributions: ``[N, T]`` with ``T = prefix_tokens + h·w`` (e.g. an attention method's output).
        grid: ``(h, w)`` patches per column / row; default the square root of the patch count
            (``image_size // patch_size`` for Hugging Face's ViT and torchvision's vit_b_16).
        prefix_tokens: tokens before the patches ([CLS] = 1; DeiT's distillation token makes 2).

    Upsample the map to the image with ``propex.visualize.overlay`` or
    ``torch.nn.functional.interpolate``.
    """
    if not isinstance(attributions, Tensor) or attributions.dim() != 2:
        raise ValueError(f"attributions must be a [N, T] tensor of token scores, got "
                         f"{getattr(attributions, 'shape', type(attributions).__name__)}")
    if isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int) or prefix_tokens < 0:
        raise ValueError(f"prefix_tokens must be an int >= 0, got {prefix_tokens!r}")
    n, t = attributions.shape
    patches = t - prefix_tokens
    if grid is None:
        side = math.isqrt(max(patches, 0))
        if side * side != patches or patches == 0:
            raise ValueError(f"{patches} patch tokens (T={t} minus prefix_tokens={prefix_tokens}) is not a square "
                             "number; pass grid=(h, w)")
        grid = (side, side)
    h, w = grid
    if h * w != patches:
        raise ValueError(f"grid={grid} has {h * w} patches but the attributions have {patches} patch tokens "
                         f"(T={t} minus prefix_tokens={prefix_tokens})")
    return attributions[:, prefix_tokens:].reshape(n, 1, h, w)

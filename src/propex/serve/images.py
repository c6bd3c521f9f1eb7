"""Images in and out of the web app: upload validation (Pillow) and PNG rendering.

Heatmaps are drawn by :func:`propex.visualize.heatmap` (signed red/blue colour map centred at
zero, outliers clipped at the 99.5th percentile) when it is available; otherwise by a small
built-in renderer with the same convention.
"""
from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from torch import Tensor

# pictures smaller than this (pixels on the shorter side) are enlarged by an integer factor
MIN_SIDE = 160
# larger uploads are refused before decoding (decompression bombs)
MAX_PIXELS = 50_000_000


class UploadError(ValueError):
    """The uploaded file is not a usable image; the message is shown to the user."""


def _pil():
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("propex.serve needs Pillow: pip install 'propex[serve,viz]'") from err
    return Image


def decode_upload(data: bytes, filename: str = "upload") -> Any:
    """The uploaded bytes as an RGB ``PIL.Image``, or :class:`UploadError` with a clear message."""
    Image = _pil()
    if not data:
        raise UploadError(f"{filename!r} is empty: choose an image file (PNG, JPEG, BMP, GIF, WebP, TIFF)")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            if width * height > MAX_PIXELS:
                raise UploadError(f"{filename!r} is {width}×{height} pixels; the limit is {MAX_PIXELS:,} pixels")
            probe.verify()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("RGB")
    except UploadError:
        raise
    except Exception as err:   # Pillow raises many types for broken or foreign files
        kind = type(err).__name__
        raise UploadError(f"{filename!r} is not an image Pillow can read ({kind}); "
                          "upload a PNG, JPEG, BMP, GIF, WebP or TIFF file") from None


def _png(rgb: np.ndarray) -> bytes:
    Image = _pil()
    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB")
    factor = max(1, -(-MIN_SIDE // max(1, min(img.size))))
    if factor > 1:
        img = img.resize((img.size[0] * factor, img.size[1] * factor), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def tensor_png(x: Tensor) -> bytes:
    """A model input ``[C, H, W]`` (1 or 3 channels) as PNG, min-max scaled to 0..255."""
    a = x.detach().float().cpu()
    if a.dim() == 2:
        a = a.unsqueeze(0)
    if a.dim() != 3 or a.shape[0] not in (1, 3):
        raise ValueError(f"cannot draw an input of shape {tuple(x.shape)} as an image; expected [1|3, H, W]")
    lo, hi = a.min(), a.max()
    a = (a - lo) / (hi - lo) if hi > lo else torch.zeros_like(a)
    rgb = (a.expand(3, -1, -1).permute(1, 2, 0).numpy() * 255).round()
    return _png(rgb)


def heatmap_png(attribution: Tensor) -> bytes:
    """One sample's attribution ``[C, H, W]`` or ``[H, W]`` as a signed heatmap PNG."""
    a = attribution.detach().float().cpu()
    try:
        from ..visualize import heatmap
    except ImportError:
        heatmap = None
    if heatmap is not None:
        picture = heatmap(a, reduce="sum", mode="signed")
        return _png(np.asarray(picture.array))
    return _png(_signed_colours(a))


def _signed_colours(a: Tensor) -> np.ndarray:
    """Fallback renderer: sum over channels, scale by the 99.5th percentile of |a|, clip to
    [-1, 1], and map -1 → blue, 0 → white, +1 → red (the LRP convention)."""
    if a.dim() == 3:
        a = a.sum(0)
    scale = torch.quantile(a.abs().flatten(), 0.995) if a.numel() else torch.tensor(0.0)
    m = (a / scale).clamp(-1, 1) if scale > 0 else torch.zeros_like(a)
    pos, neg = m.clamp(min=0), (-m).clamp(min=0)
    r = 1 - neg
    g = 1 - pos - neg
    b = 1 - pos
    return (torch.stack([r, g, b], -1).numpy() * 255).round()

"""Images from tensors, heatmaps laid over images, and labelled grids (Pillow; no pyplot)."""
from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from .colors import colorize
from .heatmap import as_tensor, normalized
from .picture import Picture, require_pil

MIN_CELL = 96          # small images (e.g. 16×16 digits) are enlarged to at least this many pixels


def to_rgb(image: Any, name: str = "image") -> np.ndarray:
    """An image as RGB floats ``[H, W, 3]`` in [0, 1].

    Accepts a ``Picture``, a ``PIL.Image``, a tensor ``[C, H, W]`` / ``[H, W]`` (C = 1 or 3) or a
    numpy array ``[H, W, C]`` / ``[C, H, W]`` / ``[H, W]``. uint8 values are divided by 255; float
    values already in [0, 1] are kept, others are min-max scaled to [0, 1] (e.g. normalised inputs).
    """
    if isinstance(image, Picture):
        return image.array.astype(np.float64) / 255.0
    if type(image).__module__.startswith("PIL.") and hasattr(image, "convert"):
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    if isinstance(image, Tensor):
        t = image.detach().cpu()
        if t.dim() == 3:
            t = t.permute(1, 2, 0)                                   # CHW → HWC
        arr = t.to(torch.float64).numpy() if t.dtype != torch.uint8 else t.numpy()
    elif isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4) and arr.shape[0] in (1, 3, 4):
            arr = np.moveaxis(arr, 0, -1)
    else:
        raise TypeError(f"{name} must be a Picture, PIL image, tensor or numpy array, got {type(image).__name__}")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name} must be an image [C, H, W] / [H, W, C] with 1 or 3 channels (or [H, W]), "
                         f"got shape {tuple(np.shape(image))}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        out = arr.astype(np.float64) / 255.0
    else:
        out = arr.astype(np.float64)
        if not np.isfinite(out).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        lo, hi = out.min(), out.max()
        if lo < 0 or hi > 1:
            out = (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return out


def to_picture(image: Any, name: str = "image") -> Picture:
    """``to_rgb`` as a ``Picture`` (a ``Picture`` is returned as it is)."""
    if isinstance(image, Picture):
        return image
    return Picture(np.round(to_rgb(image, name) * 255.0).astype(np.uint8))


def enlarged(picture: Picture, min_size: int = MIN_CELL) -> Picture:
    """``picture`` enlarged by the smallest integer factor that makes its longer side >= ``min_size``."""
    w, h = picture.size
    return picture.scaled(max(1, math.ceil(min_size / max(w, h))))


def overlay(image: Any, attributions: Any, alpha: float = 0.5, *, weighted: bool = True,
            **heatmap_options: Any) -> Picture:
    """The heatmap of ``attributions`` laid over ``image``.

    Low-resolution maps (e.g. a 7×7 CAM) are upsampled to the image size (``interpolation=``,
    bilinear by default) before colouring. Each pixel is ``(1 − a)·image + a·heat`` with
    ``a = alpha · |v|`` (``weighted=True``: pixels without relevance show the image unchanged) or
    ``a = alpha`` everywhere (``weighted=False``); ``v`` is the drawn value in [-1, 1].

    Args:
        image: the input (see ``to_rgb``).
        attributions: ``[H', W']`` or ``[C, H', W']`` (any resolution).
        alpha: opacity of the heatmap in [0, 1].
        heatmap_options: ``reduce``, ``mode``, ``clip_percentile``, ``cmap``, ``vmax``,
            ``interpolation`` as for ``heatmap``.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    for key in ("size", "scale"):
        if key in heatmap_options:
            raise TypeError(f"overlay: {key}= is not an option here (the map is drawn at the image's size, "
                            f"on its own scale)")
    cmap = heatmap_options.pop("cmap", None)
    img = to_rgb(image)
    a = as_tensor(attributions, "attributions")
    if a.dim() == 4 and a.shape[0] == 1:
        a = a[0]
    if a.dim() not in (2, 3):
        raise ValueError(f"attributions must be one map [H, W] or [C, H, W], got shape {tuple(a.shape)}")
    mode = heatmap_options.get("mode", "signed")
    values, scales, _ = normalized(a, size=img.shape[:2], **heatmap_options)
    v = values[0].numpy().astype(np.float64)
    heat = colorize(v, mode, cmap).astype(np.float64) / 255.0
    weight = alpha * (np.abs(v) if weighted else np.ones_like(v))
    out = (1.0 - weight[..., None]) * img + weight[..., None] * heat
    return Picture(np.round(out * 255.0).astype(np.uint8), {"vmax": scales[0], "mode": mode, "alpha": alpha})


# --------------------------------------------------------------------------- grid
def font(size: int = 12) -> Any:
    """DejaVu Sans (shipped with matplotlib: wide Unicode coverage) at ``size`` pixels, else
    Pillow's built-in font (the bitmap default on old Pillow)."""
    from PIL import ImageFont
    try:
        import matplotlib
        return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"), size)
    except (ImportError, OSError):
        pass
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1
        return ImageFont.load_default()


def _text_width(draw: Any, text: str, fnt: Any) -> int:
    box = draw.textbbox((0, 0), text, font=fnt)
    return int(box[2] - box[0])


def _fit(draw: Any, text: str, fnt: Any, width: int) -> str:
    """``text`` shortened with an ellipsis to fit ``width`` pixels."""
    if _text_width(draw, text, fnt) <= width:
        return text
    while len(text) > 1 and _text_width(draw, text + "…", fnt) > width:
        text = text[:-1]
    return text + "…"


def grid(rows: Sequence[Sequence[Any]], row_labels: Sequence[str] | None = None,
         col_labels: Sequence[str] | None = None, title: str | None = None, *,
         cell_size: Any = None, pad: int = 4, font_size: int = 12) -> Picture:
    """Pictures in a labelled grid (e.g. samples × methods).

    Args:
        rows: a list of rows, each a list of cells: ``Picture`` (e.g. from ``heatmap``), image
            tensors/arrays/PIL images (see ``to_rgb``) or None (an empty cell). Rows may differ
            in length.
        row_labels: one label per row (left), or None.
        col_labels: one label per column (top), or None.
        title: a line of text above the grid.
        cell_size: ``(height, width)`` (or an int) of every cell; default: the largest cell,
            enlarged by an integer factor to at least 96 pixels (nearest neighbour, so small
            maps keep sharp pixels).
    """
    Image = require_pil()
    from PIL import ImageDraw
    from .heatmap import check_size

    if not isinstance(rows, (list, tuple)) or not all(isinstance(r, (list, tuple)) for r in rows) or not rows:
        raise TypeError("rows must be a non-empty list of lists of pictures/images")
    n_cols = max(len(r) for r in rows)
    if n_cols == 0:
        raise ValueError("rows has no cells")
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"row_labels has {len(row_labels)} labels for {len(rows)} rows")
    if col_labels is not None and len(col_labels) != n_cols:
        raise ValueError(f"col_labels has {len(col_labels)} labels for {n_cols} columns")
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad must be an int >= 0, got {pad!r}")
    cells = [[None if c is None else to_picture(c, f"rows[{i}][{j}]") for j, c in enumerate(r)]
             for i, r in enumerate(rows)]
    size = check_size(cell_size)
    if size is None:
        present = [c for r in cells for c in r if c is not None]
        if not present:
            raise ValueError("rows has only empty (None) cells")
        ch = max(c.size[1] for c in present)
        cw = max(c.size[0] for c in present)
        k = max(1, math.ceil(MIN_CELL / max(ch, cw)))
        size = (ch * k, cw * k)
    ch, cw = size

    fnt = font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = font_size + 4
    left = 0
    if row_labels is not None:
        left = min(max(_text_width(probe, str(t), fnt) for t in row_labels), 3 * cw) + 2 * pad
    top = (line + pad if col_labels is not None else 0) + (line + 2 * pad if title else 0)
    width = left + n_cols * (cw + pad) + pad
    height = top + len(rows) * (ch + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, pad), _fit(draw, str(title), fnt, width - 2 * pad), fill=(0, 0, 0), font=fnt)
    y0 = top
    if col_labels is not None:
        for j, label in enumerate(col_labels):
            text = _fit(draw, str(label), fnt, cw)
            x = left + pad + j * (cw + pad) + (cw - _text_width(draw, text, fnt)) // 2
            draw.text((x, y0 - line - pad // 2), text, fill=(0, 0, 0), font=fnt)
    for i, row in enumerate(cells):
        y = y0 + pad + i * (ch + pad)
        if row_labels is not None:
            text = _fit(draw, str(row_labels[i]), fnt, left - 2 * pad)
            draw.text((pad, y + (ch - font_size) // 2), text, fill=(0, 0, 0), font=fnt)
        for j, cell in enumerate(row):
            if cell is None:
                continue
            img = cell.to_pil()
            if img.size != (cw, ch):
                up = cw >= img.size[0] and ch >= img.size[1]
                img = img.resize((cw, ch), Image.Resampling.NEAREST if up else Image.Resampling.LANCZOS)
            x = left + pad + j * (cw + pad)
            canvas.paste(img, (x, y))
            draw.rectangle((x - 1, y - 1, x + cw, y + ch), outline=(200, 200, 200))
    return Picture(np.asarray(canvas, dtype=np.uint8).copy(), {"rows": len(rows), "cols": n_cols})

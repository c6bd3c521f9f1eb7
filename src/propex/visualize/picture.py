"""``Picture``: an RGB image that saves as PNG, embeds as a data URI and shows in notebooks."""
from __future__ import annotations

import base64
import io
import os
from typing import Any

import numpy as np


def require_pil() -> Any:
    """The ``PIL.Image`` module, or an ImportError naming the extra."""
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError("propex.visualize needs Pillow: pip install 'propex[viz]'") from err
    return Image


class Picture:
    """An RGB image ``[H, W, 3]`` (uint8) made by ``propex.visualize``.

    Attributes:
        array: the pixels, ``np.uint8`` ``[H, W, 3]``.
        info: what the picture shows, e.g. for a heatmap ``{"vmax": 0.8, "mode": "signed", ...}``
            (``vmax``: the attribution value drawn at full colour).
    """

    def __init__(self, array: np.ndarray, info: dict[str, Any] | None = None):
        array = np.asarray(array)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"Picture needs a uint8 array [H, W, 3], got dtype {array.dtype} shape {array.shape}")
        self.array = np.ascontiguousarray(array)
        self.info = dict(info or {})

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels (Pillow's order)."""
        return int(self.array.shape[1]), int(self.array.shape[0])

    @property
    def vmax(self) -> float | None:
        """The attribution value drawn at full colour (heatmaps), else None."""
        return self.info.get("vmax")

    def to_pil(self) -> Any:
        """The picture as a ``PIL.Image.Image`` (RGB)."""
        return require_pil().fromarray(self.array, "RGB")

    def to_png(self) -> bytes:
        """The picture encoded as PNG."""
        buf = io.BytesIO()
        self.to_pil().save(buf, format="PNG", optimize=False)
        return buf.getvalue()

    def data_uri(self) -> str:
        """``"data:image/png;base64,..."`` for embedding in HTML."""
        return "data:image/png;base64," + base64.b64encode(self.to_png()).decode("ascii")

    def save(self, path: str | os.PathLike) -> str:
        """Write the picture as PNG to ``path`` (folders are created); returns the path."""
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(self.to_png())
        return path

    def scaled(self, factor: int) -> "Picture":
        """The picture enlarged by an integer ``factor`` (nearest neighbour: pixels stay sharp)."""
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValueError(f"factor must be an int >= 1, got {factor!r}")
        if factor == 1:
            return self
        return Picture(np.repeat(np.repeat(self.array, factor, axis=0), factor, axis=1), self.info)

    def _repr_png_(self) -> bytes:
        return self.to_png()

    def __repr__(self) -> str:
        w, h = self.size
        extra = "".join(f", {k}={v:.4g}" if isinstance(v, float) else f", {k}={v!r}" for k, v in self.info.items()
                        if k in ("mode", "vmax", "reduce"))
        return f"Picture({w}x{h}{extra})"

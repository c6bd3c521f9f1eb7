"""Colour maps for attributions: the LRP convention (red positive, blue negative, white zero).

The built-in maps are exact linear ramps computed in numpy (no matplotlib needed):

* signed ``v ∈ [-1, 1]``: ``v ≥ 0 → (1, 1 − v, 1 − v)`` (white → red), ``v < 0 → (1 + v, 1 + v, 1)``
  (white → blue) — the same colours as matplotlib's ``"bwr"``;
* positive / absolute ``v ∈ [0, 1]``: white → red.

Any matplotlib colormap can be used instead (``cmap="seismic"`` or a ``Colormap`` object); it is
looked up in ``matplotlib.colormaps`` without touching pyplot or rcParams.
"""
from __future__ import annotations

from typing import Any

import numpy as np

MODES = ("signed", "positive", "absolute")


def resolve_cmap(cmap: Any) -> Any:
    """None (built-in ramps), or a callable mapping ``t ∈ [0, 1]`` to RGBA (a matplotlib colormap)."""
    if cmap is None or cmap == "propex":
        return None
    if isinstance(cmap, str):
        try:
            import matplotlib
        except ImportError as err:  # pragma: no cover - exercised only without the extra
            raise ImportError(f"cmap={cmap!r} needs matplotlib: pip install 'propex[viz]'") from err
        try:
            return matplotlib.colormaps[cmap]
        except KeyError:
            import difflib
            close = difflib.get_close_matches(cmap, list(matplotlib.colormaps), n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ValueError(f"cmap: {cmap!r} is not a matplotlib colormap.{hint}") from None
    if callable(cmap):
        return cmap
    raise TypeError(f"cmap must be None, a matplotlib colormap name or a Colormap, got {type(cmap).__name__}")


def colorize(values: np.ndarray, mode: str, cmap: Any = None) -> np.ndarray:
    """RGB uint8 ``[..., 3]`` for normalised values (``[-1, 1]`` for ``"signed"``, else ``[0, 1]``)."""
    v = np.asarray(values, dtype=np.float64)
    if mode == "signed":
        v = np.clip(v, -1.0, 1.0)
        t = (v + 1.0) / 2.0
    else:
        v = np.clip(v, 0.0, 1.0)
        t = v
    fn = resolve_cmap(cmap)
    if fn is not None:
        rgb = np.asarray(fn(t))[..., :3]
    elif mode == "signed":
        pos, neg = np.clip(v, 0, None), np.clip(-v, 0, None)
        rgb = np.stack([1.0 - neg, 1.0 - pos - neg, 1.0 - pos], axis=-1)
    else:
        rgb = np.stack([np.ones_like(v), 1.0 - v, 1.0 - v], axis=-1)
    return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def colorbar(mode: str = "signed", cmap: Any = None, width: int = 256, height: int = 12) -> np.ndarray:
    """A horizontal colour bar ``[height, width, 3]``: left = −1 (signed) or 0, right = +1."""
    lo = -1.0 if mode == "signed" else 0.0
    ramp = np.linspace(lo, 1.0, width)
    return np.repeat(colorize(ramp, mode, cmap)[None], height, axis=0)

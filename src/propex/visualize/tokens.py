"""Per-token colouring of text attributions: standalone HTML, an HTML fragment, ANSI terminal text.

Sub-word markers are shown the way the text reads: WordPiece continuations (``"##ing"``) join
the previous token; byte-level BPE (GPT-2/RoBERTa ``"Ġ"``) and SentencePiece (``"▁"``) markers
become a space before the token (and ``"Ċ"`` a line break), unmarked pieces then join the
previous token. Every token keeps its own colour; ``merge=True`` instead colours whole words by
the sum of their pieces' scores. Tokens are HTML-escaped (``<s>`` shows as ``<s>``).
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .colors import MODES, colorize
from .heatmap import as_tensor, percentile_scale

_SPACE_MARKERS = ("Ġ", "▁")
_NEWLINE_MARKER = "Ċ"


@dataclass
class _Piece:
    text: str          # what is shown
    raw: str           # the token as given
    space: bool        # a space before it
    newline: bool      # a line break before it
    score: float


def _pieces(tokens: Sequence[str], scores: np.ndarray) -> list[_Piece]:
    marked = any(t.startswith(_SPACE_MARKERS) for t in tokens)
    out = []
    for i, (tok, s) in enumerate(zip(tokens, scores)):
        text, space, newline = tok, i > 0, False
        if tok.startswith("##") and len(tok) > 2:
            text, space = tok[2:], False
        elif marked:
            if tok.startswith(_SPACE_MARKERS):
                text, space = tok[1:], i > 0
            elif tok.startswith(_NEWLINE_MARKER):
                text, space, newline = tok.lstrip(_NEWLINE_MARKER), False, True
            else:
                space = False
        out.append(_Piece(text, tok, space, newline, float(s)))
    return out


def _merged(pieces: list[_Piece]) -> list[_Piece]:
    words: list[_Piece] = []
    for p in pieces:
        if words and not p.space and not p.newline:
            w = words[-1]
            words[-1] = _Piece(w.text + p.text, w.raw + " " + p.raw, w.space, w.newline, w.score + p.score)
        else:
            words.append(p)
    return words


def _ink(rgb: np.ndarray) -> str:
    """Black or white text, whichever reads better on ``rgb``."""
    luminance = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255.0
    return "#000" if luminance > 0.5 else "#fff"


class TextPicture:
    """Tokens coloured by their scores. ``.html`` (a standalone page), ``.fragment`` (a ``<div>``
    for embedding, inline styles only), ``.terminal()`` (ANSI colours), ``.save(path)`` (HTML).

    Attributes:
        tokens: the tokens as given; scores: ``np.ndarray [T]``; vmax: the score drawn at full colour.
    """

    def __init__(self, pieces: list[_Piece], colors: np.ndarray, tokens: list[str], scores: np.ndarray,
                 vmax: float, mode: str, title: str | None):
        self._pieces, self._colors = pieces, colors
        self.tokens, self.scores, self.vmax, self.mode, self.title = tokens, scores, vmax, mode, title

    @property
    def fragment(self) -> str:
        spans = []
        for p, c in zip(self._pieces, self._colors):
            if p.newline:
                spans.append("<br>")
            elif p.space:
                spans.append(" ")
            tip = html.escape(f"{p.raw}: {p.score:.4g}", quote=True)
            spans.append(f'<span class="px-tok" title="{tip}" data-score="{p.score:.6g}" style="background-color:'
                         f'rgb({c[0]},{c[1]},{c[2]});color:{_ink(c)};padding:1px 2px;border-radius:3px">'
                         f"{html.escape(p.text)}</span>")
        return ('<div class="px-text" style="font-family:sans-serif;line-height:1.9;white-space:normal">'
                + "".join(spans) + "</div>")

    @property
    def html(self) -> str:
        title = html.escape(self.title or "propex: token attributions")
        scale = {"signed": "red = positive, blue = negative, white = 0",
                 "positive": "red = positive (negative scores are white)",
                 "absolute": "red = large magnitude"}[self.mode]
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{title}</title></head><body style=\"font-family:sans-serif;margin:2em\">"
                f"<h1 style=\"font-size:1.2em\">{title}</h1>{self.fragment}"
                f"<p style=\"color:#555;font-size:0.9em\">{scale}; full colour at |score| = {self.vmax:.4g}</p>"
                "</body></html>\n")

    def terminal(self, color: bool = True) -> str:
        """The text with 24-bit ANSI background colours (``color=False``: plain text with the
        scores in brackets, for terminals without colour)."""
        parts = []
        for p, c in zip(self._pieces, self._colors):
            sep = "\n" if p.newline else (" " if p.space else "")
            if color:
                fg = "38;2;0;0;0" if _ink(c) == "#000" else "38;2;255;255;255"
                parts.append(f"{sep}\x1b[48;2;{c[0]};{c[1]};{c[2]}m\x1b[{fg}m{p.text}\x1b[0m")
            else:
                parts.append(f"{sep}{p.text}[{p.score:+.3g}]")
        return "".join(parts)

    def save(self, path: str | os.PathLike) -> str:
        """Write ``.html`` to ``path`` (UTF-8); returns the path."""
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.html)
        return path

    def _repr_html_(self) -> str:
        return self.fragment

    def __str__(self) -> str:
        return self.terminal(color=False)

    def __repr__(self) -> str:
        return f"TextPicture({len(self.tokens)} tokens, mode={self.mode!r}, vmax={self.vmax:.4g})"


def text(tokens: Sequence[str], scores: Any, *, mode: str = "signed", clip_percentile: float = 100.0,
         vmax: float | None = None, merge: bool = False, cmap: Any = None, title: str | None = None) -> TextPicture:
    """Tokens coloured by their attribution scores (red positive, blue negative, white zero).

    Args:
        tokens: the tokens (e.g. ``tokenizer.convert_ids_to_tokens(ids)``).
        scores: ``[T]`` one score per token, or ``[T, D]`` (e.g. per embedding dimension; summed).
        mode: ``"signed"``, ``"positive"`` or ``"absolute"`` (as for ``heatmap``).
        clip_percentile: scores above this percentile of magnitudes get full colour (default 100:
            the largest magnitude).
        vmax: fix the score drawn at full colour (e.g. one scale for several texts).
        merge: colour whole words by the sum of their sub-word scores.
        title: the page title of ``.html``.
    """
    if isinstance(tokens, str) or not isinstance(tokens, Sequence) or not all(isinstance(t, str) for t in tokens):
        raise TypeError("tokens must be a list of strings")
    s = as_tensor(scores, "scores")
    if s.dim() == 2:
        s = s.sum(-1)
    if s.dim() != 1 or s.shape[0] != len(tokens):
        raise ValueError(f"scores must be [T] (or [T, D]) with T = {len(tokens)} tokens, got shape {tuple(s.shape)}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}; got {mode!r}")
    if isinstance(clip_percentile, bool) or not isinstance(clip_percentile, (int, float)) \
            or not 0 < clip_percentile <= 100:
        raise ValueError(f"clip_percentile must be a number in (0, 100], got {clip_percentile!r}")
    if vmax is not None and (isinstance(vmax, bool) or not isinstance(vmax, (int, float)) or not vmax > 0):
        raise ValueError(f"vmax must be a positive number or None, got {vmax!r}")
    values = s.numpy().astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError("scores contain NaN or infinite values")
    pieces = _pieces(list(tokens), values)
    if merge:
        pieces = _merged(pieces)
    shown = np.array([p.score for p in pieces], dtype=np.float64)
    drawn = {"signed": shown, "positive": np.clip(shown, 0, None), "absolute": np.abs(shown)}[mode]
    import torch
    scale = float(vmax) if vmax is not None else percentile_scale(torch.from_numpy(np.abs(drawn)), clip_percentile)
    v = drawn / scale if scale > 0 else np.zeros_like(drawn)
    colors = colorize(v, mode, cmap).reshape(-1, 3)
    return TextPicture(pieces, colors, list(tokens), values, scale, mode, title)

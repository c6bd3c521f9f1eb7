"""text(): HTML escaping, sub-word markers, colours, terminal rendering, saving."""
from __future__ import annotations

import re

import pytest
import torch

from propex.visualize import TextPicture, text


def _visible(fragment: str) -> str:
    """The text a browser shows (tags removed, <br> as newline, entities kept escaped)."""
    return re.sub(r"<[^>]+>", "", fragment.replace("<br>", "\n"))


def _colours(fragment: str) -> list[str]:
    return re.findall(r"background-color:rgb\((\d+,\d+,\d+)\)", fragment)


def test_tokens_are_escaped():
    tokens = ["<script>alert(1)</script>", "&", '"q"', "<s>"]
    tp = text(tokens, [1.0, 0.0, -1.0, 0.5])
    for page in (tp.html, tp.fragment):
        assert "<script" not in page and "<s>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in tp.fragment
    assert "&amp;" in tp.fragment and "&quot;q&quot;" in tp.fragment and "&lt;s&gt;" in tp.fragment
    assert tp._repr_html_() == tp.fragment


def test_wordpiece_gpt_and_sentencepiece_markers():
    wp = text(["[CLS]", "the", "play", "##ing", "kid", "[SEP]"], torch.ones(6))
    assert _visible(wp.fragment) == "[CLS] the playing kid [SEP]"
    gpt = text(["Hello", "Ġworld", "!", "Ċ", "Ġbye"], torch.ones(5))
    assert _visible(gpt.fragment) == "Hello world!\n bye"
    sp = text(["▁New", "▁York", "er"], torch.ones(3))
    assert _visible(sp.fragment) == "New Yorker"


def test_colours_follow_the_scores():
    tp = text(["good", "bad", "meh", "ok"], [2.0, -2.0, 0.0, 1.0])
    assert _colours(tp.fragment) == ["255,0,0", "0,0,255", "255,255,255", "255,128,128"]
    assert tp.vmax == pytest.approx(2.0)
    fixed = text(["a", "b"], [1.0, -0.5], vmax=4.0)
    assert _colours(fixed.fragment) == [f"255,{round(255 * 0.75)},{round(255 * 0.75)}", "223,223,255"]
    pos = text(["a", "b"], [1.0, -1.0], mode="positive")
    assert _colours(pos.fragment) == ["255,0,0", "255,255,255"]
    per_dim = text(["a", "b"], torch.tensor([[1.0, 1.0], [-1.0, 0.0]]))   # [T, D]: summed over D
    assert per_dim.scores.tolist() == [2.0, -1.0]


def test_merge_sums_subword_scores():
    tp = text(["play", "##ing", "now"], [1.0, 0.5, -0.5], merge=True)
    scores = [float(s) for s in re.findall(r'data-score="([^"]+)"', tp.fragment)]
    assert scores == [1.5, -0.5]
    assert _visible(tp.fragment) == "playing now"


def test_terminal_rendering():
    tp = text(["up", "down", "zero"], [1.0, -1.0, 0.0])
    out = tp.terminal()
    assert "\x1b[48;2;255;0;0m" in out and "\x1b[48;2;0;0;255m" in out and "\x1b[48;2;255;255;255m" in out
    assert out.count("\x1b[0m") == 3
    assert re.sub(r"\x1b\[[0-9;]*m", "", out) == "up down zero"
    assert tp.terminal(color=False) == "up[+1] down[-1] zero[+0]" == str(tp)


def test_save_standalone_html(tmp_path):
    tp = text(["a", "b"], [1.0, -1.0], title="my <title>")
    path = tp.save(tmp_path / "t" / "tokens.html")
    page = open(path, encoding="utf-8").read()
    assert page.startswith("<!DOCTYPE html>") and page == tp.html
    assert "my &lt;title&gt;" in page and "http" not in page
    assert isinstance(tp, TextPicture) and "2 tokens" in repr(tp)


def test_bad_arguments():
    with pytest.raises(ValueError, match="T = 2 tokens"):
        text(["a", "b"], [1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="tokens"):
        text("ab", [1.0, 2.0])
    with pytest.raises(ValueError, match="mode"):
        text(["a"], [1.0], mode="both")
    with pytest.raises(ValueError, match="NaN"):
        text(["a"], [float("nan")])
    with pytest.raises(ValueError, match="vmax"):
        text(["a"], [1.0], vmax=0)

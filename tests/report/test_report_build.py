"""build_report: one self-contained file, N×M heatmaps that decode as PNG, top-k, the metrics
table's best-value marking, colour scales, curves, metadata, text inputs, the store section."""
from __future__ import annotations

import base64
import io
import math
import re
import sys
import types
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

import propex
from propex.evaluate import Comparison, PerturbationCurve
from propex.report import build_report

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside each element with a class."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _parse(page: str) -> list[tuple[str, dict[str, str]]]:
    p = _Tags()
    p.feed(page)
    return p.tags


def _with_class(tags, tag, cls):
    return [a for t, a in tags if t == tag and cls in (a.get("class") or "").split()]


def _decode(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    with PIL.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def run(digits_model):
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    exps = {name: propex.explain(digits_model, x, name) for name in ("saliency", "input_x_gradient", "gradcam")}
    return digits_model, x, exps


def _comparison() -> Comparison:
    def rec(method, metric, mean, better, error=None):
        return {"method": method, "metric": metric, "summary": None, "mean": mean, "std": 0.1, "n": 3,
                "seconds": 0.01, "explain_seconds": 0.5, "better": better, "error": error}
    records = [
        rec("saliency", "sparseness", 0.2, "higher"), rec("input_x_gradient", "sparseness", 0.9, "higher"),
        rec("gradcam", "sparseness", 0.5, "higher"),
        rec("saliency", "complexity", 3.0, "lower"), rec("input_x_gradient", "complexity", 2.0, "lower"),
        rec("gradcam", "complexity", 1.0, "lower"),
        rec("saliency", "custom", 5.0, None), rec("input_x_gradient", "custom", 7.0, None),
        rec("gradcam", "custom", 6.0, None),
        rec("saliency", "infidelity", 0.3, "lower"), rec("input_x_gradient", "infidelity", math.nan, "lower"),
        rec("gradcam", "infidelity", math.nan, None, error="RuntimeError: boom <b>"),
    ]
    return Comparison(records)


def test_single_self_contained_file_with_n_by_m_png_heatmaps(tmp_path, run):
    model, x, exps = run
    out = tmp_path / "sub" / "report.html"
    path = build_report(out, model=model, inputs=x, explanations=exps, labels=[f"digit {i}" for i in range(10)])
    assert path == str(out) and [p.name for p in out.parent.iterdir()] == ["report.html"]
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    tags = _parse(page)
    sections = [a for t, a in tags if t == "section" and a.get("class") == "px-input"]
    assert len(sections) == 3
    maps = _with_class(tags, "img", "px-heatmap")
    assert len(maps) == 3 * 3
    assert [m["data-method"] for m in maps] == ["saliency", "input_x_gradient", "gradcam"] * 3
    for m in maps:
        arr = _decode(m["src"])
        assert arr.shape[0] >= 128 and arr.shape[0] % 16 == 0             # 16×16 enlarged with sharp pixels
    for t, a in tags:
        if t == "img":
            _decode(a["src"])                                              # every image is an embedded PNG
    assert len(_with_class(tags, "ol", "px-topk")) == 3
    assert len(_with_class(tags, "table", "px-meta")) == 1


def test_top_k_are_softmax_probabilities_with_class_names(tmp_path, run):
    model, x, exps = run
    page = open(build_report(tmp_path / "r.html", model=model, inputs=x, explanations=exps, top_k=3,
                             labels=[f"digit {i}" for i in range(10)]), encoding="utf-8").read()
    with torch.no_grad():
        probs = torch.softmax(model(x).double(), dim=1)
    lists = re.findall(r'<ol class="px-topk">(.*?)</ol>', page)
    assert len(lists) == 3
    for i, body in enumerate(lists):
        items = re.findall(r'data-class="(\d+)">digit (\d+)(?: \(explained\))?: ([\d.]+)%', body)
        top = torch.topk(probs[i], 3)
        assert [int(c) for c, _, _ in items] == top.indices.tolist()
        assert [int(n) for _, n, _ in items] == top.indices.tolist()
        assert [float(p) for _, _, p in items] == pytest.approx((100 * top.values).tolist(), abs=0.051)
        explained = int(exps["saliency"].target[i])
        assert f'<li class="px-target" data-class="{explained}">' in body


def test_best_value_per_row_respects_the_direction(tmp_path, run):
    model, x, exps = run
    page = open(build_report(tmp_path / "r.html", model=model, inputs=x, explanations=exps,
                             comparison=_comparison()), encoding="utf-8").read()
    table = re.search(r'<table class="px-metrics">.*?</table>', page).group(0)
    rows = dict(re.findall(r'<tr data-metric="([^"]+)">(.*?)</tr>', table))
    best = {metric: re.findall(r'class="px-num px-best" data-method="([^"]+)"', body) for metric, body in rows.items()}
    assert best == {"sparseness": ["input_x_gradient"],      # higher is better: 0.9
                    "complexity": ["gradcam"],               # lower is better: 1.0
                    "custom": [],                            # direction unknown: nothing marked
                    "infidelity": ["saliency"]}              # NaN and errors never win
    assert table.count("px-best") == 3
    assert "↑ higher" in rows["sparseness"] and "↓ lower" in rows["complexity"]
    assert 'title="RuntimeError: boom &lt;b&gt;"' in rows["infidelity"]          # the error, escaped
    assert "0.9 ± 0.1" in rows["sparseness"]
    # timings default to the comparison's explain_seconds
    assert "time: gradcam" in page and "0.500 s" in page


def _pixels(page: str, index: int) -> dict[str, np.ndarray]:
    tags = _parse(page)
    maps = _with_class(tags, "img", "px-heatmap")
    per = len(maps) // len(_with_class(tags, "section", "px-input"))
    return {m["data-method"]: _decode(m["src"]) for m in maps[index * per:(index + 1) * per]}


def test_colour_scales_shared_raw_and_per_method(tmp_path):
    x = torch.rand(1, 1, 4, 4)
    a = torch.zeros(1, 1, 4, 4)
    a[0, 0, 0, 0], a[0, 0, 1, 1] = 1.0, -0.5
    exps = {"small": a, "big": 10 * a, "spread": torch.ones(1, 1, 4, 4)}

    def page(scale):
        return open(build_report(tmp_path / f"{scale}.html", inputs=x, explanations=exps, heatmap_scale=scale,
                                 heatmap_options={"clip_percentile": 100}), encoding="utf-8").read()
    shared = _pixels(page("shared"), 0)
    # "shared": maps divided by Σ|R| → small and big identical; full colour = the largest share (2/3 of small)
    assert np.array_equal(shared["small"], shared["big"])
    assert shared["small"][0, 0].tolist() == [255, 0, 0]
    spread = shared["spread"][0, 0].astype(int)                       # share 1/16 of 2/3 → faint red
    assert spread[0] == 255 and abs(spread[1] - 255 * (1 - (1 / 16) / (2 / 3))) <= 1
    raw = _pixels(page("raw"), 0)                                     # one scale in the attributions' units
    assert raw["big"][0, 0].tolist() == [255, 0, 0]
    assert abs(int(raw["small"][0, 0][1]) - 255 * 0.9) <= 1           # 1 of 10: faint
    per = _pixels(page("method"), 0)
    assert np.array_equal(per["small"], per["big"]) and per["spread"][0, 0].tolist() == [255, 0, 0]
    assert "each map on its own scale" in page("method") and "Σ|R|" in page("shared")


def test_low_resolution_maps_are_upsampled_to_the_input(tmp_path):
    x = torch.rand(1, 3, 32, 32)
    cam = torch.rand(1, 1, 4, 4)
    exps = {"cam": cam, "full": torch.rand(1, 3, 32, 32)}
    page = open(build_report(tmp_path / "r.html", inputs=x, explanations=exps), encoding="utf-8").read()
    maps = _pixels(page, 0)
    assert maps["cam"].shape == maps["full"].shape == (128, 128, 3)


def test_curves_metadata_settings_and_notes(tmp_path, run):
    model, x, exps = run
    curve = PerturbationCurve(torch.rand(3, 6), torch.linspace(0, 1, 6), "morf", "deletion")
    ins = PerturbationCurve(torch.rand(3, 6), torch.linspace(0, 1, 6), "morf", "insertion")
    per_method = {"saliency": {"deletion": curve, "insertion": ins}, "gradcam": {"deletion": curve, "insertion": ins}}
    page = open(build_report(tmp_path / "r.html", model=model, inputs=x, explanations=exps, curves=per_method,
                             timings={"saliency": 0.25}, settings={"batch <size>": 8}, notes=["lime failed: <x>"],
                             title="My <report>"), encoding="utf-8").read()
    tags = _parse(page)
    imgs = _with_class(tags, "img", "px-curves")
    assert sorted(a["data-curve"] for a in imgs) == ["deletion", "insertion"]
    for a in imgs:
        assert _decode(a["src"]).shape[1] > 300
    meta = re.search(r'<table class="px-meta">.*?</table>', page).group(0)
    import platform
    for needle in (torch.__version__, platform.python_version(), propex.__version__, "cpu", "DigitsCNN",
                   "time: saliency", "0.250 s", "setting: batch &lt;size&gt;", "heatmap colour scale"):
        assert needle in meta, needle
    assert "<title>My &lt;report&gt;</title>" in page and "lime failed: &lt;x&gt;" in page
    flat = open(build_report(tmp_path / "f.html", model=model, inputs=x, explanations=exps,
                             curves={"saliency": curve, "gradcam": curve}), encoding="utf-8").read()
    assert [a["data-curve"] for a in _with_class(_parse(flat), "img", "px-curves")] == ["deletion"]


def test_text_inputs_render_tokens(tmp_path):
    tokens = [["[CLS]", "<b>bold</b>", "play", "##ing", "[SEP]"], ["Hello", "Ġworld", "Ġ!", "x", "y"]]
    scores = torch.tensor([[0.0, 1.0, -1.0, 0.5, 0.0], [1.0, 0.0, -2.0, 0.0, 0.0]])
    page = open(build_report(tmp_path / "t.html", inputs=torch.zeros(2, 5, dtype=torch.long),
                             explanations={"ig": scores, "ig x2": 2 * scores}, tokens=tokens),
                encoding="utf-8").read()
    tags = _parse(page)
    assert not _with_class(tags, "img", "px-heatmap")
    maps = [a for t, a in tags if t == "div" and "px-text-map" in (a.get("class") or "")]
    assert [m["data-method"] for m in maps] == ["ig", "ig x2"] * 2
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    # shared scale: the doubled scores give the same colours
    blocks = re.findall(r'<div class="px-text-map" data-method="[^"]+">(.*?)</div></div>', page)
    colours = [re.findall(r"background-color:rgb\(([^)]+)\)", b) for b in blocks]
    assert colours[0] == colours[1] and "255,0,0" in colours[0] and "0,0,255" in colours[0]
    assert "No class scores" in page                              # no model and no outputs


@pytest.mark.parametrize("own_section", [True, False])
def test_store_section_embeds_the_batch_summary(tmp_path, run, monkeypatch, own_section):
    model, x, exps = run
    fake = types.ModuleType("propex.batch")
    seen = []
    summary = '<div id="fake-summary">42 samples</div>'
    if own_section:
        summary = f'<section class="px-store">{summary}</section>'
    fake.store_summary_html = lambda store, **kw: seen.append((store, kw)) or summary
    monkeypatch.setitem(sys.modules, "propex.batch", fake)
    monkeypatch.setattr(propex, "batch", fake, raising=False)
    page = open(build_report(tmp_path / "s.html", model=model, inputs=x, explanations=exps, store="STORE",
                             labels=list("abcdefghij")), encoding="utf-8").read()
    assert seen == [("STORE", {"labels": list("abcdefghij")})]
    assert page.count('<section class="px-store">') == 1                  # never nested
    section = re.search(r'<section class="px-store">(.*?)</section>', page).group(1)
    assert '<div id="fake-summary">42 samples</div>' in section


def test_store_section_with_a_real_store(tmp_path, run):
    pytest.importorskip("zarr")
    pb = pytest.importorskip("propex.batch")
    model, x, exps = run
    data = torch.utils.data.TensorDataset(torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(3)))
    store = tmp_path / "s.zarr"
    pb.explain_dataset(model, data, ["saliency"], str(store), batch_size=8, progress=False)
    page = open(build_report(tmp_path / "r.html", model=model, inputs=x, explanations=exps,
                             store=pb.open_store(str(store))), encoding="utf-8").read()
    assert page.count('<section class="px-store">') == 1
    section = re.search(r'<section class="px-store">.*?</section>', page, re.S).group(0)
    assert 'data-method="saliency"' in section
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)


def test_bad_arguments(tmp_path, run):
    model, x, exps = run
    with pytest.raises(ValueError, match="heatmap_scale"):
        build_report(tmp_path / "r.html", inputs=x, explanations=exps, heatmap_scale="global")
    with pytest.raises(ValueError, match=r"explanations\['a'\].*3 inputs"):
        build_report(tmp_path / "r.html", inputs=x, explanations={"a": torch.zeros(2, 1, 16, 16)})
    with pytest.raises(TypeError, match="non-empty mapping"):
        build_report(tmp_path / "r.html", inputs=x, explanations={})
    with pytest.raises(ValueError, match="tokens"):
        build_report(tmp_path / "r.html", inputs=x, explanations=exps, tokens=[["a"]])
    with pytest.raises(ValueError, match="top_k"):
        build_report(tmp_path / "r.html", inputs=x, explanations=exps, top_k=0)
    with pytest.raises(TypeError, match="heatmap_options"):
        build_report(tmp_path / "r.html", inputs=x, explanations=exps, heatmap_options={"colour": "red"})
    with pytest.raises(ValueError, match="pass tokens="):
        build_report(tmp_path / "r.html", inputs=torch.zeros(3, 5), explanations={"a": torch.zeros(3, 5)})
    assert not list(tmp_path.iterdir())                              # nothing half-written

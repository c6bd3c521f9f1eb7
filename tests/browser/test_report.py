"""The HTML report in headless Chromium, opened from disk with the network blocked: what a
person sees (sections, heatmaps that load, numbers in the metrics table, the best cell
marked, curves, metadata) and that the page asks for nothing outside the file."""
from __future__ import annotations

import math

import pytest

METHODS = ["saliency", "integrated_gradients", "lrp", "gradcam"]
N_INPUTS = 3


@pytest.fixture(scope="module")
def report_path(tmp_path_factory):
    pytest.importorskip("sklearn")
    report = pytest.importorskip("propex.report")
    import torch

    from propex.models import load_digits_data, load_digits_model
    torch.manual_seed(0)
    model = load_digits_model()
    x, _ = load_digits_data("test")
    path = tmp_path_factory.mktemp("report") / "report.html"
    report.run_report(model, x[:N_INPUTS], METHODS, metrics=["sparseness", "complexity"], path=path,
                      labels=[str(i) for i in range(10)], title="propex browser test")
    return path


def _natural_widths(page, selector: str) -> list[int]:
    return page.eval_on_selector_all(selector, "els => els.map(e => e.complete ? e.naturalWidth : 0)")


def test_report_shows_every_heatmap_metric_and_curve(page, report_path, artifacts):
    p = page.page
    p.goto(report_path.as_uri())
    p.wait_for_load_state("load")
    assert p.title() == "propex browser test"
    assert p.locator("section.px-input").count() == N_INPUTS
    # every method's heatmap for every input, and each one decoded by the browser
    widths = _natural_widths(p, "img.px-heatmap")
    assert len(widths) == N_INPUTS * len(METHODS) and all(w > 0 for w in widths), widths
    for i in range(N_INPUTS):
        section = p.locator("section.px-input").nth(i)
        shown = section.locator("img.px-heatmap").evaluate_all("els => els.map(e => e.dataset.method)")
        assert shown == METHODS
        assert section.locator("ol.px-topk li").count() == 5
    # the metrics table: one row per metric, one numeric cell per method, the best one marked
    table = p.locator("table.px-metrics")
    assert table.is_visible()
    for metric, better in (("sparseness", max), ("complexity", min)):
        row = table.locator(f"tr[data-metric='{metric}']")
        cells = row.locator("td.px-num")
        assert cells.count() == len(METHODS)
        values = [float(t.split("±")[0]) for t in cells.all_inner_texts()]
        assert all(math.isfinite(v) for v in values)
        best = row.locator("td.px-best")
        assert best.count() == 1
        assert float(best.inner_text().split("±")[0]) == better(values)
    curves = _natural_widths(p, "img.px-curves")
    assert curves and all(w > 0 for w in curves)
    assert p.locator("table.px-meta").is_visible()
    assert "integrated_gradients" in p.locator("table.px-meta").inner_text()
    # nothing outside the file: every image is a data URI, no scripts or stylesheets from elsewhere
    sources = p.eval_on_selector_all("img, script[src], link[href], iframe, source",
                                     "els => els.map(e => e.src || e.href || '')")
    assert all(s.startswith("data:") for s in sources if s), [s[:60] for s in sources if not s.startswith("data:")]
    assert page.external == []
    p.screenshot(path=str(artifacts / "report.png"), full_page=True)
    assert (artifacts / "report.png").stat().st_size > 10_000


def test_blocking_catches_external_requests(page, report_path):
    """The network guard used above does see a request to another host (so its silence means
    something)."""
    p = page.page
    p.goto(report_path.as_uri())
    p.evaluate("() => { const i = new Image(); i.src = 'http://example.com/x.png'; document.body.append(i); }")
    p.wait_for_timeout(300)
    assert page.external == ["http://example.com/x.png"]

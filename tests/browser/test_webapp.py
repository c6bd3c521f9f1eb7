"""The web app in headless Chromium: pick an example, choose methods and options, watch the
heatmaps and the metrics table appear; an invalid or too large upload shows its error."""
from __future__ import annotations

import io
import math

import numpy as np

CHOSEN = ["saliency", "integrated_gradients", "lrp", "occlusion"]


def _open(page, live_app):
    p = page.page
    p.goto(live_app + "/")
    p.wait_for_selector("input.px-method")
    p.wait_for_function("document.querySelectorAll('.px-example img').length > 0 && "
                        "[...document.querySelectorAll('.px-example img')].every(i => i.complete && i.naturalWidth > 0)")
    return p


def _wait_done(p, timeout=60_000):
    p.wait_for_function("document.querySelector('#status').textContent.startsWith('done')", timeout=timeout)


def _wait_images_loaded(p, count: int) -> None:
    """Wait until ``count`` heatmap images are in the page and decoded (fails on timeout)."""
    p.wait_for_function(f"[...document.querySelectorAll('img.px-heatmap')].filter(i => i.complete && i.naturalWidth > 0)"
                        f".length === {count}", timeout=20_000)


def test_explain_an_example_with_chosen_methods(page, live_app, artifacts):
    p = _open(page, live_app)
    assert p.locator("#model-name").inner_text().startswith("demo")
    assert p.locator(".px-example").count() == 10
    p.locator(".px-example").nth(7).click()
    for box in p.locator("input.px-method").all():                 # choose exactly CHOSEN
        box.set_checked(box.get_attribute("value") in CHOSEN)
    p.locator("[data-method='integrated_gradients'][data-option='n_steps']").fill("16")
    p.locator("[data-method='lrp'][data-option='composite']").select_option("epsilon_gamma_box")
    p.locator("[data-method='occlusion'][data-option='window']").fill("4")
    p.locator("[data-method='occlusion'][data-option='stride']").fill("2")
    for box in p.locator("input.px-metric").all():
        box.set_checked(box.get_attribute("value") in ("deletion", "sparseness"))
    p.locator("#run").click()
    _wait_done(p)
    assert p.locator("#error").inner_text() == ""
    assert p.locator("#progress").evaluate("e => [e.value, e.max]") == [len(CHOSEN), len(CHOSEN)]
    # one loaded heatmap per chosen method, in order
    _wait_images_loaded(p, len(CHOSEN))
    assert p.locator("img.px-heatmap").evaluate_all("els => els.map(e => e.dataset.method)") == CHOSEN
    p.wait_for_function("document.querySelector('#input-image').complete", timeout=20_000)
    assert p.locator("#input-image").evaluate("e => e.naturalWidth") == 160
    assert p.locator("ol.px-topk li").count() == 5
    assert p.locator("ol.px-topk li").first.inner_text().startswith("7:")
    # the metrics table: a number for each method and metric, the best per column marked
    rows = p.locator("table.px-metrics tbody tr")
    assert rows.count() == len(CHOSEN)
    values = np.array([[float(v) for v in rows.nth(i).locator("td.px-value").all_inner_texts()]
                       for i in range(len(CHOSEN))])
    assert values.shape == (len(CHOSEN), 2) and np.isfinite(values).all()
    best = p.locator("table.px-metrics td.px-best")
    assert best.count() >= 2
    marked = {c.get_attribute("data-metric"): float(c.inner_text()) for c in best.all()}
    assert math.isclose(marked["deletion"], values[:, 0].min()) and math.isclose(marked["sparseness"], values[:, 1].max())
    # the downloads the page links to work
    png = p.locator(".px-result[data-method='lrp'] a.px-download").get_attribute("href")
    assert p.request.get(live_app + png).headers["content-type"] == "image/png"
    npz_url = p.locator("#download-npz").get_attribute("href")
    npz = np.load(io.BytesIO(p.request.get(live_app + npz_url).body()))
    assert {f"attributions_{m}" for m in CHOSEN} <= set(npz.files)
    report = p.locator("#download-report")
    assert report.is_visible()
    html = p.request.get(live_app + report.get_attribute("href")).text()
    assert html.count('class="px-heatmap"') == len(CHOSEN) and 'class="px-metrics"' in html
    assert page.external == []
    p.screenshot(path=str(artifacts / "webapp_results.png"), full_page=True)


def test_invalid_upload_shows_the_error(page, live_app, artifacts, tmp_path):
    p = _open(page, live_app)
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    p.set_input_files("#file", str(bad))
    p.locator("#run").click()
    p.wait_for_function("document.querySelector('#error').textContent.length > 0")
    error = p.locator("#error")
    assert error.is_visible()
    assert "'notes.png' is not an image Pillow can read" in error.inner_text()
    assert p.locator("img.px-heatmap").count() == 0
    assert p.locator("#run").is_enabled()
    p.screenshot(path=str(artifacts / "webapp_invalid_upload.png"))
    # too large (the test server allows 100 kB): 413 shown as text too
    from PIL import Image
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(big)
    p.set_input_files("#file", str(big))
    p.locator("#run").click()
    p.wait_for_function("document.querySelector('#error').textContent.includes('too large')")
    assert "the limit is 100,000 bytes" in error.inner_text()
    # and a valid upload afterwards works: the error goes away, the results come
    good = tmp_path / "digit.png"
    Image.fromarray(np.kron(np.eye(8, dtype=np.uint8) * 255, np.ones((4, 4), np.uint8))).save(good)
    p.set_input_files("#file", str(good))
    for box in p.locator("input.px-method").all():
        box.set_checked(box.get_attribute("value") == "saliency")
    p.locator("#run").click()
    _wait_done(p)
    assert p.locator("#error").inner_text() == ""
    _wait_images_loaded(p, 1)
    assert p.locator("img.px-heatmap").evaluate_all("els => els.map(e => e.naturalWidth)") == [160]
    assert page.external == []

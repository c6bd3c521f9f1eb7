"""Make docs/images/report.png: an HTML report on the embedded digits model, photographed in
headless Chromium (Debian's /usr/bin/chromium via Playwright's Python package; no download,
the network blocked).

    python examples/screenshot_report.py [--out docs/images/report.png] [--html report.html]

Needs the ``viz`` extra, scikit-learn and playwright (the Python package only).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import torch

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
METHODS = ["saliency", "integrated_gradients", ("lrp", {"composite": "epsilon_plus_flat"}), "gradcam",
           ("occlusion", {"window": 4, "stride": 2}), ("rise", {"n_masks": 1000, "seed": 0})]
METRICS = ["sparseness", "complexity", ("insertion", {"n_steps": 32}), ("deletion", {"n_steps": 32})]


def build(html: Path, n_inputs: int = 2) -> Path:
    """The report on the first test digits of classes 0, 1, 2, ..."""
    from propex.models import load_digits_data, load_digits_model
    from propex.report import run_report

    torch.manual_seed(0)
    model = load_digits_model()
    x, y = load_digits_data("test")
    first = [int((y == c).nonzero()[0]) for c in range(n_inputs)]
    run_report(model, x[first], METHODS, metrics=METRICS, path=html, labels=[str(i) for i in range(10)],
               title="propex report: digits CNN", curve_options={"deletion": {"n_steps": 32},
                                                                  "insertion": {"n_steps": 32}})
    return html


def screenshot(html: Path, out: Path, width: int = 1280, height: int = 900) -> Path:
    """A screenshot of ``html`` from the top to the end of the metrics table (the whole page if it
    has none); refuses if an image is broken or the page tried the network."""
    from playwright.sync_api import sync_playwright

    external: list[str] = []

    def route(r):
        if urlparse(r.request.url).scheme in ("file", "data"):
            r.continue_()
        else:
            external.append(r.request.url)
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
            context.route("**/*", route)
            page = context.new_page()
            page.goto(html.resolve().as_uri())
            page.wait_for_load_state("load")
            broken = page.eval_on_selector_all("img", "els => els.filter(e => !e.naturalWidth).length")
            if broken or external:
                raise RuntimeError(f"the report is not self-contained: {broken} broken images, requests {external}")
            out.parent.mkdir(parents=True, exist_ok=True)
            box = page.locator("table.px-metrics").bounding_box() if page.locator("table.px-metrics").count() else None
            if box is None:
                page.screenshot(path=str(out), full_page=True)
            else:
                page.screenshot(path=str(out), full_page=True,
                                clip={"x": 0, "y": 0, "width": width, "height": box["y"] + box["height"] + 24})
        finally:
            browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs/images/report.png")
    parser.add_argument("--html", type=Path, default=None, help="keep the report here (default: a temp file)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        html = build(args.html or Path(tmp) / "report.html")
        print(f"wrote {screenshot(html, args.out)}")


if __name__ == "__main__":
    main()

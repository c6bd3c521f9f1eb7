"""Make the pictures of docs/visualize.md (and a report screenshot) from the embedded digits model.

    python examples/make_readme_images.py [--out docs/images/visualize]

Everything is computed here, offline (the digits model ships with propex; the data with
scikit-learn). The report screenshot needs Debian's chromium at /usr/bin/chromium and is skipped
without it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile

import torch

import propex
from propex.evaluate import deletion, insertion
from propex.models import load_digits_data, load_digits_model
from propex.report import run_report
from propex.visualize import curves, grid, heatmap, overlay, text
from propex.visualize.compose import enlarged

METHODS = ["saliency", "integrated_gradients", "lrp", "gradcam", "occlusion"]


def main(out: str) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    os.makedirs(out, exist_ok=True)
    model = load_digits_model()
    x_all, y_all = load_digits_data("test")
    first = {}
    for i, label in enumerate(y_all.tolist()):
        first.setdefault(label, i)
    x = x_all[[first[c] for c in (0, 3, 7, 8)]]
    target = model(x).argmax(1)
    exps = {m: propex.explain(model, x, m, target=target) for m in METHODS}

    # 1. samples × methods grid (each map on its own scale)
    rows = [[x[i], *(heatmap(exps[m].attributions[i]) for m in METHODS)] for i in range(len(x))]
    grid(rows, row_labels=[f"pred {int(t)}" for t in target], col_labels=["input", *METHODS],
         title="digits: samples × methods").save(f"{out}/grid.png")

    # 2. modes and reductions of one LRP map
    lrp = exps["lrp"].attributions[1]
    ig = exps["integrated_gradients"].attributions[1]
    grid([[x[1], heatmap(ig), heatmap(ig, mode="positive"), heatmap(ig, mode="absolute"),
           heatmap(ig, clip_percentile=90), heatmap(ig, cmap="seismic")]],
         col_labels=["input", "signed", "positive", "absolute", "clip 90%", "seismic"]).save(f"{out}/modes.png")

    # 3. per-sample vs batch scale
    ig_all = exps["integrated_gradients"].attributions
    grid([heatmap(ig_all, scale="sample"), heatmap(ig_all, scale="batch")],
         row_labels=["sample", "batch"], col_labels=[f"digit {i}" for i in range(len(x))]).save(f"{out}/scales.png")

    # 4. overlay: the 4×4 Grad-CAM of the digits CNN's last conv layer laid over the enlarged digit
    cam = propex.explain(model, x[1:2], "gradcam", target=target[1:2], upsample=False).attributions[0]
    big = enlarged(heatmap(torch.zeros(16, 16)), 128)            # canvas size only
    digit = x[1].repeat_interleave(8, -1).repeat_interleave(8, -2)
    grid([[digit, heatmap(cam, size=16, interpolation="nearest"), overlay(digit, cam, alpha=0.7),
           overlay(digit, lrp.repeat_interleave(8, -1).repeat_interleave(8, -2), alpha=0.8)]],
         col_labels=["input", f"CAM {tuple(cam.shape[-2:])}", "CAM overlay", "LRP overlay"],
         cell_size=big.size[::-1]).save(f"{out}/overlay.png")

    # 5. deletion / insertion curves
    dele = {m: deletion(model, x, exps[m].attributions, target=target, n_steps=32) for m in METHODS}
    ins = {m: insertion(model, x, exps[m].attributions, target=target, n_steps=32) for m in METHODS}
    grid([[curves(dele), curves(ins)]]).save(f"{out}/curves.png")

    # 6. text (rendered from its standalone HTML by chromium when available)
    tokens = ["[CLS]", "the", "film", "was", "sur", "##pris", "##ingly", "good", ",", "not", "<b>bad</b>", "[SEP]"]
    scores = [0.0, 0.05, 0.2, 0.0, 0.6, 0.5, 0.4, 1.0, 0.0, -0.4, -0.8, 0.0]
    tp = text(tokens, scores, title="token attributions")
    tp.save(f"{out}/text.html")
    print(tp.terminal())

    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if chromium is None:
        print("chromium not found: text.png and report.png skipped")
        return
    _screenshot(chromium, f"{out}/text.html", f"{out}/text.png", (700, 160))
    os.remove(f"{out}/text.html")
    with tempfile.TemporaryDirectory() as tmp:
        path = run_report(model, x[:2], ["saliency", "integrated_gradients", "lrp", "gradcam"],
                          metrics=["sparseness", "complexity", ("pixel_flipping", {"n_steps": 16})],
                          labels=[str(i) for i in range(10)], path=f"{tmp}/report.html",
                          curve_options={"deletion": {"n_steps": 32}, "insertion": {"n_steps": 32}},
                          title="propex report: digits")
        _screenshot(chromium, path, f"{out}/report.png", (1100, 1500))


def _screenshot(chromium: str, html_path: str, png_path: str, size: tuple[int, int]) -> None:
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={os.path.abspath(png_path)}", f"--window-size={size[0]},{size[1]}",
                    "file://" + os.path.abspath(html_path)], check=True, capture_output=True, timeout=120)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images/visualize")
    main(parser.parse_args().out)

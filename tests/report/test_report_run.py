"""run_report on the digits model: explanations (timed), compare, curves, progress, errors."""
from __future__ import annotations

import re

import pytest
import torch

from propex.report import run_report

pytest.importorskip("PIL")
pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def x():
    return torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(2))


def test_end_to_end_on_digits(tmp_path, digits_model, x, model_snapshot):
    snap = model_snapshot(digits_model)
    calls = []
    path = run_report(digits_model, x, ["saliency", ("integrated_gradients", {"n_steps": 8})],
                      metrics=["sparseness", ("pixel_flipping", {"n_steps": 8})], path=tmp_path / "r.html",
                      labels=[str(i) for i in range(10)], curve_options={"deletion": {"n_steps": 8},
                                                                         "insertion": {"n_steps": 8}},
                      settings={"note": "test"}, progress=lambda d, t, m: calls.append((d, t, m)))
    snap.assert_unchanged()
    page = open(path, encoding="utf-8").read()
    assert page.count('class="px-heatmap"') == 3 * 2
    assert page.count('class="px-curves"') == 2
    assert re.search(r'<table class="px-metrics">.*sparseness.*pixel_flipping.*</table>', page, re.S)
    assert page.count("px-num px-best") == 2                # both metrics have a known direction
    with torch.no_grad():
        top = digits_model(x).argmax(1)
    for i, c in enumerate(top.tolist()):
        assert f"Input {i} — explained: {c}" in page
    for name in ("time: saliency", "time: integrated_gradients", "setting: note", "setting: options of "
                 "integrated_gradients"):
        assert name in page
    done = [d for d, _, _ in calls]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1] == 2 * 3 + 2 and calls[-1][2] == "done"


def test_failures_are_recorded_or_raised(tmp_path, digits_model, x):
    def broken(model, inputs, target):
        raise RuntimeError("no luck")

    path = run_report(digits_model, x, {"ok": "saliency", "broken": broken}, path=tmp_path / "r.html", curves=None)
    page = open(path, encoding="utf-8").read()
    assert "broken failed: RuntimeError: no luck" in page
    assert page.count('class="px-heatmap"') == 3 and 'data-method="broken"' not in page
    with pytest.raises(RuntimeError, match="no luck"):
        run_report(digits_model, x, {"broken": broken}, path=tmp_path / "s.html", curves=None, on_error="raise")
    with pytest.raises(RuntimeError, match="every method failed"):
        run_report(digits_model, x, {"broken": broken}, path=tmp_path / "s.html", curves=None)
    with pytest.raises(ValueError, match="not a curve"):
        run_report(digits_model, x, ["saliency"], path=tmp_path / "s.html", curves=["auc"])
    with pytest.raises(ValueError, match="curve_options"):
        run_report(digits_model, x, ["saliency"], path=tmp_path / "s.html", curves=["deletion"],
                   curve_options={"insertion": {}})
    with pytest.raises(ValueError, match="salency"):
        run_report(digits_model, x, ["salency"], path=tmp_path / "s.html")
    assert not (tmp_path / "s.html").exists()


def test_cache_is_only_used_for_the_same_model_and_inputs(tmp_path, digits_model, x):
    """Robustness metrics re-explain perturbed inputs: they must not get the cached attributions."""
    seen = []

    def explainer(model, inputs, target):
        seen.append(inputs.shape[0])
        return torch.ones_like(inputs) * inputs.sum()

    run_report(digits_model, x, {"e": explainer}, metrics=[("max_sensitivity", {"n_samples": 2})],
               path=tmp_path / "r.html", curves=None)
    assert seen[0] == 3 and len(seen) >= 2                   # x once, then the perturbed copies

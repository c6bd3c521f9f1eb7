"""`propex methods / evaluate / report / demo / serve / batch` and the entry point."""
from __future__ import annotations

import csv
import re
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import propex
from propex.loading import load_images, load_model


def test_methods_lists_every_registered_method(run_cli):
    code, out, _ = run_cli("methods")
    assert code == 0
    listed = [line.split()[0] for line in out.strip().splitlines()]
    assert listed == propex.methods()
    assert "(aliases: ig" in out
    code, out, _ = run_cli("methods", "--family", "cam")
    assert [line.split()[0] for line in out.strip().splitlines()] == propex.methods("cam")


def test_console_script_entry_point():
    result = subprocess.run([sys.executable, "-m", "propex.cli", "methods"], capture_output=True, text=True)
    assert result.returncode == 0 and "integrated_gradients" in result.stdout


def test_evaluate_writes_the_compare_table_as_text_csv_json(run_cli, digit_dir, tmp_path):
    code, out, err = run_cli("evaluate", "--input", digit_dir, "--method", "saliency", "--method", "lrp",
                             "--metric", "sparseness", "--metric", "deletion", "--option", "deletion.n_steps=4",
                             "--out", tmp_path)
    assert code == 0, err
    assert "sparseness" in out and "deletion.auc" in out and "lrp" in out
    with open(tmp_path / "compare.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["method"], r["metric"]) for r in rows] == [
        ("saliency", "sparseness"), ("saliency", "deletion"), ("lrp", "sparseness"), ("lrp", "deletion")]
    doc = json.loads((tmp_path / "compare.json").read_text())
    loaded = load_model("demo")
    x = loaded.inputs([img for _, img in load_images(digit_dir)])
    a = propex.explain(loaded.model, x, "lrp").attributions
    expected = propex.evaluate.sparseness(loaded.model, x, a)
    record = next(r for r in doc["records"] if r["method"] == "lrp" and r["metric"] == "sparseness")
    assert record["mean"] == pytest.approx(float(expected.mean()), rel=1e-6)
    per_sample = [r["value"] for r in doc["per_sample"] if r["method"] == "lrp" and r["metric"] == "sparseness"]
    assert np.allclose(per_sample, expected.numpy(), rtol=1e-6)
    deletion = propex.evaluate.deletion(loaded.model, x, a, n_steps=4)
    record = next(r for r in doc["records"] if r["method"] == "lrp" and r["metric"] == "deletion")
    assert record["mean"] == pytest.approx(float(deletion.auc.mean()), rel=1e-5)
    assert doc["best"]["sparseness"] in ("saliency", "lrp")
    assert float(rows[0]["explain_seconds"]) > 0          # the real explain time, not the cache's


def test_evaluate_metric_option_errors_are_usage_errors(run_cli, digit_dir, tmp_path):
    code, _, err = run_cli("evaluate", "--input", digit_dir, "--method", "saliency", "--metric", "deletion",
                           "--option", "deletion.nsteps=4", "--out", tmp_path)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nsteps" in err


def test_report_writes_one_self_contained_html(run_cli, digit_dir, tmp_path):
    code, out, err = run_cli("report", "--input", digit_dir, "--method", "saliency", "--method", "gradcam",
                             "--metric", "sparseness", "--title", "digits report", "--out", tmp_path)
    assert code == 0, err
    html = (tmp_path / "report.html").read_text()
    assert "digits report" in html
    assert html.count('class="px-input"') == 3
    heatmaps = re.findall(r'<img class="px-heatmap"[^>]*data-method="(\w+)"', html)
    assert sorted(heatmaps) == ["gradcam"] * 3 + ["saliency"] * 3
    assert 'class="px-metrics"' in html and 'class="px-curves"' in html
    assert "http://" not in html.replace("http://www.w3.org", "") and "<script src" not in html
    assert f"wrote {tmp_path}/report.html" in out


def test_report_with_a_batch_store(run_cli, digit_dir, tmp_path):
    batch = pytest.importorskip("propex.batch")
    pytest.importorskip("zarr")
    model = load_model("demo").model
    x = load_model("demo").inputs([img for _, img in load_images(digit_dir)])
    batch.explain_dataset(model, x, ["saliency"], tmp_path / "s.zarr", batch_size=3, progress=False)
    code, _, err = run_cli("report", "--input", digit_dir, "--method", "saliency", "--metric", "sparseness",
                           "--store", tmp_path / "s.zarr", "--out", tmp_path / "rep")
    assert code == 0, err
    assert 'class="px-store"' in (tmp_path / "rep" / "report.html").read_text()


def test_demo_subset_end_to_end(run_cli, tmp_path):
    pytest.importorskip("sklearn")
    code, out, err = run_cli("demo", "--out", tmp_path, "--n-samples", "2", "--methods", "saliency", "ig")
    assert code == 0, err
    assert "| saliency |" in out and "| integrated_gradients |" in out and "deletion.auc" in out
    for name in ("grid.png", "attributions.npz", "table.md", "compare.csv", "compare.json", "report.html",
                 "heatmaps/digit_00_label0_saliency.png", "inputs/digit_01_label1.png"):
        assert (tmp_path / name).exists(), name
    with np.load(tmp_path / "attributions.npz") as data:
        assert data["integrated_gradients"].shape == (2, 1, 16, 16)
        from propex.models import load_digits_data, load_digits_model
        x, y = load_digits_data("test")
        order = [int((y == c).nonzero()[0]) for c in (0, 1)]
        expected = propex.explain(load_digits_model(), x[order], "ig", n_steps=64).attributions
        assert np.allclose(data["integrated_gradients"], expected.numpy(), atol=1e-6)
    # the digits written as PNGs give (almost) the same inputs through `propex explain --model demo`
    code, _, err = run_cli("explain", "--input", tmp_path / "inputs", "--method", "saliency",
                           "--out", tmp_path / "again")
    assert code == 0, err
    with np.load(tmp_path / "again" / "attributions.npz") as again, np.load(tmp_path / "attributions.npz") as first:
        assert np.abs(again["inputs"] - first["inputs"]).max() <= 0.5 / 255 + 1e-6


def test_demo_rejects_unknown_method_and_stray_arguments(run_cli, tmp_path):
    code, _, err = run_cli("demo", "--out", tmp_path, "--method", "not_a_method")
    assert code == 2 and "not a known method" in err
    code, _, err = run_cli("demo", "--out", tmp_path, "saliency")
    assert code == 2 and "unexpected argument" in err


@pytest.mark.slow
def test_run_demo_every_method(tmp_path):
    pytest.importorskip("sklearn")
    from propex.demo import run_demo
    rows, grid = run_demo(str(tmp_path), n_samples=2, log=lambda s: None, metrics=False, report=False)
    image_methods = [m for m in propex.methods()
                     if propex.get_method(m).family in ("gradient", "propagation", "cam", "perturbation")]
    assert [r.method for r in rows] == image_methods
    by_name = {r.method: r for r in rows}
    assert [r.method for r in rows if r.error] == [], [r.error for r in rows if r.error]
    # deconvnet is defined for ReLU (the digits model uses SiLU)
    assert [r.method for r in rows if r.not_applicable] == ["deconvnet"]
    assert "SiLU" in by_name["deconvnet"].not_applicable
    for name in image_methods:
        claims = propex.get_method(name).claims_completeness and by_name[name].completeness_error is not None
        assert claims == (propex.get_method(name).claims_completeness and not by_name[name].not_applicable)
    assert by_name["integrated_gradients"].completeness_error < 1e-3
    from PIL import Image
    assert Image.open(grid).size[1] > 2 * 96


def test_serve_passes_options_to_propex_serve_run(run_cli, monkeypatch):
    serve = pytest.importorskip("propex.serve")
    calls = []
    monkeypatch.setattr(serve, "run", lambda **kw: calls.append(kw))
    code, out, _ = run_cli("--device", "cpu", "serve", "--port", "8123", "--model", "resnet18", "--weights", "w.pth",
                           "--max-upload-mb", "2")
    assert code == 0
    assert calls == [{"host": "127.0.0.1", "port": 8123, "model_spec": "resnet18", "weights": "w.pth",
                      "device": "cpu", "max_upload_bytes": 2 * 1024 * 1024}]
    assert "http://127.0.0.1:8123" in out

    def refuse(**kw):
        raise ValueError("model spec 'nope' is not 'demo', ...")
    monkeypatch.setattr(serve, "run", refuse)
    code, _, err = run_cli("serve", "--model", "nope")
    assert code == 2 and err.strip() == "error: model spec 'nope' is not 'demo', ..."


def test_batch_is_registered_lazily(run_cli, monkeypatch):
    import propex.cli.app as app
    code, out, _ = run_cli("--help")
    assert code == 0 and "explain" in out
    try:
        import propex.cli.batch  # noqa: F401
    except ModuleNotFoundError:
        assert "batch" not in out.split("Commands:")[1]
    else:
        assert "batch" in out.split("Commands:")[1]
        assert run_cli("batch", "--help")[0] == 0
    monkeypatch.setitem(app._LAZY, "batch", "propex.cli.no_such_module_px")
    code, out, _ = run_cli("--help")
    assert code == 0 and "batch" not in out.split("Commands:")[1]
    code, _, err = run_cli("batch")
    assert code == 2 and "no such command 'batch'" in err


def test_global_options_reach_the_commands(run_cli, digit_dir, tmp_path):
    code, _, err = run_cli("--seed", "3", "--batch-size", "2", "--progress", "explain", "--input", digit_dir,
                           "--method", "smoothgrad", "--option", "smoothgrad.n_samples=4", "--out", tmp_path)
    assert code == 0, err
    manifest = json.loads((tmp_path / "explain.json").read_text())
    assert manifest["methods"]["smoothgrad"]["options"]["seed"] == 3
    loaded = load_model("demo")
    x = loaded.inputs([img for _, img in load_images(digit_dir)])
    expected = propex.explain(loaded.model, x, "smoothgrad", n_samples=4, seed=3).attributions
    with np.load(tmp_path / "attributions.npz") as data:
        assert np.allclose(data["smoothgrad"], expected.numpy(), atol=1e-6)
    code, _, err = run_cli("--device", "cuda:9" if not torch.cuda.is_available() else "nodevice", "explain",
                           "--input", digit_dir, "--method", "saliency", "--out", tmp_path / "dev")
    assert code == 2 and "device" in err and "--device cpu" in err

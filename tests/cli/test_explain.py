"""`propex explain`: files written, NPZ equal to propex.explain, every model spec kind, --method all."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

import propex
from propex.loading import load_images, load_model


def _npz(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def test_explain_demo_writes_heatmaps_grid_npz_equal_to_propex_explain(run_cli, digit_dir, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run_cli("explain", "--model", "demo", "--input", digit_dir, "--method", "saliency",
                                "--method", "ig", "--method", "gradcam", "--option", "ig.n_steps=16",
                                "--out", out)
    assert code == 0, err
    assert f"the grid {out}/grid.png" in stdout and "attributions.npz" in stdout
    names = ["saliency", "integrated_gradients", "gradcam"]
    for stem in ("d0", "d1", "d2"):
        for name in names:
            assert (out / "heatmaps" / f"{stem}_{name}.png").stat().st_size > 100
    from PIL import Image
    assert Image.open(out / "grid.png").size[0] > 4 * 96
    data = _npz(out / "attributions.npz")
    loaded = load_model("demo")
    x = loaded.inputs([img for _, img in load_images(digit_dir)])
    top = loaded.model(x).argmax(1)
    assert np.array_equal(data["targets"], top.numpy())
    assert np.allclose(data["outputs"], loaded.model(x).detach().numpy(), atol=1e-6)
    assert list(data["paths"]) == [str(digit_dir / f"d{i}.png") for i in range(3)]
    options = {"saliency": {}, "integrated_gradients": {"n_steps": 16, "seed": 0}, "gradcam": {}}
    for name in names:
        expected = propex.explain(loaded.model, x, name, target=top, **options[name]).attributions
        assert data[name].shape == tuple(expected.shape)
        assert np.allclose(data[name], expected.numpy(), atol=1e-6), name
    manifest = json.loads((out / "explain.json").read_text())
    assert manifest["methods"]["integrated_gradients"]["options"]["n_steps"] == 16
    assert manifest["failed"] == {} and manifest["skipped"] == {}


def test_explain_torchvision_name_random_weights_small_size(run_cli, rgb_dir, tmp_path):
    pytest.importorskip("torchvision")
    out = tmp_path / "r18"
    code, _, err = run_cli("explain", "--model", "resnet18", "--preprocess", "size=64", "--input", rgb_dir,
                           "--method", "saliency", "--target", "tabby", "--out", out)
    assert code == 0, err
    assert "random weights" in err
    data = _npz(out / "attributions.npz")
    torch.manual_seed(0)          # the CLI draws the random weights after seeding with --seed (0)
    loaded = load_model("resnet18", preprocess={"size": 64})
    x = loaded.inputs([img for _, img in load_images(rgb_dir)])
    assert x.shape == (2, 3, 64, 64) and data["inputs"].shape == (2, 3, 64, 64)
    assert np.allclose(data["inputs"], x.numpy())
    assert data["targets"].tolist() == [loaded.labels.index("tabby")] * 2
    expected = propex.explain(loaded.model, x, "saliency", target=data["targets"].tolist()).attributions
    assert np.allclose(data["saliency"], expected.numpy(), atol=1e-5)


def test_explain_export_file_and_factory_with_method_all(run_cli, rgb_dir, tmp_path, monkeypatch):
    torch.manual_seed(0)
    (tmp_path / "tiny_px_models.py").write_text(
        "import torch\nfrom torch import nn\n"
        "def tiny():\n"
        "    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),\n"
        "                         nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "all"
    code, stdout, err = run_cli("explain", "--model", "tiny_px_models:tiny", "--preprocess", "size=8",
                                "--input", rgb_dir, "--method", "all", "--option", "rise.n_masks=64",
                                "--option", "meaningful_perturbation.iterations=5", "--out", out)
    sys.modules.pop("tiny_px_models", None)
    assert code == 0, err
    skipped_line = next(line for line in stdout.splitlines() if line.startswith("skipped: "))
    assert "pattern_attribution" in skipped_line and "expected_gradients" in skipped_line
    data = _npz(out / "attributions.npz")
    ran = [m for m in propex.methods() if m in data]
    image_methods = [m for m in propex.methods()
                     if propex.get_method(m).family in ("gradient", "propagation", "cam", "perturbation")]
    assert ran == [m for m in image_methods if m not in ("pattern_attribution", "expected_gradients")]
    assert all(data[m].shape[0] == 2 for m in ran)
    manifest = json.loads((out / "explain.json").read_text())
    assert "patterns" in manifest["skipped"]["pattern_attribution"]
    assert "baseline=inputs" in manifest["skipped"]["expected_gradients"]
    assert set(manifest["skipped"]) == {"pattern_attribution", "expected_gradients",
                                        *(m for m in propex.methods() if m not in image_methods)}

    # the same network as a torch.export file: input size read from the program, NPZ = propex.explain
    from tiny_px_models import tiny  # noqa: E402  (still importable from tmp_path)
    model = tiny().eval()
    x = torch.rand(2, 3, 8, 8)
    batch = ({0: torch.export.Dim("batch")},)
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=batch), tmp_path / "tiny.pt2")
    code, _, err = run_cli("explain", "--model", tmp_path / "tiny.pt2", "--input", rgb_dir, "--method",
                           "saliency", "--out", tmp_path / "pt2")
    assert code == 0, err
    data2 = _npz(tmp_path / "pt2" / "attributions.npz")
    xs = torch.from_numpy(data2["inputs"])
    assert xs.shape == (2, 3, 8, 8)
    expected = propex.explain(model, xs, "saliency").attributions
    assert np.allclose(data2["saliency"], expected.numpy(), atol=1e-6)
    assert np.allclose(data["saliency"], data2["saliency"], atol=1e-6)   # factory run: same net, same inputs
    sys.modules.pop("tiny_px_models", None)


def test_a_failing_method_gives_exit_1_and_keeps_the_others(run_cli, digit_dir, tmp_path):
    code, stdout, err = run_cli("explain", "--model", "demo", "--input", digit_dir / "d0.png", "--method",
                                "deconvnet", "--method", "saliency", "--out", tmp_path)
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("error: 1 method(s) failed: deconvnet")
    assert "Traceback" not in err + stdout
    assert set(_npz(tmp_path / "attributions.npz")) >= {"saliency"}
    assert "deconvnet" not in _npz(tmp_path / "attributions.npz")
    assert "SiLU" in json.loads((tmp_path / "explain.json").read_text())["failed"]["deconvnet"]

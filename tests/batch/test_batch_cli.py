"""``propex batch``: a folder of class subfolders into a store; one-line errors."""
from __future__ import annotations

import numpy as np
import pytest

import propex.batch as pb

pytest.importorskip("click")
PIL = pytest.importorskip("PIL.Image")


@pytest.fixture
def image_folder(tmp_path, digits_x):
    root = tmp_path / "images"
    for i in range(6):
        d = root / ("zero" if i < 3 else "one")
        d.mkdir(parents=True, exist_ok=True)
        pixels = (digits_x[i, 0].numpy() / 16 * 255).clip(0, 255).astype(np.uint8)
        PIL.fromarray(pixels, "L").save(d / f"{i}.png")
    return root


def test_cli_batch_writes_store_and_resumes(image_folder, tmp_path, capsys):
    from propex.cli.app import run

    store = str(tmp_path / "cli.zarr")
    args = ["--no-progress", "batch", "--model", "demo", "--data", str(image_folder), "--method", "saliency",
            "--method", "integrated_gradients", "--option", "integrated_gradients.n_steps=4",
            "--metric", "sparseness", "--batch-size", "4", "--chunk-size", "2", "--store", store]
    assert run(args) == 0
    out = capsys.readouterr().out
    assert "6 samples explained" in out and "complete" in out
    st = pb.open_store(store)
    assert st.complete and np.asarray(st["integrated_gradients"]).shape[0] == 6
    assert st.metadata["methods"]["integrated_gradients"]["options"]["n_steps"] == 4
    assert st.labels.tolist() == [0, 0, 0, 1, 1, 1]          # class folders in sorted order: one = 0, zero = 1
    assert set(st.metrics["saliency"]) == {"sparseness"}
    assert run(args) == 0
    assert "0 samples explained" in capsys.readouterr().out


def test_cli_batch_one_line_errors(image_folder, tmp_path, capsys):
    from propex.cli.app import run

    f = tmp_path / "file.zarr"
    f.write_text("x")
    base = ["batch", "--data", str(image_folder), "--method", "saliency"]
    assert run(base + ["--store", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "is a file" in err and "\n" not in err
    assert run(["batch", "--data", str(image_folder), "--method", "salency", "--store", str(tmp_path / "a")]) == 2
    assert "Did you mean" in capsys.readouterr().err
    assert run(["batch", "--data", str(tmp_path / "nothing"), "--method", "saliency", "--store", str(tmp_path / "b")]) == 2
    assert "--data" in capsys.readouterr().err

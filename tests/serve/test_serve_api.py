"""The web app's HTTP API: info, job flow, results against propex.explain, downloads, errors."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

import propex
from propex.models import load_digits_data

METHODS = {"saliency": {}, "integrated_gradients": {"n_steps": 8}, "lrp": {"composite": "epsilon"}}


def _start(client, **data):
    files = data.pop("files", None)
    return client.post("/api/jobs", data=data, files=files)


def test_info_lists_every_method_examples_and_metrics(client):
    info = client.get("/api/info").json()
    assert [m["name"] for m in info["methods"]] == propex.methods()
    assert info["model"].startswith("demo")
    assert info["labels"] == [str(i) for i in range(10)] and info["input_size"] == [16, 16]
    ig = next(m for m in info["methods"] if m["name"] == "integrated_gradients")
    assert ig["options"][0]["name"] == "n_steps" and ig["options"][0]["kind"] == "int"
    lrp = next(m for m in info["methods"] if m["name"] == "lrp")
    assert "epsilon_plus_flat" in lrp["options"][0]["choices"]
    assert {k["name"] for k in info["metrics"]} == {"deletion", "insertion", "sparseness", "complexity"}
    assert len(info["examples"]) == 10
    from PIL import Image
    png = client.get(info["examples"][7]["url"])
    assert png.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(png.content)) as img:
        assert img.size == (160, 160)          # 16x16 enlarged by 10
    assert client.get("/api/examples/10.png").status_code == 404


def test_page_is_self_contained(client):
    html = client.get("/").text
    assert "<script>" in html and "<style>" in html
    assert "http://" not in html and "https://" not in html and "src=\"//" not in html


def test_job_matches_propex_explain_and_metrics(client, wait_done, digits_model):
    x_test, y_test = load_digits_data("test")
    index = int((y_test == 4).nonzero()[0])                      # the example "digit 4"
    r = _start(client, example="4", methods=list(METHODS), metrics=["deletion", "sparseness"],
               options=json.dumps(METHODS), target="")
    assert r.status_code == 202, r.text
    status = wait_done(client, r.json()["id"])
    x = x_test[index:index + 1]
    with torch.no_grad():
        logits = digits_model(x)
    predicted = int(logits.argmax())
    assert status["target"] == predicted and status["top"][0]["index"] == predicted
    assert status["progress"] == {"done": 3, "total": 3}
    probs = torch.softmax(logits, 1)[0]
    assert status["top"][0]["probability"] == pytest.approx(float(probs.max()), rel=1e-5)
    npz = np.load(io.BytesIO(client.get(f"/api/jobs/{status['id']}/attributions.npz").content))
    assert np.allclose(npz["input"], x[0].numpy())
    for name, options in METHODS.items():
        m = status["methods"][name]
        assert m["state"] == "done", m
        expected = propex.explain(digits_model, x, name, target=predicted, **options).attributions
        got = npz[f"attributions_{name}"]
        assert got.shape == (1, 16, 16)
        np.testing.assert_allclose(got, expected[0].numpy(), rtol=1e-5, atol=1e-6)
        deletion = propex.evaluate.deletion(digits_model, x, expected, target=torch.tensor([predicted]), n_steps=32)
        assert m["metrics"]["deletion"] == pytest.approx(float(deletion.auc[0]), rel=1e-4, abs=1e-6)
        sparse = propex.evaluate.sparseness(digits_model, x, expected)
        assert m["metrics"]["sparseness"] == pytest.approx(float(sparse[0]), rel=1e-4)
    assert status["methods"]["integrated_gradients"]["options"] == {"n_steps": 8, "seed": 0}
    assert status["methods"]["lrp"]["options"] == {"composite": "epsilon"}
    # the LRP option reached the method: epsilon differs from the default composite
    default = propex.explain(digits_model, x, "lrp", target=predicted).attributions
    assert not np.allclose(npz["attributions_lrp"], default[0].numpy())


def test_explicit_target_and_downloads(client, wait_done, digits_model):
    r = _start(client, example="1", methods=["saliency", "gradcam"], target="7")
    status = wait_done(client, r.json()["id"])
    assert status["target"] == 7 and status["target_label"] == "7" and status["metrics"] == []
    job = status["id"]
    x = load_digits_data("test")[0][int((load_digits_data("test")[1] == 1).nonzero()[0])][None]
    expected = propex.explain(digits_model, x, "saliency", target=7).attributions[0].numpy()
    one = np.load(io.BytesIO(client.get(f"/api/jobs/{job}/attributions.npz", params={"method": "saliency"}).content))
    assert sorted(one.files) == ["attributions_saliency", "input", "probabilities", "target"]
    assert int(one["target"]) == 7 and one["probabilities"].shape == (10,)
    np.testing.assert_allclose(one["attributions_saliency"], expected, rtol=1e-5, atol=1e-7)
    from PIL import Image
    for name in ("saliency", "gradcam"):
        r = client.get(status["methods"][name]["heatmap_url"])
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(r.content)) as img:
            assert img.size == (160, 160) and img.mode == "RGB"
    with Image.open(io.BytesIO(client.get(f"/api/jobs/{job}/input.png").content)) as img:
        assert img.size == (160, 160)
    assert client.get(f"/api/jobs/{job}/heatmaps/lrp.png").status_code == 404
    assert client.get(f"/api/jobs/{job}/attributions.npz", params={"method": "lrp"}).status_code == 404
    missing = client.get("/api/jobs/doesnotexist")
    assert missing.status_code == 404 and "not found" in missing.json()["detail"]


def test_upload_png_is_preprocessed_like_the_model_expects(client, wait_done, png_bytes, digits_model):
    from sklearn.datasets import load_digits
    digits = load_digits()
    image = digits.images[5]                                    # 8x8, values 0..16, label digits.target[5]
    ink_on_paper = 255 - np.kron(image * 255 / 16, np.ones((8, 8))).round()   # 64x64, dark digit on white
    r = _start(client, methods=["saliency"], files={"file": ("digit.png", png_bytes(ink_on_paper), "image/png")})
    assert r.status_code == 202, r.text
    status = wait_done(client, r.json()["id"])
    assert status["source"] == "upload: digit.png"
    npz = np.load(io.BytesIO(client.get(f"/api/jobs/{status['id']}/attributions.npz").content))
    from propex.models import preprocess_digits
    expected = preprocess_digits(np.round(image * 255 / 16)[None] / 255 * 16)[0].numpy()
    np.testing.assert_allclose(npz["input"], expected, atol=1e-5)
    with torch.no_grad():
        assert status["target"] == int(digits_model(torch.from_numpy(expected)[None]).argmax())


@pytest.mark.parametrize("data, files, message", [
    ({"methods": ["saliency"]}, {"file": ("notes.txt", b"hello, not an image", "text/plain")}, "not an image"),
    ({"methods": ["saliency"]}, {"file": ("empty.png", b"", "image/png")}, "'empty.png' is empty"),
    ({"methods": ["saliency"]}, {"file": ("cut.png", "TRUNCATED", "image/png")}, "not an image"),
    ({"methods": ["saliency"]}, None, "no image"),
    ({"example": "0"}, None, "at least one method"),
    ({"example": "0", "methods": ["saliancy"]}, None, "Did you mean: saliency"),
    ({"example": "0", "methods": ["integrated_gradients"], "options": '{"integrated_gradients": {"n_steps": 0}}'},
     None, "integrated_gradients.n_steps=0 is out of range"),
    ({"example": "0", "methods": ["integrated_gradients"], "options": '{"integrated_gradients": {"steps": 4}}'},
     None, "has no option 'steps'"),
    ({"example": "0", "methods": ["lrp"], "options": '{"lrp": {"composite": "nope"}}'}, None, "is not one of"),
    ({"example": "0", "methods": ["occlusion"], "options": '{"occlusion": {"window": 2, "stride": 3}}'},
     None, "larger than occlusion.window"),
    ({"example": "0", "methods": ["saliency"], "options": "{not json"}, None, "options must be JSON"),
    ({"example": "0", "methods": ["saliency"], "metrics": ["accuracy"]}, None, "metric 'accuracy' is not offered"),
    ({"example": "0", "methods": ["saliency"], "target": "10"}, None, "out of range: the model has 10 classes"),
    ({"example": "0", "methods": ["saliency"], "target": "cat"}, None, "target must be a class index"),
    ({"example": "12", "methods": ["saliency"]}, None, "example='12' does not exist"),
])
def test_bad_requests_get_400_with_a_clear_message(client, png_bytes, data, files, message):
    if files and files["file"][1] == "TRUNCATED":
        files = {"file": ("cut.png", png_bytes(np.zeros((64, 64), np.uint8))[:60], "image/png")}
    r = client.post("/api/jobs", data=data, files=files)
    assert r.status_code == 400, r.text
    assert message in r.json()["detail"]
    assert client.get("/api/info").status_code == 200          # the server is still fine


def test_method_failure_is_reported_per_method(client, wait_done):
    r = _start(client, example="2", methods=["deconvnet", "saliency"])
    status = wait_done(client, r.json()["id"])
    assert status["methods"]["deconvnet"]["state"] == "error"
    assert "UnsupportedOpError" in status["methods"]["deconvnet"]["error"]
    assert status["methods"]["deconvnet"]["heatmap_url"] is None
    assert status["methods"]["saliency"]["state"] == "done"


def test_job_report_is_a_self_contained_html_page(client, wait_done):
    pytest.importorskip("propex.report")
    r = _start(client, example="6", methods=["saliency", "lrp", "deconvnet"], metrics=["sparseness", "complexity"])
    job = wait_done(client, r.json()["id"])
    page = client.get(f"/api/jobs/{job['id']}/report.html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert html.count('class="px-input"') == 1
    assert html.count('class="px-heatmap"') == 2 and 'data-method="lrp"' in html
    assert 'class="px-metrics"' in html and html.count("px-num px-best") == 2   # one per metric row
    assert f"{job['methods']['saliency']['metrics']['sparseness']!r}"[:8] in html
    assert "deconvnet: UnsupportedOpError" in html                             # the failure is noted
    assert "http://" not in html and "https://" not in html
    failed = wait_done(client, _start(client, example="6", methods=["deconvnet"]).json()["id"])
    r = client.get(f"/api/jobs/{failed['id']}/report.html")
    assert r.status_code == 409 and "no method has finished" in r.json()["detail"]

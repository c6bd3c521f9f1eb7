"""Upload size limit, concurrent jobs, a user-given model, and how the server is started."""
from __future__ import annotations

import io
import json
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import propex
from propex.models import load_digits_data


def test_upload_over_the_limit_is_413_with_a_message(client, png_bytes):
    rng = np.random.default_rng(0)
    big = png_bytes(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8))      # noise: incompressible, ~270 kB
    assert len(big) > 200_000
    r = client.post("/api/jobs", data={"methods": ["saliency"]}, files={"file": ("big.png", big, "image/png")})
    assert r.status_code == 413
    assert r.json()["detail"].startswith("Upload too large:")
    assert "limit is 200,000 bytes" in r.json()["detail"]
    small = png_bytes(rng.integers(0, 256, (40, 40), dtype=np.uint8))
    r = client.post("/api/jobs", data={"methods": ["saliency"]}, files={"file": ("small.png", small, "image/png")})
    assert r.status_code == 202, r.text


def test_streamed_body_without_length_is_cut_at_the_limit():
    """A chunked body (no Content-Length) is counted as it arrives and refused once over the
    limit, without reading the rest and without calling the app."""
    from propex.serve.app import UploadLimit
    pulled, sent = [], []

    async def receive():
        pulled.append(1)
        return {"type": "http.request", "body": b"x" * 1000, "more_body": len(pulled) < 100}

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        raise AssertionError("the app must not see a refused body")

    scope = {"type": "http", "method": "POST", "headers": [(b"content-type", b"multipart/form-data; boundary=z")]}
    _run_in_fresh_loop(UploadLimit(app, max_bytes=2500)(scope, receive, send))
    assert len(pulled) == 3                                     # 3000 bytes > 2500: stopped there
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["detail"].startswith("Upload too large: more than 3,000 bytes; the limit is 2,500")

    async def echo(scope, receive, send):                         # under the limit: the body is replayed whole
        body = b""
        while True:
            message = await receive()
            body += message["body"]
            if not message["more_body"]:
                break
        sent.append(body)

    pulled.clear()
    _run_in_fresh_loop(UploadLimit(echo, max_bytes=100_000)(scope, receive, send))
    assert sent[-1] == b"x" * 100_000 and len(pulled) == 100


def test_concurrent_jobs_do_not_mix_results(client, wait_done, digits_model, model_snapshot):
    """Six jobs started at once from six threads, different digits and methods: each result
    equals propex.explain on its own input."""
    snap = model_snapshot(digits_model)
    x_test, y_test = load_digits_data("test")
    first = {c: int((y_test == c).nonzero()[0]) for c in range(10)}
    plans = [(d, m) for d, m in zip(range(6), ["saliency", "integrated_gradients", "lrp", "input_x_gradient",
                                               "gradcam", "smoothgrad"])]
    options = {"integrated_gradients": {"n_steps": 8}, "smoothgrad": {"n_samples": 4}}
    ids: dict[int, str] = {}
    barrier = threading.Barrier(len(plans))

    def start(digit: int, method: str) -> None:
        barrier.wait()
        r = client.post("/api/jobs", data={"example": str(digit), "methods": [method], "metrics": ["sparseness"],
                                           "options": json.dumps(options)})
        assert r.status_code == 202, r.text
        ids[digit] = r.json()["id"]

    threads = [threading.Thread(target=start, args=plan) for plan in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids.values())) == len(plans)
    for digit, method in plans:
        status = wait_done(client, ids[digit])
        assert status["source"] == f"example: digit {digit}"
        x = x_test[first[digit]][None]
        seeded = {"seed": 0} if method in ("integrated_gradients", "smoothgrad") else {}
        expected = propex.explain(digits_model, x, method, target=status["target"],
                                  **options.get(method, {}), **seeded).attributions[0].numpy()
        npz = np.load(io.BytesIO(client.get(f"/api/jobs/{ids[digit]}/attributions.npz").content))
        assert list(npz.files) == [f"attributions_{method}", "input", "target", "probabilities"]
        np.testing.assert_allclose(npz["input"], x[0].numpy())
        np.testing.assert_allclose(npz[f"attributions_{method}"], expected, rtol=1e-5, atol=1e-6)
        assert status["methods"][method]["metrics"]["sparseness"] == pytest.approx(
            float(propex.evaluate.sparseness(digits_model, x, torch.from_numpy(expected)[None])[0]), rel=1e-4)
    snap.assert_unchanged()


class _Tiny(nn.Module):
    """An RGB classifier with 3 classes (random weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def _preprocess(image) -> torch.Tensor:
    arr = np.asarray(image.convert("RGB").resize((12, 12)), dtype=np.float32) / 255
    return torch.from_numpy(arr).permute(2, 0, 1)


def test_a_loaded_model_object_with_sample_photos():
    from fastapi.testclient import TestClient
    from propex.serve import create_app

    torch.manual_seed(0)
    loaded = SimpleNamespace(model=_Tiny().eval(), preprocess=_preprocess, labels=["a", "b"], input_size=(12, 12),
                             name="tiny")
    with TestClient(create_app(loaded)) as c:
        info = c.get("/api/info").json()
        assert info["model"] == "tiny" and info["labels"] == ["a", "b", "class 2"]      # completed to 3 outputs
        assert [e["name"] for e in info["examples"]] == ["china", "flower"]        # sklearn's sample photos
        occlusion = next(m for m in info["methods"] if m["name"] == "occlusion")
        assert [o["default"] for o in occlusion["options"]] == [2, 1]                 # ceil(12 / 8), half of it
        r = c.post("/api/jobs", data={"example": "1", "methods": ["saliency", "expected_gradients"]})
        job = r.json()["id"]
        import time
        for _ in range(400):
            status = c.get(f"/api/jobs/{job}").json()
            if status["state"] == "done":
                break
            time.sleep(0.05)
        assert status["methods"]["saliency"]["state"] == "done"
        # expected gradients uses the two sample photos as references
        assert status["methods"]["expected_gradients"]["state"] == "done", status["methods"]["expected_gradients"]
        from sklearn.datasets import load_sample_images
        from PIL import Image
        x = _preprocess(Image.fromarray(load_sample_images().images[1]))[None]
        npz = np.load(io.BytesIO(c.get(f"/api/jobs/{job}/attributions.npz").content))
        expected = propex.explain(loaded.model, x, "saliency", target=status["target"]).attributions
        np.testing.assert_allclose(npz["attributions_saliency"], expected[0].numpy(), rtol=1e-5, atol=1e-7)


def test_a_model_that_fails_reports_errors_and_the_server_lives_on():
    from fastapi.testclient import TestClient
    from propex.serve import create_app

    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            self.calls += 1
            if self.calls > 1:                                  # after the probe at start-up
                raise RuntimeError("the model is broken")
            return self.lin(x.mean((2, 3)))

    loaded = SimpleNamespace(model=Broken(), preprocess=_preprocess, labels=None, input_size=(12, 12), name="broken")
    with TestClient(create_app(loaded)) as c:
        r = c.post("/api/jobs", data={"example": "0", "methods": ["saliency", "lrp"]})
        import time
        for _ in range(200):
            status = c.get(f"/api/jobs/{r.json()['id']}").json()
            if status["state"] == "done":
                break
            time.sleep(0.05)
        assert status["state"] == "done"
        assert all(m["state"] == "error" and "the model is broken" in m["error"] for m in status["methods"].values())
        assert c.get("/api/info").status_code == 200


def test_run_binds_to_localhost_by_default(monkeypatch):
    import uvicorn

    import propex.serve.app as serve_app
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    monkeypatch.setattr(serve_app, "create_app", lambda *a, **kw: ("app", a, kw))
    propex.serve.run()
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8000
    assert seen["app"] == ("app", ("demo", None, 10 * 1024 * 1024), {"device": "cpu"})
    with pytest.raises(ValueError, match="port must be an int in 0..65535, got 70000"):
        propex.serve.run(port=70000)


def test_create_app_checks_its_arguments():
    from propex.serve import create_app
    with pytest.raises(ValueError, match="max_upload_bytes must be a positive int, got 0"):
        create_app("demo", max_upload_bytes=0)
    with pytest.raises(TypeError, match="without model, preprocess"):
        create_app(object())
    with pytest.raises(ValueError):
        create_app("no_such_model_xyz")


def _run_in_fresh_loop(coro) -> None:
    """``asyncio.run`` in a thread of its own: Playwright's sync API (the browser tests) leaves an
    event loop registered in the main thread, where ``asyncio.run`` refuses to start."""
    import asyncio
    import threading
    errors = []

    def target():
        try:
            asyncio.run(coro)
        except BaseException as err:  # re-raised in the test's thread
            errors.append(err)
    t = threading.Thread(target=target)
    t.start()
    t.join()
    if errors:
        raise errors[0]

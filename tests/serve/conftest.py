"""Fixtures for the web app's API tests: one app on the demo model for the whole directory."""
from __future__ import annotations

import io
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
pytest.importorskip("PIL")
pytest.importorskip("sklearn")


@pytest.fixture(scope="session")
def demo_app():
    from propex.serve import create_app
    return create_app("demo", max_upload_bytes=200_000, max_workers=3)


@pytest.fixture(scope="session")
def client(demo_app):
    from fastapi.testclient import TestClient
    with TestClient(demo_app) as c:
        yield c


def _wait_done(client, job_id: str, timeout: float = 60.0) -> dict:
    """Poll a job until it is done; return its last status."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/api/jobs/{job_id}")
        assert r.status_code == 200, r.text
        status = r.json()
        if status["state"] == "done":
            return status
        assert time.monotonic() < deadline, f"job {job_id} not done after {timeout} s: {status}"
        time.sleep(0.05)


def _png_bytes(array: np.ndarray) -> bytes:
    """A uint8 [H, W] or [H, W, 3] array as PNG bytes."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def wait_done():
    return _wait_done


@pytest.fixture
def png_bytes():
    return _png_bytes

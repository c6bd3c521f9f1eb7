"""The FastAPI application of ``propex serve``.

Routes (all JSON errors are ``{"detail": "<one line>"}``):

==========================================  =================================================
``GET  /``                                  the page (HTML, CSS and JS inline; nothing external)
``GET  /api/info``                          model, labels, methods with options, metrics, examples
``GET  /api/examples/{i}.png``              a bundled example image
``POST /api/jobs``                          start a job (multipart: ``file`` or ``example``,
                                            ``methods`` (repeated), ``options`` (JSON),
                                            ``metrics`` (repeated), ``target``) → 202 ``{"id"}``
``GET  /api/jobs/{id}``                     progress and results (poll until ``state == "done"``)
``GET  /api/jobs/{id}/input.png``           the model's input as the model sees it
``GET  /api/jobs/{id}/heatmaps/{m}.png``    method m's heatmap
``GET  /api/jobs/{id}/attributions.npz``    raw attributions (``?method=m`` for one method)
``GET  /api/jobs/{id}/report.html``         the job as a self-contained HTML report (propex.report)
==========================================  =================================================
"""
# no "from __future__ import annotations": FastAPI reads the route signatures
# annotations, which name classes imported inside create_app
import json
from typing import Annotated, Any

from .catalog import method_catalog, metric_catalog, parse_method_options, parse_metrics
from .images import UploadError, decode_upload
from .jobs import JobStore
from .session import load_served_model

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024


def _fastapi():
    try:
        import importlib

        import fastapi
        importlib.import_module("python_multipart")     # form parsing (python-multipart)
    except ImportError as err:
        raise ImportError("propex serve needs fastapi, uvicorn and python-multipart: "
                          "pip install 'propex[serve]'") from err
    return fastapi


class UploadLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413 before the app parses
    them (by ``Content-Length`` when sent, else by counting the streamed body)."""

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, int(declared))
            return
        # no (or a small) declared length: read the body, counting, and replay it
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                await self._refuse(send, size, at_least=more)
                return
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any, size: int, at_least: bool = False) -> None:
        limit = self.max_bytes
        detail = (f"Upload too large: {'more than ' if at_least else ''}{_mb(size)}; the limit is {_mb(limit)}. "
                  "Choose a smaller image (or start the server with a larger --max-upload-mb).")
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n:,} bytes"


def create_app(model_spec: Any = "demo", weights: str | None = None,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, *, device: str = "cpu",
               max_workers: int = 2, max_jobs: int = 64) -> Any:
    """The web app for ``model_spec`` (see ``propex.loading.load_model``: ``"demo"``, a torchvision
    name, a TorchScript / ``torch.export`` file, ``"module:factory"``; or a loaded-model object with
    ``.model`` and ``.preprocess``).

    Args:
        weights: a state-dict file for the model.
        max_upload_bytes: request bodies above this size get 413 (default 10 MB).
        device: where the model runs.
        max_workers: jobs running at once (model calls are serialised by a lock regardless).
        max_jobs: finished jobs kept for polling and downloads.
    """
    fastapi = _fastapi()
    from fastapi import File, Form, HTTPException, UploadFile
    from fastapi.responses import HTMLResponse, Response

    if not isinstance(max_upload_bytes, int) or isinstance(max_upload_bytes, bool) or max_upload_bytes < 1:
        raise ValueError(f"max_upload_bytes must be a positive int, got {max_upload_bytes!r}")
    served = load_served_model(model_spec, weights=weights, device=device)
    store = JobStore(served, max_workers=max_workers, max_jobs=max_jobs)
    app = fastapi.FastAPI(title="propex", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served, app.state.jobs, app.state.max_upload_bytes = served, store, max_upload_bytes
    app.add_middleware(UploadLimit, max_bytes=max_upload_bytes)
    app.router.add_event_handler("shutdown", store.shutdown)
    catalog = method_catalog(served.input_size)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        from .page import PAGE
        return PAGE

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return {"model": served.name, "input_size": list(served.input_size), "labels": served.labels,
                "methods": catalog, "metrics": metric_catalog(), "max_upload_bytes": max_upload_bytes,
                "examples": [{"id": i, "name": e.name, "url": f"/api/examples/{i}.png"}
                             for i, e in enumerate(served.examples)]}

    @app.get("/api/examples/{index}.png")
    def example_png(index: int) -> Response:
        if not 0 <= index < len(served.examples):
            raise HTTPException(404, f"example {index} does not exist; there are {len(served.examples)}")
        return Response(served.examples[index].png, media_type="image/png")

    @app.post("/api/jobs", status_code=202)
    async def start_job(file: Annotated[UploadFile | None, File()] = None,
                        example: Annotated[str | None, Form()] = None,
                        methods: Annotated[list[str] | None, Form()] = None,
                        options: Annotated[str, Form()] = "{}",
                        metrics: Annotated[list[str] | None, Form()] = None,
                        target: Annotated[str | None, Form()] = None) -> dict[str, Any]:
        try:
            x, source = await _input(file, example)
            try:
                given = json.loads(options or "{}")
            except json.JSONDecodeError as err:
                raise ValueError(f"options must be JSON ({err.msg} at position {err.pos})") from None
            chosen = parse_method_options(list(methods or []), given, served.input_size)
            scores = parse_metrics(list(metrics or []))
            tgt = _target(target)
        except UploadError as err:
            raise HTTPException(400, str(err)) from None
        except (ValueError, TypeError) as err:
            raise HTTPException(400, str(err)) from None
        job = store.submit(x, source, chosen, scores, tgt)
        return {"id": job.id, "url": f"/api/jobs/{job.id}"}

    async def _input(file: Any, example: str | None) -> tuple[Any, str]:
        if file is not None and (file.filename or file.size):
            data = await file.read()
            if len(data) > max_upload_bytes:   # only reachable when the body limit is larger
                raise HTTPException(413, f"Upload too large: {_mb(len(data))}; the limit is {_mb(max_upload_bytes)}.")
            image = decode_upload(data, file.filename or "upload")
            try:
                x = served.preprocess(image)
            except Exception as err:
                raise ValueError(f"the model's preprocessing could not use {file.filename!r}: {err}") from None
            return x, f"upload: {file.filename}"
        if example not in (None, ""):
            try:
                index = int(example)
                chosen = served.examples[index]
                if index < 0:
                    raise IndexError
            except (ValueError, IndexError):
                raise ValueError(f"example={example!r} does not exist; choose 0..{len(served.examples) - 1}") from None
            return chosen.tensor, f"example: {chosen.name}"
        raise ValueError("no image: upload an image file or pick an example")

    def _target(target: str | None) -> int | None:
        if target in (None, "", "predicted"):
            return None
        try:
            value = int(target)
        except ValueError:
            raise ValueError(f"target must be a class index or 'predicted', got {target!r}") from None
        if not 0 <= value < len(served.labels):
            raise ValueError(f"target={value} is out of range: the model has {len(served.labels)} classes")
        return value

    def _job(job_id: str) -> Any:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"job {job_id!r} not found (the server keeps the last {store.max_jobs} jobs)")
        return job

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str) -> dict[str, Any]:
        snap = _job(job_id).snapshot()
        for entry in snap["top"]:
            entry["label"] = served.label(entry["index"])
        snap["target_label"] = None if snap["target"] is None else served.label(snap["target"])
        for name, m in snap["methods"].items():
            m["heatmap_url"] = f"/api/jobs/{job_id}/heatmaps/{name}.png" if m["state"] == "done" else None
        return snap

    @app.get("/api/jobs/{job_id}/input.png")
    def job_input(job_id: str) -> Response:
        return Response(_job(job_id).input_png, media_type="image/png")

    @app.get("/api/jobs/{job_id}/heatmaps/{method}.png")
    def job_heatmap(job_id: str, method: str) -> Response:
        job = _job(job_id)
        with job.lock:
            result = job.results.get(method)
            png = None if result is None else result.png
        if png is None:
            raise HTTPException(404, f"no heatmap for {method!r} in job {job_id} (yet)")
        return Response(png, media_type="image/png",
                        headers={"Content-Disposition": f'inline; filename="{job_id}_{method}.png"'})

    @app.get("/api/jobs/{job_id}/attributions.npz")
    def job_npz(job_id: str, method: str | None = None) -> Response:
        job = _job(job_id)
        if method is not None and method not in job.results:
            raise HTTPException(404, f"job {job_id} has no method {method!r}; it has {', '.join(job.results)}")
        name = f"{job_id}_{method or 'all'}.npz"
        return Response(job.npz(method), media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/api/jobs/{job_id}/report.html", response_class=HTMLResponse)
    def job_report(job_id: str) -> Response:
        job = _job(job_id)
        try:
            page = job.report_html(served)
        except ImportError as err:
            raise HTTPException(501, f"the HTML report needs the viz extra: {err}") from None
        except ValueError as err:
            raise HTTPException(409, str(err)) from None
        return HTMLResponse(page, headers={"Content-Disposition": f'attachment; filename="propex_{job_id}.html"'})

    return app


def run(host: str = "127.0.0.1", port: int = 8000, model_spec: Any = "demo", weights: str | None = None, *,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, device: str = "cpu", log_level: str = "info",
        **app_options: Any) -> None:
    """Serve the app with uvicorn on ``host:port`` (127.0.0.1 by default: only this computer can
    connect; pass ``host="0.0.0.0"`` deliberately to expose it). Blocks until stopped (Ctrl+C)."""
    try:
        import uvicorn
    except ImportError as err:
        raise ImportError("propex serve needs uvicorn: pip install 'propex[serve]'") from err
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in 0..65535, got {port!r}")
    app = create_app(model_spec, weights, max_upload_bytes, device=device, **app_options)
    uvicorn.run(app, host=host, port=port, log_level=log_level)

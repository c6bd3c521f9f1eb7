"""Explanation jobs: one per request, keyed by a random id, run on a small thread pool.

A job explains one image with several methods, one after the other, and scores each
heatmap with the chosen metrics. Its state (per-method progress, results, errors) is
only written under the job's own lock and read as a snapshot, so pollers never see a
half-written result, and jobs never share mutable state (each has its own input tensor and
result dict); the model itself is used under :attr:`ServedModel.lock`.
"""
from __future__ import annotations

import io
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..api import explain
from .catalog import METRICS
from .images import heatmap_png
from .session import ServedModel

TOP_K = 5


@dataclass
class MethodResult:
    """Progress and result of one method within a job."""

    state: str = "queued"             # queued | running | done | error
    seconds: float | None = None
    error: str | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    attributions: np.ndarray | None = None
    png: bytes | None = None


@dataclass
class Job:
    """One request: an input ``x [1, C, H, W]``, the methods with options, the metrics."""

    id: str
    x: Tensor
    source: str
    methods: dict[str, dict[str, Any]]
    metrics: list[str]
    target: int | None
    state: str = "queued"             # queued | running | done
    created: float = field(default_factory=time.time)
    probabilities: Tensor | None = None
    results: dict[str, MethodResult] = field(default_factory=dict)
    input_png: bytes = b""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> dict[str, Any]:
        """The job as JSON-ready data (no arrays), consistent under the job's lock."""
        with self.lock:
            done = sum(r.state in ("done", "error") for r in self.results.values())
            top = []
            if self.probabilities is not None:
                p, idx = self.probabilities.topk(min(TOP_K, self.probabilities.numel()))
                top = [{"index": int(i), "probability": float(v)} for v, i in zip(p, idx)]
            return {
                "id": self.id, "state": self.state, "source": self.source, "target": self.target,
                "progress": {"done": done, "total": len(self.results)},
                "top": top, "metrics": list(self.metrics),
                "methods": {name: {"state": r.state, "seconds": r.seconds, "error": r.error,
                                   "metrics": dict(r.metrics), "options": _jsonable(self.methods[name])}
                            for name, r in self.results.items()},
            }

    def npz(self, method: str | None = None) -> bytes:
        """The raw attributions (``attributions_<method>``), the input and the target as NPZ."""
        with self.lock:
            arrays = {f"attributions_{name}": r.attributions for name, r in self.results.items()
                      if r.attributions is not None and (method is None or name == method)}
            arrays["input"] = self.x[0].numpy()
            arrays["target"] = np.asarray(-1 if self.target is None else self.target)
            if self.probabilities is not None:
                arrays["probabilities"] = self.probabilities.numpy()
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()


    def report_html(self, served: ServedModel) -> str:
        """The job as a self-contained HTML report (``propex.report.build_report``): the input,
        every finished method's heatmap, the metrics table, the run's settings and times."""
        import math
        import os
        import tempfile

        from ..evaluate import Comparison
        from ..report import build_report
        with self.lock:
            done = {name: r for name, r in self.results.items() if r.state == "done"}
            explanations = {name: torch.from_numpy(r.attributions)[None] for name, r in done.items()}
            records = [{"method": name, "metric": METRICS[k].label, "summary": None, "mean": r.metrics.get(k),
                        "std": math.nan, "n": 1, "seconds": None, "explain_seconds": r.seconds,
                        "better": METRICS[k].better, "error": None if r.metrics.get(k) is not None else "undefined"}
                       for name, r in done.items() for k in self.metrics]
            settings = {"source": self.source, **{f"options of {name}": _jsonable(self.methods[name]) for name in done}}
            failed = [f"{name}: {r.error}" for name, r in self.results.items() if r.state == "error"]
            timings = {name: r.seconds for name, r in done.items()}
        if not explanations:
            raise ValueError("no method has finished yet; the report needs at least one heatmap")
        comparison = Comparison(records=records, target=torch.tensor([self.target])) if records else None
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "report.html")
            with served.lock:
                build_report(path, model=served.model, inputs=self.x, explanations=explanations, labels=served.labels,
                             comparison=comparison, timings=timings, settings=settings, notes=failed or None,
                             title=f"propex report: {served.name}")
            with open(path, encoding="utf-8") as fh:
                return fh.read()


def _jsonable(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if isinstance(v, (int, float, str, bool, type(None)))}


class JobStore:
    """Jobs by id, at most ``max_jobs`` kept (the oldest finished ones are dropped first)."""

    def __init__(self, served: ServedModel, max_workers: int = 2, max_jobs: int = 64):
        self.served = served
        self.max_jobs = max_jobs
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="propex-serve")

    def submit(self, x: Tensor, source: str, methods: dict[str, dict[str, Any]], metrics: list[str],
               target: int | None) -> Job:
        job = Job(id=secrets.token_hex(8), x=x.detach().float().cpu().unsqueeze(0).clone(), source=source,
                  methods=methods, metrics=metrics, target=target)
        job.results = {name: MethodResult() for name in methods}
        job.input_png = self.served.input_png(job.x[0])
        with self._lock:
            self._jobs[job.id] = job
            self._evict()
        self._pool.submit(run_job, job, self.served)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _evict(self) -> None:
        excess = len(self._jobs) - self.max_jobs
        for key in [k for k, j in self._jobs.items() if j.state == "done"][:max(0, excess)]:
            del self._jobs[key]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def run_job(job: Job, served: ServedModel) -> None:
    """Explain ``job.x`` with each method in turn, then score it; never raises."""
    with job.lock:
        job.state = "running"
    try:
        probabilities = served.predict(job.x)[0]
        target = int(probabilities.argmax()) if job.target is None else job.target
        with job.lock:
            job.probabilities, job.target = probabilities, target
        for name, options in job.methods.items():
            _run_method(job, served, name, options, target)
    except Exception as err:   # e.g. the model rejects the input: every pending method reports it
        message = _message(err)
        with job.lock:
            for r in job.results.values():
                if r.state in ("queued", "running"):
                    r.state, r.error = "error", message
    finally:
        with job.lock:
            job.state = "done"


def _run_method(job: Job, served: ServedModel, name: str, options: dict[str, Any], target: int) -> None:
    result = job.results[name]
    with job.lock:
        result.state = "running"
    start = time.perf_counter()
    try:
        with served.lock:
            exp = explain(served.model, job.x, name, target=target, **options, **served.extra_options(name))
            attributions = exp.attributions
            if isinstance(attributions, tuple):
                raise ValueError(f"{name} returned attributions for several inputs; the app shows one image")
            seconds = time.perf_counter() - start
            metrics = {m: _score(m, served, job.x, attributions, target) for m in job.metrics}
        png = heatmap_png(attributions[0])
    except Exception as err:
        with job.lock:
            result.state, result.error = "error", _message(err)
            result.seconds = time.perf_counter() - start
        return
    with job.lock:
        result.attributions = attributions[0].detach().float().cpu().numpy()
        result.png, result.metrics, result.seconds, result.state = png, metrics, seconds, "done"


def _score(metric: str, served: ServedModel, x: Tensor, attributions: Tensor, target: int) -> float | None:
    """One metric value for one heatmap (None where the metric is undefined for it)."""
    from .. import evaluate
    spec = METRICS[metric]
    fn = getattr(evaluate, metric)
    try:
        value = fn(served.model, x, attributions, target=torch.tensor([target]), **spec.options)
    except (ValueError, TypeError):
        return None
    if hasattr(value, "auc"):
        value = value.auc
    value = float(value.reshape(-1)[0])
    return value if np.isfinite(value) else None


def _message(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__

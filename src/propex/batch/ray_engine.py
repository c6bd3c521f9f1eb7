"""``engine="ray"``: the same job on a Ray Data actor pool, writing into the same store.

The driver lists the batches whose chunks are not in the manifest and makes a Ray dataset of
their indices (one block per batch). ``map_batches`` sends them to a pool of ``num_workers``
actors (``concurrency=``), each holding one copy of the model (and a GPU with ``num_gpus``).
An actor loads its batch from the (map-style) dataset itself, computes it with the same
``Job.compute`` as the local engine and writes the chunks itself with the store's claim → write →
mark protocol; only small status rows travel back to the driver, which drives the progress bar
and stops at the first error. So the store must be reachable from every worker (a shared file
system, or an fsspec URL such as ``s3://``), and the data must be a map-style ``Dataset``
(picklable; each worker reads only its batches).
"""
from __future__ import annotations

import os
import time
from typing import Any

from .data import DataSource
from .job import BatchError, Job
from .progress import Progress
from .store import StoreError, StoreWriter


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:  # pragma: no cover - exercised only without ray
        raise ImportError("engine='ray' needs Ray Data: pip install 'propex[ray]'") from err
    return ray


class _Explainer:
    """A Ray Data actor: one model copy, computes and writes whole batches."""

    def __init__(self, job: Job, source: DataSource, root: str, metadata: dict[str, Any], torch_threads: int):
        import torch

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.job, self.source = job, source
        self.writer = StoreWriter.attach(root, metadata)

    def __call__(self, rows: dict[str, Any]) -> dict[str, list]:
        from .run import check_batch_shape, claim_batch, write_claimed

        out: dict[str, list] = {"batch": [], "samples": [], "chunks": [], "cpu": [], "error": []}
        for b in rows["batch"]:
            b = int(b)
            c0 = time.process_time()
            n, chunks, error = 0, [], ""
            try:
                chunks, _ = claim_batch(b, self.source, self.writer, set(), wait=True)
                if chunks:
                    batch = self.source.load(b)
                    check_batch_shape(batch, {})
                    try:
                        values = self.job.compute(batch)
                    except BaseException:
                        for c in chunks:
                            self.writer.files.release(c)
                        raise
                    write_claimed(values, b, chunks, self.source, self.writer)
                    n = sum(min(self.writer.chunk_size, self.source.n_samples - c * self.writer.chunk_size)
                            for c in chunks)
            except (BatchError, StoreError, ValueError) as err:
                error = f"{type(err).__name__}:{err}"
            out["batch"].append(b)
            out["samples"].append(n)
            out["chunks"].append(len(chunks))
            out["cpu"].append(time.process_time() - c0)
            out["error"].append(error)
        return out


def run_ray(job: Job, source: DataSource, writer: StoreWriter, run: Any, progress: Any,
            options: dict[str, Any]) -> None:
    from .run import chunks_of

    ray = _ray()
    known = {"address", "num_workers", "num_cpus", "num_gpus", "torch_threads"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"ray_options: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if not source.indexable:
        raise TypeError("engine='ray' needs a map-style Dataset (or a DataLoader over one, or a tensor): each "
                        "worker loads its own batches by index; an iterable of batches runs with engine='local'")
    if writer.files.url is False and not os.path.isabs(writer.root):
        writer.root = os.path.abspath(writer.root)
    workers = int(options.get("num_workers", 2))
    num_cpus = float(options.get("num_cpus", 1))
    device = job.device
    num_gpus = float(options.get("num_gpus", 1 if device is not None and device.type == "cuda" else 0))
    threads = int(options.get("torch_threads", max(1, int(num_cpus))))
    started = False
    if not ray.is_initialized():
        address = options.get("address") or os.environ.get("RAY_ADDRESS") or None
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 **({} if address else {"num_cpus": max(workers, os.cpu_count() or 1)}))
        started = True
    bar = None
    try:
        done = writer.files.done()
        todo = [b for b in range(source.n_batches) if any(c not in done for c in chunks_of(b, source, writer))]
        stored = sum(min(writer.chunk_size, source.n_samples - c * writer.chunk_size) for c in done)
        bar = Progress(source.n_samples, stored, progress, description="explaining (ray)")
        if not todo:
            return
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ds = ray.data.from_items([{"batch": b} for b in todo], override_num_blocks=len(todo))
        out = ds.map_batches(_Explainer, batch_size=1, concurrency=workers, num_cpus=num_cpus, num_gpus=num_gpus,
                             fn_constructor_kwargs={"job": job, "source": source, "root": writer.root,
                                                    "metadata": writer.metadata, "torch_threads": threads})
        t0 = time.perf_counter()
        for row in out.iter_rows():
            if "startup_s" not in run.extra:      # actors started, first batch done: Ray's fixed cost
                run.extra["startup_s"] = time.perf_counter() - t0
                run.extra["first_samples"] = int(row["samples"])
            if row["error"]:
                kind, _, message = str(row["error"]).partition(":")
                exc = {"StoreError": StoreError, "ValueError": ValueError}.get(kind, BatchError)
                raise exc(message)
            run.batches_computed += int(row["chunks"] > 0)
            run.samples_computed += int(row["samples"])
            run.chunks_written += int(row["chunks"])
            run.cpu_seconds += float(row["cpu"])
            run.extra["worker_cpu_seconds"] = run.extra.get("worker_cpu_seconds", 0.0) + float(row["cpu"])
            bar.advance(int(row["samples"]))
        run.extra["steady_s"] = time.perf_counter() - t0 - run.extra.get("startup_s", 0.0)
    finally:
        if bar is not None:
            bar.close()
        if started:
            ray.shutdown()

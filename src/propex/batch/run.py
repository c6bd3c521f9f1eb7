"""``explain_dataset``: stream a dataset through explanation methods into a resumable store."""
from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from .data import Batch, DataSource
from .job import Job
from .progress import Progress
from .store import FORMAT, StoreError, StoreWriter, describe_oserror, local_path

ENGINES = ("local", "ray")


@dataclass
class BatchRun:
    """The summary of one ``explain_dataset`` call.

    ``samples_computed`` / ``seconds`` is this run's throughput; ``samples_skipped`` were already in
    the store (resume) or written by a concurrent process; ``complete`` says whether every chunk of
    the store is now written.
    """

    store: str
    engine: str
    methods: list[str]
    n_samples: int
    n_batches: int
    batches_computed: int = 0
    samples_computed: int = 0
    samples_skipped: int = 0
    chunks_written: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    complete: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        """Samples explained per second in this run (all methods and metrics)."""
        return self.samples_computed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        state = "complete" if self.complete else "INCOMPLETE"
        return (f"{self.samples_computed} samples explained ({self.batches_computed} batches, "
                f"{self.samples_skipped} already stored) with {', '.join(self.methods)} in {self.seconds:.1f} s "
                f"({self.throughput:.1f} samples/s, {self.cpu_seconds:.1f} CPU s) on engine {self.engine!r}; "
                f"store {self.store!r} {state}")

    __str__ = summary


def explain_dataset(model: Any, data: Any, methods: Any, store: Any, *, batch_size: int | None = None,
                    chunk_size: int | None = None, engine: str = "local", resume: bool = True,
                    overwrite: bool = False, metrics: Any = None, target: Any = None, dtype: str = "float32",
                    reduce: str | None = None, device: Any = None, seed: int = 0, n_samples: int | None = None,
                    num_workers: int = 0, progress: Any = True, ray_options: dict[str, Any] | None = None) -> BatchRun:
    """Explain every sample of ``data`` with ``methods`` and write the results into ``store``.

    Args:
        model: the ``nn.Module`` (or callable) to explain; it is left as found.
        data: a map-style ``Dataset`` (samples ``x`` or ``(x, y)``), a ``DataLoader`` (``shuffle=False``),
            a tensor ``[N, ...]``, or an iterable of batches (``x``, ``(x, y)`` or ``{"inputs":, "labels":}``;
            pass ``n_samples`` unless it is a list).
        methods: method names, ``(name, options)`` tuples, or a mapping ``{key: name | (name, options)}``.
        store: a directory path (``"out.zarr"``) or an fsspec URL Zarr can write.
        batch_size: samples per batch (default 64; a DataLoader's own batch size is used).
        chunk_size: samples per store chunk; ``batch_size`` must be a multiple of it (default: = batch_size).
        engine: ``"local"`` (this process) or ``"ray"`` (Ray Data actor pool; see docs/batch.md).
        resume: continue a store written by the same job (same model weights, methods, options, data
            length, chunking); a different job is refused.
        overwrite: delete an existing store first.
        metrics: per-sample metrics of ``propex.evaluate`` (names or ``(name, options)``), stored per method.
        target: None (top class), ``"label"`` (the data's labels), a class index, or a callable
            ``(inputs, labels) -> targets``.
        dtype: ``"float32"`` or ``"float16"`` for the stored attributions.
        reduce: None, ``"sum"`` or ``"abs_sum"`` over the channel axis before storing (metrics see the full map).
        device: where the model runs (a copy is moved there; the given model is not modified).
        progress: True (rich, else tqdm, else log lines), False, or ``"rich"``/``"tqdm"``/``"log"``.
        ray_options: engine="ray" only: ``num_workers`` (actors, default 2), ``num_cpus`` / ``num_gpus``
            per actor, ``address`` (else ``RAY_ADDRESS`` / a local instance), ``torch_threads``.

    Returns:
        a ``BatchRun`` with counts, seconds, CPU seconds and throughput.

    Raises:
        BatchError: a method or metric failed; names the batch (completed chunks are kept).
        StoreError: the store is a file, not writable, full, or holds a different job.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if not isinstance(store, (str, os.PathLike)):
        raise TypeError(f"store must be a path or URL string, got {type(store).__name__}")
    job = Job(model, methods, metrics, target=target, dtype=dtype, reduce=reduce, device=device, seed=seed)
    source = DataSource(data, batch_size, n_samples, num_workers=num_workers)
    chunk_size = source.batch_size if chunk_size is None else chunk_size
    if not isinstance(chunk_size, int) or chunk_size < 1 or source.batch_size % chunk_size:
        raise ValueError(f"chunk_size={chunk_size!r}: the batch size {source.batch_size} must be a multiple of the "
                         f"chunk size so that each chunk is written by one batch (one writer)")
    metadata = build_metadata(job, source, chunk_size)
    writer = StoreWriter(local_path(store), metadata, resume=resume, overwrite=overwrite)
    run = BatchRun(store=writer.root, engine=engine, methods=list(job.keys), n_samples=source.n_samples,
                   n_batches=source.n_batches)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        if engine == "ray":
            from .ray_engine import run_ray
            run_ray(job, source, writer, run, progress, ray_options or {})
        else:
            run_local(job, source, writer, run, progress)
    finally:
        run.seconds = time.perf_counter() - t0
        run.cpu_seconds += time.process_time() - c0
        done = writer.files.done()
        run.complete = len(done) == writer.n_chunks
        stored = sum(min(writer.chunk_size, source.n_samples - c * writer.chunk_size) for c in done)
        run.samples_skipped = max(0, stored - run.samples_computed)
        writer.close()
    return run


def build_metadata(job: Job, source: DataSource, chunk_size: int) -> dict[str, Any]:
    import torch

    from .. import __version__
    from .store import _zarr

    return {
        "format": FORMAT,
        "versions": {"propex": __version__, "torch": torch.__version__, "zarr": _zarr().__version__,
                     "numpy": np.__version__},
        **job.describe(),
        "n_samples": source.n_samples,
        "batch_size": source.batch_size,
        "chunk_size": chunk_size,
        "data": type(source.data).__name__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------- chunk bookkeeping
def chunks_of(b: int, source: DataSource, writer: StoreWriter) -> range:
    per = source.batch_size // writer.chunk_size
    return range(b * per, min((b + 1) * per, writer.n_chunks))


def chunk_values(values: dict[str, np.ndarray], b: int, c: int, source: DataSource,
                 writer: StoreWriter) -> dict[str, np.ndarray]:
    lo = c * writer.chunk_size - b * source.batch_size
    return {k: v[lo:lo + writer.chunk_size] for k, v in values.items()}


def claim_batch(b: int, source: DataSource, writer: StoreWriter, done: set[int], wait: bool) -> tuple[list[int], bool]:
    """Claim the unfinished chunks of batch b. Returns (claimed chunks still to write, busy: some
    chunk is held by another writer — nothing is claimed then)."""
    files = writer.files
    want = [c for c in chunks_of(b, source, writer) if c not in done]
    got = []
    for c in want:
        if wait:
            files.wait_claim(c)
        elif not files.claim(c):
            for g in got:
                files.release(g)
            return [], True
        got.append(c)
    todo = []
    for c in got:                      # finished by someone else since we listed the manifest?
        if files.is_done(c):
            files.release(c)
        else:
            todo.append(c)
    return todo, False


def write_claimed(values: dict[str, np.ndarray], b: int, chunks: list[int], source: DataSource,
                  writer: StoreWriter) -> None:
    try:
        for c in chunks:
            writer.write_chunk(c, chunk_values(values, b, c, source, writer))
    except OSError as err:
        raise StoreError(describe_oserror(err, writer.root) + f" (while writing batch {b})") from err
    finally:
        for c in chunks:
            writer.files.release(c)


# --------------------------------------------------------------------------- the local engine
def run_local(job: Job, source: DataSource, writer: StoreWriter, run: BatchRun, progress: Any) -> None:
    """Compute batch by batch in this process; one background thread writes (bounded: one batch in
    flight), so that writing overlaps the next batch's computation."""
    bar: Progress | None = None
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="propex-store")
    pending: Future | None = None
    first: dict[str, Any] = {}
    try:
        for attempt in range(2):       # second pass: batches another writer held during the first
            done = writer.files.done()
            todo_batches = [b for b in range(source.n_batches) if any(c not in done for c in chunks_of(b, source, writer))]
            if attempt == 0:
                stored = sum(min(writer.chunk_size, source.n_samples - c * writer.chunk_size) for c in done)
                bar = Progress(source.n_samples, stored, progress)
            if not todo_batches:
                break
            if attempt == 1 and source.kind == "iterable" and iter(source.data) is source.data:
                break                  # a one-shot iterator cannot be read twice: resume finishes it
            busy = []
            skip = set(range(source.n_batches)) - set(todo_batches)
            for batch in source.batches(skip):
                check_batch_shape(batch, first)
                chunks, is_busy = claim_batch(batch.index, source, writer, done, wait=attempt == 1)
                if is_busy:
                    busy.append(batch.index)
                    continue
                if not chunks:
                    continue
                try:
                    values = job.compute(batch)
                except BaseException:
                    for c in chunks:
                        writer.files.release(c)
                    raise
                if pending is not None:
                    pending.result()   # bounded memory: at most one batch waits for the writer
                pending = pool.submit(write_claimed, values, batch.index, chunks, source, writer)
                n = sum(min(writer.chunk_size, source.n_samples - c * writer.chunk_size) for c in chunks)
                run.batches_computed += 1
                run.samples_computed += n
                run.chunks_written += len(chunks)
                bar.advance(n)
            if pending is not None:
                pending.result()
                pending = None
            if not busy:
                break
    finally:
        if pending is not None:
            try:
                pending.result()
            except Exception:
                pass                   # the first error (raised above) is the one to report
        pool.shutdown(wait=True)
        if bar is not None:
            bar.close()


def check_batch_shape(batch: Batch, first: dict[str, Any]) -> None:
    shape = tuple(batch.inputs.shape[1:])
    if "shape" not in first:
        first["shape"], first["batch"] = shape, batch.index
    elif shape != first["shape"]:
        raise ValueError(f"batch {batch.index} has inputs of per-sample shape {shape}, batch {first['batch']} had "
                         f"{first['shape']}; every sample must have the same shape")

"""The on-disk store of a batch job: a Zarr group, a manifest of completed chunks, chunk claims.

Layout (``<root>`` is a directory, or any fsspec URL that Zarr can open)::

    <root>/zarr.json                       group attributes: ``propex`` = the job's metadata
    <root>/attributions/<key>              [N, ...] one array per method, chunked by samples
    <root>/targets, outputs, labels        [N], [N, C], [N] (labels only when the data has them)
    <root>/metrics/<key>/<metric>          [N] float64 per-sample metric values
    <root>/.propex/done/<chunk:08d>        the manifest: one marker per completed chunk
    <root>/.propex/store.lock              fcntl lock: metadata and array creation
    <root>/.propex/claims.lock             fcntl byte-range locks: byte c = chunk c is being written

The protocol that makes a killed job resumable and concurrent writers safe:

1. a writer *claims* chunk c (a non-blocking POSIX lock on byte c of ``claims.lock``; the kernel
   drops it when the process dies, SIGKILL included, so a claim is never stale);
2. it re-checks the manifest (someone may have finished c meanwhile) and skips c if done;
3. it writes every array's slice of c (Zarr writes each chunk file by temp file + rename, and a
   chunk slice is exactly one Zarr chunk per array), then the marker ``done/c`` (temp + rename);
4. it releases the claim.

A chunk without a marker is simply written again; because the values of a chunk depend only on
its samples and the (fingerprinted) job configuration, a resumed job produces the same bytes as an
uninterrupted one. On a remote fsspec URL there are no POSIX locks: there a store must have one
writer at a time (the Ray engine hands each chunk to exactly one actor, so one job is fine).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import uuid
from typing import Any, Iterator, Mapping

import numpy as np

FORMAT = "propex-batch/1"
_META_DIR = ".propex"


def _zarr():
    try:
        import zarr
    except ImportError as err:  # pragma: no cover - exercised only without zarr
        raise ImportError("propex.batch stores results with Zarr: pip install 'propex[batch]'") from err
    return zarr


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def local_path(path: Any) -> str:
    path = os.fspath(path)
    return path[len("file://"):] if path.startswith("file://") else path


class StoreError(RuntimeError):
    """The store cannot be written (not a directory, not writable, full, incompatible)."""


class ChunkFiles:
    """Marker files and claims of one store root (local directory or fsspec URL)."""

    def __init__(self, root: str):
        self.root = root
        self.url = is_url(root)
        self._claims_fd: int | None = None
        if self.url:
            import fsspec
            self.fs, self.fs_root = fsspec.core.url_to_fs(root)
        else:
            self.fs, self.fs_root = None, root

    # --------------------------------------------------------------- paths
    def _path(self, *parts: str) -> str:
        return "/".join([self.fs_root.rstrip("/"), _META_DIR, *parts]) if self.url else \
            os.path.join(self.fs_root, _META_DIR, *parts)

    def prepare(self) -> None:
        if self.url:
            self.fs.makedirs(self._path("done"), exist_ok=True)
        else:
            os.makedirs(self._path("done"), exist_ok=True)

    # --------------------------------------------------------------- manifest
    def done(self) -> set[int]:
        """Indices of the completed chunks."""
        try:
            if self.url:
                names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self._path("done"), detail=False)]
            else:
                names = os.listdir(self._path("done"))
        except FileNotFoundError:
            return set()
        return {int(n) for n in names if n.isdigit()}

    def is_done(self, chunk: int) -> bool:
        path = self._path("done", f"{chunk:08d}")
        return self.fs.exists(path) if self.url else os.path.exists(path)

    def mark_done(self, chunk: int, info: Mapping[str, Any]) -> None:
        data = json.dumps(dict(info)).encode()
        path = self._path("done", f"{chunk:08d}")
        if self.url:
            self.fs.pipe_file(path, data)
            return
        atomic_write(path, data)

    # --------------------------------------------------------------- locks
    @contextlib.contextmanager
    def store_lock(self) -> Iterator[None]:
        """Exclusive lock for metadata / array creation (blocking; no-op on URLs)."""
        if self.url:
            yield
            return
        import fcntl
        fd = os.open(self._path("store.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)          # closing drops the lock

    def claim(self, chunk: int) -> bool:
        """Try to claim ``chunk`` for writing (non-blocking). False: another process holds it."""
        if self.url:
            return True
        import fcntl
        if self._claims_fd is None:
            self._claims_fd = os.open(self._path("claims.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(self._claims_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, chunk)
        except OSError as err:
            if err.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise
        return True

    def wait_claim(self, chunk: int) -> None:
        """Block until ``chunk`` can be claimed (its owner finished or died)."""
        if self.url:
            return
        import fcntl
        if self._claims_fd is None:
            self._claims_fd = os.open(self._path("claims.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.lockf(self._claims_fd, fcntl.LOCK_EX, 1, chunk)

    def release(self, chunk: int) -> None:
        if self.url or self._claims_fd is None:
            return
        import fcntl
        fcntl.lockf(self._claims_fd, fcntl.LOCK_UN, 1, chunk)

    def close(self) -> None:
        if self._claims_fd is not None:
            os.close(self._claims_fd)
            self._claims_fd = None


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (readers never see half a file)."""
    tmp = f"{path}.{uuid.uuid4().hex}.partial"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def check_writable(root: str) -> None:
    """Clear errors for a store path that is a file or cannot be written."""
    if is_url(root):
        return
    if os.path.isfile(root):
        raise StoreError(f"store={root!r} is a file; a store is a directory (e.g. 'results.zarr'): "
                         f"give a new path or remove the file")
    probe_dir = root if os.path.isdir(root) else os.path.dirname(os.path.abspath(root))
    while not os.path.exists(probe_dir):
        probe_dir = os.path.dirname(probe_dir)
    if os.path.isfile(probe_dir):
        raise StoreError(f"store={root!r}: {probe_dir!r} is a file, so the store directory cannot be created")
    if not os.access(probe_dir, os.W_OK | os.X_OK):
        raise StoreError(f"store={root!r} is not writable ({probe_dir!r}: permission denied); "
                         f"give a path you can write to")


def describe_oserror(err: OSError, root: str) -> str:
    if err.errno == errno.ENOSPC:
        return (f"the store {root!r} is full (no space left on device); the completed chunks are kept: "
                f"free space and run again with resume=True to finish")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"the store {root!r} cannot be written ({err.strerror}); the completed chunks are kept"
    return f"writing to the store {root!r} failed: {err}; the completed chunks are kept, resume=True continues"


# --------------------------------------------------------------------------- fingerprints
def model_fingerprint(model: Any) -> str:
    """sha256 of the model's class and its ``state_dict`` (names, dtypes, shapes and raw bytes)."""
    import torch

    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    state = model.state_dict() if isinstance(model, torch.nn.Module) else {}
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            h.update(f"{name}={t!r}".encode())
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def canonical(value: Any) -> Any:
    """A JSON-able, deterministic description of an option value (tensors by content hash)."""
    import torch

    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu").contiguous()
        digest = hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"").hexdigest()
        return {"tensor": list(t.shape), "dtype": str(t.dtype), "sha256": digest[:16]}
    if isinstance(value, np.ndarray):
        return canonical(torch.as_tensor(value))
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if callable(value):
        return f"<callable {getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__name__)}>"
    return repr(value)


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- the writer
class StoreWriter:
    """Creates / validates a store and writes chunks by the claim → write → mark protocol."""

    def __init__(self, root: Any, metadata: dict[str, Any], *, resume: bool, overwrite: bool):
        self.root = local_path(root)
        self.metadata = metadata
        self.chunk_size = int(metadata["chunk_size"])
        self.n_samples = int(metadata["n_samples"])
        self.files = ChunkFiles(self.root)
        self._arrays: dict[str, Any] = {}
        check_writable(self.root)
        try:
            self._open(resume, overwrite)
        except OSError as err:
            raise StoreError(describe_oserror(err, self.root)) from err

    @classmethod
    def attach(cls, root: str, metadata: dict[str, Any]) -> "StoreWriter":
        """A writer for a store the driver already created and validated (Ray actors)."""
        self = cls.__new__(cls)
        self.root, self.metadata = root, metadata
        self.chunk_size, self.n_samples = int(metadata["chunk_size"]), int(metadata["n_samples"])
        self.files = ChunkFiles(root)
        self._arrays = {}
        return self

    @property
    def n_chunks(self) -> int:
        return -(-self.n_samples // self.chunk_size)

    def _open(self, resume: bool, overwrite: bool) -> None:
        zarr = _zarr()
        if overwrite:
            self._remove()
        if not self.files.url:
            os.makedirs(self.root, exist_ok=True)
        self.files.prepare()
        with self.files.store_lock():
            try:
                group = zarr.open_group(self.root, mode="r")
                existing = dict(group.attrs).get("propex")
            except (FileNotFoundError, KeyError, ValueError) + _zarr_not_found():
                existing = None
            if existing is None:
                if not self.files.url and any(n != _META_DIR for n in os.listdir(self.root)):
                    raise StoreError(f"store={self.root!r} is a non-empty directory that is not a propex store; "
                                     f"give a new path")
                group = zarr.open_group(self.root, mode="a")
                group.attrs["propex"] = self.metadata
                return
            check_compatible(existing, self.metadata, self.root)
            if not resume and self.files.done():
                raise StoreError(f"store={self.root!r} already holds results of this job; pass resume=True to "
                                 f"finish it or overwrite=True to start again")
            self.metadata = {**existing, **{k: self.metadata[k] for k in ("versions",) if k in self.metadata}}

    def _remove(self) -> None:
        if self.files.url:
            if self.files.fs.exists(self.files.fs_root):
                self.files.fs.rm(self.files.fs_root, recursive=True)
            return
        import shutil
        if os.path.isdir(self.root):
            if not (os.path.exists(os.path.join(self.root, "zarr.json")) or not os.listdir(self.root)):
                raise StoreError(f"overwrite=True refused: {self.root!r} is not a propex store")
            shutil.rmtree(self.root)

    # --------------------------------------------------------------- arrays
    def array(self, name: str, sample_shape: tuple[int, ...], dtype: Any, fill: Any) -> Any:
        """The array ``name`` ``[N, *sample_shape]``, created on first use (under the store lock)."""
        arr = self._arrays.get(name)
        if arr is None:
            zarr = _zarr()
            shape = (self.n_samples, *sample_shape)
            with self.files.store_lock():
                try:
                    arr = zarr.open_array(store=self.root, path=name, mode="r+")
                except (FileNotFoundError, KeyError) + _zarr_not_found():
                    chunks = (self.chunk_size, *sample_shape)
                    if hasattr(zarr, "create_array"):      # zarr 3
                        arr = zarr.create_array(store=self.root, name=name, shape=shape, chunks=chunks, dtype=dtype,
                                                fill_value=fill)
                    else:                                  # zarr 2.16+ (untested here)
                        arr = zarr.open_array(store=self.root, path=name, mode="a", shape=shape, chunks=chunks,
                                              dtype=dtype, fill_value=fill)
            self._arrays[name] = arr
        expected = (self.n_samples, *sample_shape)
        if tuple(arr.shape) != expected or np.dtype(arr.dtype) != np.dtype(dtype):
            raise ValueError(f"{name}: this batch gives per-sample shape {sample_shape} ({np.dtype(dtype)}), "
                             f"the store holds {tuple(arr.shape[1:])} ({arr.dtype}); every sample must have the "
                             f"same shape")
        return arr

    def write_chunk(self, chunk: int, values: Mapping[str, np.ndarray]) -> None:
        """Write one chunk of every array (rows ``chunk*chunk_size`` ..) then its manifest marker."""
        start = chunk * self.chunk_size
        _set_slices([(self._array_for(name, v), v) for name, v in values.items()], start)
        self.files.mark_done(chunk, {"chunk": chunk, "start": start, "stop": start + len(next(iter(values.values()))),
                                     "pid": os.getpid()})

    def _array_for(self, name: str, v: np.ndarray) -> Any:
        fill = np.nan if np.issubdtype(v.dtype, np.floating) else (-1 if np.issubdtype(v.dtype, np.signedinteger) else 0)
        return self.array(name, tuple(v.shape[1:]), v.dtype, fill)

    def close(self) -> None:
        self.files.close()


def _set_slices(arrays: list[tuple[Any, np.ndarray]], start: int) -> None:
    """``arr[start:start+len(v)] = v`` for every pair; with Zarr 3 all in one event-loop round trip
    (one thread hand-off per chunk instead of one per array)."""
    try:
        import asyncio

        from zarr.core.sync import sync
        handles = [arr._async_array for arr, _ in arrays]
    except (ImportError, AttributeError):
        for arr, v in arrays:
            arr[start:start + len(v)] = v
        return

    async def write_all() -> None:
        await asyncio.gather(*[h.setitem(slice(start, start + len(v)), v) for h, (_, v) in zip(handles, arrays)])

    sync(write_all())


def _zarr_not_found() -> tuple[type[BaseException], ...]:
    zarr = _zarr()
    errors = getattr(zarr, "errors", None)
    found = []
    for name in ("GroupNotFoundError", "ArrayNotFoundError", "NodeNotFoundError", "ContainsArrayError",
                 "ContainsGroupError"):
        exc = getattr(errors, name, None) if errors is not None else None
        if isinstance(exc, type):
            found.append(exc)
    return tuple(found)


# the metadata entries that must match for a store to be continued
COMPAT_KEYS = ("format", "model_fingerprint", "methods", "metrics", "target", "n_samples", "chunk_size",
               "batch_size", "dtype", "reduce")


def check_compatible(existing: Mapping[str, Any], new: Mapping[str, Any], root: str) -> None:
    diffs = [k for k in COMPAT_KEYS if existing.get(k) != new.get(k)]
    if not diffs:
        return
    what = []
    for k in diffs:
        if k == "model_fingerprint":
            what.append(f"a different model (weights fingerprint {str(existing.get(k))[:12]} in the store, "
                        f"{str(new.get(k))[:12]} now)")
        else:
            what.append(f"{k}={json.dumps(existing.get(k))} in the store, {json.dumps(new.get(k))} now")
    raise StoreError(f"store={root!r} was written by a different job: " + "; ".join(what) +
                     ". Refusing to mix results: use a new store path (or overwrite=True to replace it)")

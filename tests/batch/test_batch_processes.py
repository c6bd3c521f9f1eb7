"""Real processes: a job killed with SIGKILL mid-run and resumed; two processes writing one store."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import propex.batch as pb
from propex.batch.store import ChunkFiles

from _jobs import job_kwargs, make_dataset
from conftest import HERE, assert_same_store

WORKER = os.path.join(HERE, "_worker.py")


def start_worker(store: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, WORKER, store, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def wait_for_chunks(store: str, n: int, proc: subprocess.Popen, timeout: float = 120) -> set[int]:
    files = ChunkFiles(store)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done = files.done()
        if len(done) >= n:
            return done
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"the worker wrote fewer than {n} chunks in {timeout} s")


def test_sigkill_mid_run_then_resume_equals_clean_run(clean_store, tmp_path):
    store = str(tmp_path / "killed.zarr")
    proc = start_worker(store, "--sleep", "0.02")           # ~0.3 s per batch of 16
    wait_for_chunks(store, 3, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    st = pb.open_store(store)
    before = st.done_chunks
    assert 3 <= len(before) < 12 and not st.complete
    model, data = make_dataset()
    run = pb.explain_dataset(model, data, store=store, progress=False, **job_kwargs())
    assert run.complete and run.samples_computed == 96 - 8 * len(before)
    assert_same_store(pb.open_store(store), clean_store)


def test_two_processes_on_one_store(clean_store, tmp_path):
    store = str(tmp_path / "shared.zarr")
    go = str(tmp_path / "go")
    procs = [start_worker(store, "--sleep", "0.02", "--go", go) for _ in range(2)]
    for p in procs:                     # both imported and waiting: start them together
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    open(go, "w").close()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["complete"] for r in results)
    assert sum(r["chunks_written"] for r in results) == 12      # every chunk written exactly once
    markers = [json.load(open(os.path.join(store, ".propex", "done", f"{c:08d}"))) for c in range(12)]
    assert {m["pid"] for m in markers} <= {p.pid for p in procs}
    assert all(r["chunks_written"] > 0 for r in results), results   # they really ran side by side
    assert_same_store(pb.open_store(store), clean_store)

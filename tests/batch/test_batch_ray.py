"""engine="ray" on a local Ray instance (2 CPUs, one session for the module): the kill-and-resume
test with a Ray driver killed by SIGKILL, then resumed on Ray; the store equals the local clean run."""
from __future__ import annotations

import os
import signal

import pytest

import propex.batch as pb

from _jobs import job_kwargs, make_dataset
from conftest import HERE, assert_same_store
from test_batch_processes import start_worker, wait_for_chunks

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_session():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": HERE}})   # the actors unpickle _jobs.SlowDigits
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()


def test_ray_killed_driver_then_resume_on_ray_equals_local(ray_session, clean_store, tmp_path):
    store = str(tmp_path / "ray.zarr")
    proc = start_worker(store, "--engine", "ray", "--address", ray_session, "--sleep", "0.03")
    wait_for_chunks(store, 2, proc, timeout=240)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = pb.open_store(store).done_chunks
    assert 2 <= len(before) < 12
    model, data = make_dataset()
    run = pb.explain_dataset(model, data, store=store, engine="ray", progress=False,
                             ray_options={"num_workers": 2}, **job_kwargs())
    assert run.complete and run.engine == "ray"
    assert run.samples_computed <= 96 - 8 * len(before)     # chunks an orphaned actor finished are skipped
    assert_same_store(pb.open_store(store), clean_store)
    # a job that cannot run on Ray says why
    with pytest.raises(TypeError, match="map-style Dataset"):
        pb.explain_dataset(model, [data.x[:8]], ["saliency"], str(tmp_path / "it.zarr"), engine="ray", progress=False)

"""explain_dataset + open_store in one process: values, metadata, global explanations, bad input."""
from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest
import torch

import propex
import propex.batch as pb
from propex.batch.store import StoreWriter, model_fingerprint

from _jobs import job_kwargs, make_dataset
from conftest import assert_same_store


def test_values_equal_explain_per_batch(clean_store):
    """Each stored batch equals propex.explain on the same batch; targets/outputs/labels/metrics too."""
    model, data = make_dataset()
    st = clean_store
    assert st.complete and st.n_samples == 96 and st.methods == ["saliency", "integrated_gradients"]
    for lo in (0, 48, 80):
        x = data.x[lo:lo + 16]
        ig = propex.explain(model, x, "integrated_gradients", n_steps=4, seed=0)
        assert np.array_equal(np.asarray(st["integrated_gradients"][lo:lo + 16]), ig.attributions.numpy())
        sal = propex.explain(model, x, "saliency", target=ig.target)
        assert np.array_equal(np.asarray(st["saliency"][lo:lo + 16]), sal.attributions.numpy())
        assert np.array_equal(st.targets[lo:lo + 16], ig.target.numpy())
        assert np.allclose(st.outputs[lo:lo + 16], ig.outputs.numpy())
        sp = propex.evaluate.sparseness(model, x, ig.attributions)
        assert np.allclose(st.metrics["integrated_gradients"]["sparseness"][lo:lo + 16], sp.double().numpy())
    assert np.array_equal(st.labels, data.y.numpy())
    meta = st.metadata
    assert meta["model_fingerprint"] == model_fingerprint(model)
    assert meta["versions"]["torch"] == torch.__version__ and meta["versions"]["propex"] == propex.__version__
    assert meta["methods"]["integrated_gradients"]["options"]["n_steps"] == 4
    assert meta["n_samples"] == 96 and meta["chunk_size"] == 8 and meta["batch_size"] == 16
    assert st.done_chunks == list(range(12))


def test_global_explanation_top_features_and_metric_summary(clean_store):
    st = clean_store
    a = np.asarray(st["saliency"], dtype=np.float64)
    t = st.targets
    g = st.global_explanation("saliency", by="class")
    assert sorted(g) == sorted(set(t.tolist()))
    for cls, mean in g.items():
        assert np.allclose(mean, a[t == cls].mean(axis=0))
    gabs, counts = st.global_explanation("saliency", by="label", stat="mean_abs", return_counts=True)
    for cls, mean in gabs.items():
        sel = st.labels == cls
        assert counts[cls] == sel.sum() and np.allclose(mean, np.abs(a[sel]).mean(axis=0))
    overall = st.global_explanation("saliency", by=None, stat="mean_abs")
    assert np.allclose(overall, np.abs(a).mean(axis=0))
    top = st.top_features("saliency", k=3, by=None)
    flat = np.abs(a).mean(axis=0).reshape(-1)
    assert [v for _, v in top] == pytest.approx(np.sort(flat)[::-1][:3].tolist())
    assert top[0][0] == np.unravel_index(np.argmax(flat), a.shape[1:])
    summary = st.metric_summary()
    sp = st.metrics["saliency"]["sparseness"]
    assert summary["saliency"]["sparseness"]["mean"] == pytest.approx(sp.mean())
    assert summary["saliency"]["sparseness"]["n"] == 96
    with pytest.raises(ValueError, match="stat must be"):
        st.global_explanation("saliency", stat="median")
    with pytest.raises(KeyError, match="not a method of this store"):
        st["lrp"]


def test_resume_is_a_noop_and_other_jobs_are_refused(clean_store, tmp_path):
    model, data = make_dataset()
    path = clean_store.path
    run = pb.explain_dataset(model, data, store=path, progress=False, **job_kwargs())
    assert run.complete and run.samples_computed == 0 and run.samples_skipped == 96
    other = make_dataset()[0]
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    with pytest.raises(pb.StoreError, match="different model"):
        pb.explain_dataset(other, data, store=path, progress=False, **job_kwargs())
    kw = job_kwargs()
    kw["methods"] = ["saliency", ("integrated_gradients", {"n_steps": 8})]
    with pytest.raises(pb.StoreError, match="n_steps"):
        pb.explain_dataset(model, data, store=path, progress=False, **kw)
    with pytest.raises(pb.StoreError, match="resume=True"):
        pb.explain_dataset(model, data, store=path, progress=False, resume=False, **job_kwargs())
    assert_same_store(pb.open_store(path), clean_store)      # nothing was mixed in


def test_iterable_float16_reduce_and_overwrite(tmp_path):
    model, data = make_dataset()
    batches = [(data.x[i:i + 10], data.y[i:i + 10]) for i in range(0, 30, 10)]
    path = str(tmp_path / "it.zarr")
    run = pb.explain_dataset(model, batches, ["saliency"], path, dtype="float16", reduce="abs_sum", progress=False)
    assert run.complete and run.samples_computed == 30
    st = pb.open_store(path)
    a = np.asarray(st["saliency"])
    ref = propex.explain(model, data.x[:30], "saliency").attributions.abs().sum(dim=1)
    assert a.dtype == np.float16 and a.shape == (30, 16, 16)
    assert np.allclose(a, ref.numpy(), rtol=2e-3, atol=1e-4)
    # a generator needs n_samples; with it the job runs
    gen = (b for b in batches)
    with pytest.raises(TypeError, match="n_samples"):
        pb.explain_dataset(model, gen, ["saliency"], str(tmp_path / "g.zarr"), batch_size=10, progress=False)
    run = pb.explain_dataset(model, (b for b in batches), ["saliency"], path, dtype="float16", reduce="abs_sum",
                             n_samples=30, batch_size=10, overwrite=True, progress=False)
    assert run.samples_computed == 30 and pb.open_store(path).complete


def test_bad_arguments(tmp_path):
    model, data = make_dataset()
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True)
    with pytest.raises(ValueError, match="shuffle=False"):
        pb.explain_dataset(model, loader, ["saliency"], str(tmp_path / "a.zarr"), progress=False)
    with pytest.raises(ValueError, match="multiple of the chunk size"):
        pb.explain_dataset(model, data, ["saliency"], str(tmp_path / "a.zarr"), batch_size=16, chunk_size=5)
    with pytest.raises(ValueError, match="engine must be"):
        pb.explain_dataset(model, data, ["saliency"], str(tmp_path / "a.zarr"), engine="dask")
    with pytest.raises(ValueError, match="not a known method"):
        pb.explain_dataset(model, data, ["salency"], str(tmp_path / "a.zarr"))
    with pytest.raises(ValueError, match="dtype must be"):
        pb.explain_dataset(model, data, ["saliency"], str(tmp_path / "a.zarr"), dtype="int8")
    with pytest.raises(FileNotFoundError, match="no batch store"):
        pb.open_store(str(tmp_path / "missing.zarr"))


def test_store_path_is_a_file_or_not_writable(tmp_path):
    model, data = make_dataset()
    f = tmp_path / "file.zarr"
    f.write_text("x")
    with pytest.raises(pb.StoreError, match="is a file"):
        pb.explain_dataset(model, data, ["saliency"], str(f), progress=False)
    if os.geteuid() == 0:          # root writes anywhere a mode allows: use a file system that refuses
        target = "/sys/propex_batch_test.zarr"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = str(ro / "s.zarr")
    with pytest.raises(pb.StoreError, match="not writable|cannot be written"):
        pb.explain_dataset(model, data, ["saliency"], target, progress=False)


def test_store_full_keeps_written_chunks_and_resume_finishes(clean_store, tmp_path, monkeypatch):
    model, data = make_dataset()
    path = str(tmp_path / "full.zarr")
    real = StoreWriter.write_chunk

    def full_at_chunk_5(self, chunk, values):
        if chunk == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, chunk, values)

    monkeypatch.setattr(StoreWriter, "write_chunk", full_at_chunk_5)
    with pytest.raises(pb.StoreError, match="full .*completed chunks are kept"):
        pb.explain_dataset(model, data, store=path, progress=False, **job_kwargs())
    st = pb.open_store(path)
    assert not st.complete and st.done_chunks == [0, 1, 2, 3, 4]
    n = 5 * 8
    assert np.array_equal(np.asarray(st["integrated_gradients"][:n]), np.asarray(clean_store["integrated_gradients"][:n]))
    monkeypatch.setattr(StoreWriter, "write_chunk", real)
    run = pb.explain_dataset(model, data, store=path, progress=False, **job_kwargs())
    assert run.samples_computed == 96 - n and run.complete
    assert_same_store(pb.open_store(path), clean_store)


def test_failing_batch_is_named_and_resume_continues(clean_store, tmp_path):
    model, data = make_dataset()
    path = str(tmp_path / "fail.zarr")
    good = data.x[40].clone()
    data.x[40] = float("nan")            # batch 2 (samples 32..47) is bad
    with pytest.raises(pb.BatchError, match="failed on batch 2") as info:
        pb.explain_dataset(model, data, store=path, progress=False, **job_kwargs())
    assert info.value.batch == 2
    st = pb.open_store(path)
    assert st.done_chunks == [0, 1, 2, 3]
    data.x[40] = good                    # the fix
    run = pb.explain_dataset(model, data, store=path, progress=False, **job_kwargs())
    assert run.samples_computed == 96 - 32
    assert_same_store(pb.open_store(path), clean_store)


def test_inconsistent_shapes_are_refused(tmp_path):
    model = make_dataset()[0]
    x = torch.rand(8, 1, 16, 16)
    batches = [x, torch.rand(8, 1, 12, 12)]
    with pytest.raises(ValueError, match="batch 1 has inputs of per-sample shape"):
        pb.explain_dataset(model, batches, ["saliency"], str(tmp_path / "s.zarr"), progress=False)
    with pytest.raises(ValueError, match="batch 1 has 5 samples"):
        pb.explain_dataset(model, [x, x[:5], x], ["saliency"], str(tmp_path / "t.zarr"), progress=False)


def test_metadata_is_json_and_summary_line(clean_store):
    meta = json.loads(clean_store.metadata_json())
    assert meta["format"] == "propex-batch/1" and len(meta["model_fingerprint"]) == 64


def test_store_summary_html(clean_store, tmp_path):
    html = pb.store_summary_html(clean_store, max_classes=3, top_k=2)
    assert html.startswith('<section class="px-store">') and html.endswith("</section>")
    assert html.count('data-method="saliency" data-class=') == 4       # all samples + 3 classes
    assert html.count('<img class="px-global"') == 8 and html.count("data:image/png;base64,") == 8
    assert "src=\"http" not in html and "<script" not in html
    assert '<table class="px-store-metrics">' in html and "sparseness" in html
    assert clean_store.metadata["model_fingerprint"][:16] in html
    # an empty store (no chunk yet) still renders
    model, data = make_dataset()
    data.x[0] = float("nan")
    with pytest.raises(pb.BatchError):
        pb.explain_dataset(model, data, ["saliency"], str(tmp_path / "e.zarr"), progress=False)
    assert "No chunk written yet" in pb.store_summary_html(str(tmp_path / "e.zarr"))


def test_fsspec_url_store():
    """Any fsspec URL Zarr can open: here the in-process memory file system."""
    model, data = make_dataset()
    url = "memory://propex-batch-test/a.zarr"
    run = pb.explain_dataset(model, data.x[:20], ["saliency"], url, batch_size=8, overwrite=True, progress=False)
    assert run.complete and run.chunks_written == 3
    st = pb.open_store(url)
    assert st.done_chunks == [0, 1, 2]
    assert np.array_equal(np.asarray(st["saliency"][8:16]), propex.explain(model, data.x[8:16], "saliency").attributions.numpy())
    assert pb.explain_dataset(model, data.x[:20], ["saliency"], url, batch_size=8, progress=False).samples_computed == 0

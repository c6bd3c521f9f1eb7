"""Fixtures of the batch tests: the shared job and a clean (uninterrupted) reference store."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _jobs import job_kwargs, make_dataset  # noqa: E402

pytest.importorskip("zarr")


@pytest.fixture(scope="session")
def clean_store(tmp_path_factory):
    """The reference job run once, uninterrupted, in this process (1 torch thread, like the workers)."""
    import propex.batch as pb

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, data = make_dataset()
        path = str(tmp_path_factory.mktemp("clean") / "clean.zarr")
        pb.explain_dataset(model, data, store=path, progress=False, **job_kwargs())
    finally:
        torch.set_num_threads(saved)
    return pb.open_store(path)


def assert_same_store(a, b) -> None:
    """Bit-identical arrays (attributions, targets, outputs, labels, metrics), all chunks done."""
    assert a.complete and b.complete
    assert a.methods == b.methods
    for key in a.methods:
        assert np.array_equal(np.asarray(a[key]), np.asarray(b[key]), equal_nan=True), key
    for name in ("targets", "outputs", "labels"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    ma, mb = a.metrics, b.metrics
    assert ma.keys() == mb.keys()
    for key in ma:
        for metric in ma[key]:
            assert np.array_equal(ma[key][metric], mb[key][metric]), (key, metric)

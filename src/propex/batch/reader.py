r"""Reading a batch store back, and global explanations by aggregation.

A global explanation aggregates local ones (Covert & Lee, CSEP 590B, "propagation-based
explanations": "to use a propagation-based method [globally], we require an aggregation scheme
(e.g., mean of local explanations)"). For the samples S_c whose explained class (or label) is c:

.. math:: \bar a_c = \frac{1}{|S_c|} \sum_{i \in S_c} a_i \quad (\text{stat="mean"}),\qquad
          \overline{|a|}_c = \frac{1}{|S_c|} \sum_{i \in S_c} |a_i| \quad (\text{stat="mean_abs"})

computed chunk by chunk in float64 over the completed chunks only (memory: one chunk plus one
accumulator per class). ``mean`` shows consistent direction (signed evidence that cancels across
samples disappears); ``mean_abs`` shows where the model looks regardless of sign.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from .store import ChunkFiles, _zarr, _zarr_not_found, is_url, local_path

STATS = ("mean", "mean_abs")


class BatchStore:
    """A store written by ``explain_dataset``, opened read-only.

    ``st[key]`` is the Zarr array of a method's attributions ``[N, ...]`` (``np.asarray`` reads it);
    ``st.targets`` ``[N]``, ``st.outputs`` ``[N, C]``, ``st.labels`` (or None), ``st.metrics``
    ``{method: {metric: [N]}}``, ``st.metadata`` (versions, options, weights fingerprint, ...),
    ``st.done`` (``[N]`` bool: sample written), ``st.complete``.
    """

    def __init__(self, path: Any):
        self.path = local_path(path)
        if not is_url(self.path) and not os.path.isdir(self.path):
            raise FileNotFoundError(f"no batch store at {self.path!r} (expected a directory written by "
                                    f"propex.batch.explain_dataset)")
        zarr = _zarr()
        try:
            self._group = zarr.open_group(self.path, mode="r")
            meta = dict(self._group.attrs).get("propex")
        except (FileNotFoundError, KeyError, ValueError) + _zarr_not_found() as err:
            raise ValueError(f"{self.path!r} is not a propex batch store ({err})") from None
        if meta is None:
            raise ValueError(f"{self.path!r} is a Zarr group but not a propex batch store (no 'propex' metadata)")
        self.metadata: dict[str, Any] = meta
        self.methods: list[str] = list(meta["methods"])
        self.n_samples: int = int(meta["n_samples"])
        self.chunk_size: int = int(meta["chunk_size"])
        self._files = ChunkFiles(self.path)

    # --------------------------------------------------------------- arrays
    def _array(self, name: str) -> Any:
        zarr = _zarr()
        try:
            return zarr.open_array(store=self.path, path=name, mode="r")
        except (FileNotFoundError, KeyError) + _zarr_not_found():
            return None

    def __getitem__(self, key: str) -> Any:
        if key not in self.methods:
            raise KeyError(f"{key!r} is not a method of this store; it has {', '.join(self.methods)}")
        arr = self._array(f"attributions/{key}")
        if arr is None:
            raise KeyError(f"{key!r}: no attributions written yet (the job has not completed a chunk)")
        return arr

    def __contains__(self, key: str) -> bool:
        return key in self.methods

    def __iter__(self):
        return iter(self.methods)

    @property
    def targets(self) -> np.ndarray | None:
        arr = self._array("targets")
        return None if arr is None else arr[:]

    @property
    def outputs(self) -> np.ndarray | None:
        arr = self._array("outputs")
        return None if arr is None else arr[:]

    @property
    def labels(self) -> np.ndarray | None:
        arr = self._array("labels")
        return None if arr is None else arr[:]

    @property
    def metrics(self) -> dict[str, dict[str, np.ndarray]]:
        out: dict[str, dict[str, np.ndarray]] = {}
        for key in self.methods:
            for metric in self.metadata.get("metrics", {}):
                arr = self._array(f"metrics/{key}/{metric}")
                if arr is not None:
                    out.setdefault(key, {})[metric] = arr[:]
        return out

    @property
    def done_chunks(self) -> list[int]:
        return sorted(self._files.done())

    @property
    def done(self) -> np.ndarray:
        mask = np.zeros(self.n_samples, dtype=bool)
        for c in self._files.done():
            mask[c * self.chunk_size:(c + 1) * self.chunk_size] = True
        return mask

    @property
    def complete(self) -> bool:
        return len(self._files.done()) == -(-self.n_samples // self.chunk_size)

    def __repr__(self) -> str:
        return (f"BatchStore({self.path!r}, methods={self.methods}, n_samples={self.n_samples}, "
                f"complete={self.complete})")

    # --------------------------------------------------------------- global explanations
    def _groups(self, by: str | None) -> np.ndarray:
        if by is None:
            return np.zeros(self.n_samples, dtype=np.int64)
        if by == "class":
            g = self.targets
        elif by == "label":
            g = self.labels
            if g is None:
                raise ValueError("by='label': this store has no labels (the data yielded inputs only); use by='class'")
        else:
            raise ValueError(f"by must be 'class' (explained class), 'label' or None (all samples), got {by!r}")
        if g is None:
            raise ValueError("the store has no targets yet (no chunk completed)")
        if g.ndim != 1 or not np.issubdtype(g.dtype, np.integer):
            raise ValueError(f"by={by!r} needs one integer class per sample, the store holds {g.dtype} {g.shape}")
        return g

    def global_explanation(self, method: str, by: str | None = "class", stat: str = "mean",
                           return_counts: bool = False) -> Any:
        """Mean (``stat="mean"``) or mean absolute (``"mean_abs"``) attribution per class.

        ``by="class"``: grouped by the explained class (the stored targets); ``"label"``: by the data's
        labels; None: over all samples (returns one array). Only completed chunks count. Returns
        ``{class: array}`` (float64, the per-sample attribution shape) — and ``{class: count}`` too
        with ``return_counts=True``.
        """
        if stat not in STATS:
            raise ValueError(f"stat must be 'mean' or 'mean_abs', got {stat!r}")
        arr = self[method]
        groups = self._groups(by)
        sums: dict[int, np.ndarray] = {}
        counts: dict[int, int] = {}
        for c in self.done_chunks:
            lo, hi = c * self.chunk_size, min((c + 1) * self.chunk_size, self.n_samples)
            block = np.asarray(arr[lo:hi], dtype=np.float64)
            if stat == "mean_abs":
                block = np.abs(block)
            g = groups[lo:hi]
            for cls in np.unique(g):
                sel = g == cls
                key = int(cls)
                part = block[sel].sum(axis=0)
                sums[key] = part if key not in sums else sums[key] + part
                counts[key] = counts.get(key, 0) + int(sel.sum())
        means = {k: sums[k] / counts[k] for k in sorted(sums)}
        if by is None:
            result = means.get(0, np.full(arr.shape[1:], np.nan))
            return (result, counts.get(0, 0)) if return_counts else result
        return (means, {k: counts[k] for k in sorted(counts)}) if return_counts else means

    def top_features(self, method: str, k: int = 10, by: str | None = "class",
                     stat: str = "mean_abs") -> dict[int, list[tuple[tuple[int, ...], float]]] | list:
        """The ``k`` features with the largest global attribution per class: ``{class: [(index, value)]}``
        (index = position in the per-sample attribution shape); a list for ``by=None``."""
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        g = self.global_explanation(method, by=by, stat=stat)

        def top(m: np.ndarray) -> list[tuple[tuple[int, ...], float]]:
            flat = m.reshape(-1)
            order = np.argsort(-flat, kind="stable")[:k]
            return [(tuple(int(i) for i in np.unravel_index(j, m.shape)), float(flat[j])) for j in order]

        return top(g) if by is None else {cls: top(m) for cls, m in g.items()}

    def metric_summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{method: {metric: {mean, std, median, min, max, n}}}`` over the written samples (NaN-aware)."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        done = self.done
        for key, per in self.metrics.items():
            for metric, values in per.items():
                v = values[done]
                v = v[np.isfinite(v)]
                stats = {"n": int(v.size)}
                if v.size:
                    stats.update(mean=float(v.mean()), std=float(v.std()), median=float(np.median(v)),
                                 min=float(v.min()), max=float(v.max()))
                out.setdefault(key, {})[metric] = stats
        return out

    def metadata_json(self) -> str:
        return json.dumps(self.metadata, indent=2, sort_keys=True)


def open_store(path: Any) -> BatchStore:
    """Open a store written by ``explain_dataset`` (read-only)."""
    if isinstance(path, BatchStore):
        return path
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a store path or URL, got {type(path).__name__}")
    return BatchStore(path)

"""Data sources of a batch job: a map-style ``Dataset``, a ``DataLoader`` or an iterable of batches.

Every source becomes a sequence of numbered batches: batch b holds samples
``b*batch_size .. (b+1)*batch_size - 1`` in data order (the last one may be shorter). A batch is
``inputs``, ``(inputs,)``, ``(inputs, labels, ...)`` or a mapping with an ``inputs``/``x``/``image``
entry and optionally ``labels``/``label``/``y``/``target``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor

_INPUT_KEYS = ("inputs", "input", "x", "image", "images", "pixel_values")
_LABEL_KEYS = ("labels", "label", "y", "target", "targets")


@dataclass
class Batch:
    index: int
    inputs: Tensor
    labels: Tensor | None


def split_batch(item: Any, index: int) -> tuple[Tensor, Tensor | None]:
    """(inputs, labels) of one batch as yielded by the data."""
    if isinstance(item, Tensor):
        return item, None
    if isinstance(item, Mapping):
        x = next((item[k] for k in _INPUT_KEYS if k in item), None)
        y = next((item[k] for k in _LABEL_KEYS if k in item), None)
        if x is None:
            raise TypeError(f"batch {index} is a mapping without an inputs entry (one of {', '.join(_INPUT_KEYS)}); "
                            f"it has {', '.join(map(str, item))}")
    elif isinstance(item, (tuple, list)) and item:
        x, y = item[0], (item[1] if len(item) > 1 else None)
    else:
        raise TypeError(f"batch {index} is a {type(item).__name__}; expected a tensor, (inputs, labels) or a "
                        f"mapping with 'inputs' and 'labels'")
    if not isinstance(x, Tensor):
        raise TypeError(f"batch {index}: the inputs are a {type(x).__name__}, expected a tensor [B, ...]")
    if y is not None and not isinstance(y, Tensor):
        y = torch.as_tensor(y)
    if y is not None and (y.dim() == 0 or y.shape[0] != x.shape[0]):
        raise ValueError(f"batch {index}: {x.shape[0]} inputs but labels of shape {tuple(y.shape)}")
    return x, y


def is_map_dataset(data: Any) -> bool:
    return isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__getitem__") and hasattr(data, "__len__") \
        and not isinstance(data, torch.utils.data.IterableDataset)


class DataSource:
    """Numbered batches of ``data``; ``batches(skip)`` yields the batches whose index is not in ``skip``
    (a map-style dataset does not even load them)."""

    def __init__(self, data: Any, batch_size: int | None, n_samples: int | None, num_workers: int = 0):
        from torch.utils.data import DataLoader, SequentialSampler

        self.data = data
        self.num_workers = num_workers
        if isinstance(data, DataLoader):
            if not isinstance(data.sampler, SequentialSampler) and data.batch_sampler is not None:
                raise ValueError("data: the DataLoader shuffles (or uses a custom sampler); a resumable job needs "
                                 "the same sample order every run: use shuffle=False")
            if data.batch_size is None:
                raise ValueError("data: the DataLoader has batch_size=None; give it a batch size")
            if batch_size is not None and batch_size != data.batch_size:
                raise ValueError(f"batch_size={batch_size} differs from the DataLoader's batch_size="
                                 f"{data.batch_size}; leave batch_size out or make them equal")
            batch_size = data.batch_size
            if n_samples is None:
                try:
                    n_samples = len(data.dataset)
                except TypeError:
                    pass
            if data.drop_last and n_samples is not None:
                n_samples = (n_samples // batch_size) * batch_size
            self.kind = "loader"
        elif is_map_dataset(data):
            batch_size = 64 if batch_size is None else batch_size
            n_samples = len(data) if n_samples is None else n_samples
            self.kind = "dataset"
        elif isinstance(data, Tensor):
            batch_size = 64 if batch_size is None else batch_size
            n_samples = data.shape[0] if n_samples is None else n_samples
            self.kind = "tensor"
        elif hasattr(data, "__iter__"):
            if n_samples is None and isinstance(data, (list, tuple)):
                n_samples = sum(split_batch(item, i)[0].shape[0] for i, item in enumerate(data))
            if batch_size is None and isinstance(data, (list, tuple)) and data:
                batch_size = split_batch(data[0], 0)[0].shape[0]
            self.kind = "iterable"
        else:
            raise TypeError(f"data must be a torch Dataset, a DataLoader, a tensor or an iterable of batches, "
                            f"got {type(data).__name__}")
        if n_samples is None:
            raise TypeError("data has no length: pass n_samples= (the number of samples it yields) so that the "
                            "store can be laid out")
        if batch_size is None:
            raise TypeError("data is an iterable of batches: pass batch_size= (the size of every batch but the last)")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"the data has {n_samples!r} samples; expected at least one")
        self.batch_size = batch_size
        self.n_samples = n_samples
        self.n_batches = -(-n_samples // batch_size)

    def batch_range(self, b: int) -> tuple[int, int]:
        return b * self.batch_size, min((b + 1) * self.batch_size, self.n_samples)

    def batches(self, skip: set[int] | frozenset[int] = frozenset()) -> Iterator[Batch]:
        if self.kind == "dataset":
            yield from self._dataset_batches([b for b in range(self.n_batches) if b not in skip])
            return
        if self.kind == "tensor":
            for b in range(self.n_batches):
                if b not in skip:
                    lo, hi = self.batch_range(b)
                    yield Batch(b, self.data[lo:hi], None)
            return
        offset = 0
        for b, item in enumerate(self.data):
            if b >= self.n_batches:
                raise ValueError(f"the data yielded more than n_samples={self.n_samples} samples "
                                 f"(batch {b} starts at sample {offset})")
            x, y = split_batch(item, b)     # skipped batches count too: their size places the next
            lo, hi = self.batch_range(b)
            if offset != lo or x.shape[0] != hi - lo:
                raise ValueError(f"batch {b} has {x.shape[0]} samples (starting at sample {offset}); every batch "
                                 f"but the last must have batch_size={self.batch_size} samples so that batches "
                                 f"map onto store chunks")
            offset += x.shape[0]
            if b not in skip:
                yield Batch(b, x, y)
        if offset != self.n_samples:
            raise ValueError(f"the data yielded {offset} samples, expected n_samples={self.n_samples}")

    def load(self, b: int) -> Batch:
        """Batch ``b`` of a map-style dataset or tensor (the Ray actors load their own batches)."""
        if self.kind == "tensor":
            lo, hi = self.batch_range(b)
            return Batch(b, self.data[lo:hi], None)
        dataset = self.data.dataset if self.kind == "loader" else self.data
        collate = getattr(self.data, "collate_fn", None) if self.kind == "loader" else None
        return next(self._dataset_batches([b], dataset=dataset, collate=collate, workers=0))

    def _dataset_batches(self, todo: list[int], dataset: Any = None, collate: Any = None,
                         workers: int | None = None) -> Iterator[Batch]:
        from torch.utils.data import DataLoader

        if not todo:
            return
        loader = DataLoader(self.data if dataset is None else dataset,
                            batch_sampler=[list(range(*self.batch_range(b))) for b in todo],
                            num_workers=self.num_workers if workers is None else workers,
                            **({"collate_fn": collate} if collate is not None else {}))
        for b, item in zip(todo, loader):
            x, y = split_batch(item, b)
            yield Batch(b, x, y)

    @property
    def indexable(self) -> bool:
        return self.kind in ("dataset", "tensor") or (self.kind == "loader" and is_map_dataset(self.data.dataset))

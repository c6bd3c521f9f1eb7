"""What a batch job computes for one batch: attributions per method, targets, outputs, metrics.

A ``Job`` is the picklable description of the work (the Ray engine ships it to its actors);
``Job.compute(batch)`` turns a batch into the per-array values written to the store. Every value
of a sample depends only on that sample's batch and the job's configuration, which the store's
metadata fingerprints: this is what makes resumed and concurrent runs reproduce an uninterrupted one.
"""
from __future__ import annotations

import copy
import re
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .data import Batch
from .store import canonical, model_fingerprint

DTYPES = {"float32": np.float32, "float16": np.float16}
REDUCE = (None, "sum", "abs_sum")


class BatchError(RuntimeError):
    """A method or metric failed on one batch; the completed chunks are kept (resume continues)."""

    def __init__(self, message: str, batch: int | None = None):
        super().__init__(message)
        self.batch = batch


def store_key(label: str) -> str:
    """A method / metric label as a store path component."""
    key = re.sub(r"[^A-Za-z0-9_.=-]+", "_", label).strip("_.")
    return key or "method"


class Job:
    """The methods, metrics, target and storage options of a batch job, bound to a model."""

    def __init__(self, model: Any, methods: Any, metrics: Any = None, *, target: Any = None,
                 dtype: str = "float32", reduce: str | None = None, device: Any = None, seed: int = 0):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if reduce not in REDUCE:
            raise ValueError(f"reduce must be None, 'sum' or 'abs_sum' (over the channel axis 1), got {reduce!r}")
        if not (target is None or target == "label" or (isinstance(target, int) and not isinstance(target, bool))
                or callable(target)):
            raise TypeError(f"target must be None (top class), 'label' (the data's labels), a class index or a "
                            f"callable (inputs, labels) -> targets, got {target!r}")
        if not isinstance(seed, int):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        self.model = model
        self.raw_methods = methods
        self.raw_metrics = metrics
        self.target = target
        self.dtype = dtype
        self.reduce = reduce
        self.device = None if device is None else torch.device(device)
        self.seed = seed
        self._resolve()

    # --------------------------------------------------------------- pickling (Ray actors)
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("methods", "metrics", "_instances", "_run_model"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._resolve()

    def _resolve(self) -> None:
        from ..evaluate.compare import _resolve_methods, _resolve_metrics

        self.methods = _resolve_methods(self.model, self.raw_methods, self.seed)
        self.metrics = [] if self.raw_metrics in (None, [], ()) else _resolve_metrics(self.raw_metrics, self.seed)
        self._instances: dict[str, Any] = {}
        self._run_model = self.model
        if self.device is not None and isinstance(self.model, torch.nn.Module):
            first = next(iter(self.model.parameters()), None)
            if first is not None and first.device != self.device:   # a copy: the user's model is left as found
                self._run_model = copy.deepcopy(self.model).to(self.device)
        keys = [store_key(m.label) for m in self.methods]
        if len(set(keys)) != len(keys):
            raise ValueError(f"methods: labels {[m.label for m in self.methods]} give clashing store keys {keys}; "
                             f"name them with a mapping {{'key': (method, options)}}")
        self.keys = dict(zip(keys, self.methods))
        self.metric_keys = {store_key(k.label): k for k in self.metrics}

    # --------------------------------------------------------------- description
    def describe(self) -> dict[str, Any]:
        """The configuration entries of the store metadata (compared on resume)."""
        return {
            "model_fingerprint": model_fingerprint(self.model),
            "model_class": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
            "methods": {k: {"label": m.label, "method": m.method if isinstance(m.method, str) else canonical(m.method),
                            "options": canonical(m.options)} for k, m in self.keys.items()},
            "metrics": {k: {"label": s.label, "metric": s.name, "options": canonical(s.options)}
                        for k, s in self.metric_keys.items()},
            "target": canonical(self.target),
            "dtype": self.dtype,
            "reduce": self.reduce,
        }

    # --------------------------------------------------------------- compute
    def _instance(self, key: str) -> Any:
        from ..api import get_method
        from ..base import Method

        inst = self._instances.get(key)
        if inst is None:
            spec = self.keys[key]
            if isinstance(spec.method, str) or (isinstance(spec.method, type) and issubclass(spec.method, Method)):
                inst = get_method(spec.method)(self._run_model, **spec.options)
            else:
                inst = False
            self._instances[key] = inst
        return inst

    def _batch_target(self, batch: Batch, x: Tensor) -> Any:
        t = self.target
        if t == "label":
            if batch.labels is None:
                raise ValueError(f"target='label' but batch {batch.index} has no labels; yield (inputs, labels)")
            return batch.labels.to(x.device)
        if callable(t):
            return t(x, batch.labels)
        return t

    def compute(self, batch: Batch) -> dict[str, np.ndarray]:
        """The values of every store array for this batch (rows in batch order)."""
        device = self.device or _model_device(self._run_model)
        x = batch.inputs.to(device) if device is not None else batch.inputs
        n = x.shape[0]
        target = self._batch_target(batch, x)
        out: dict[str, np.ndarray] = {}
        outputs = targets = None
        for key, spec in self.keys.items():
            try:
                inst = self._instance(key)
                if inst:
                    exp = inst.explain(x, target)
                    a = exp.attributions
                    if outputs is None:
                        outputs, targets = exp.outputs, exp.target
                else:
                    a = spec.explainer(self._run_model, x, target)
            except Exception as err:
                raise BatchError(f"method {spec.label!r} failed on batch {batch.index}: {type(err).__name__}: {err}",
                                 batch.index) from err
            if isinstance(a, tuple):
                if len(a) != 1:
                    raise BatchError(f"method {spec.label!r} returned {len(a)} attribution tensors on batch "
                                     f"{batch.index}; batch jobs store one input tensor", batch.index)
                a = a[0]
            if targets is not None and target is None:
                target = targets            # the same explained class for every method
            for mkey, k in self.metric_keys.items():
                out[f"metrics/{key}/{mkey}"] = self._metric(k, spec, x, a.detach(), target, batch.index, n)
            a = a.detach()
            if self.reduce == "sum":
                a = a.sum(dim=1)
            elif self.reduce == "abs_sum":
                a = a.abs().sum(dim=1)
            out[f"attributions/{key}"] = a.to("cpu", torch.float32).numpy().astype(DTYPES[self.dtype], copy=False)
        if outputs is None:
            from ..model_call import normalize_output
            with torch.no_grad():          # only callables were given: one plain forward pass
                outputs = normalize_output(self._run_model(x))
        if targets is None:
            if isinstance(target, Tensor):
                targets = target
            elif isinstance(target, int):
                targets = torch.full((n,), target)
            else:
                targets = outputs.reshape(n, -1).argmax(dim=1)
        if targets.dim() != 1:
            raise BatchError(f"batch {batch.index}: targets of shape {tuple(targets.shape)}; batch jobs explain "
                             f"one target per sample", batch.index)
        out["targets"] = targets.detach().to("cpu", torch.int64).numpy()
        out["outputs"] = outputs.detach().to("cpu", torch.float32).numpy()
        if batch.labels is not None:
            labels = batch.labels.detach().cpu()
            out["labels"] = labels.numpy().astype(np.int64 if not labels.is_floating_point() else np.float32)
        return out

    def _metric(self, k: Any, spec: Any, x: Tensor, a: Tensor, target: Any, b: int, n: int) -> np.ndarray:
        from ..evaluate.compare import _call_metric, _per_sample

        try:
            values, _ = _per_sample(_call_metric(k, spec, self._run_model, x, a, target), k, n)
        except Exception as err:
            raise BatchError(f"metric {k.label!r} of method {spec.label!r} failed on batch {b}: "
                             f"{type(err).__name__}: {err}", b) from err
        values = values.reshape(-1).numpy().astype(np.float64)
        return np.broadcast_to(values, (n,)).copy()


def _model_device(model: Any) -> torch.device | None:
    if isinstance(model, torch.nn.Module):
        p = next(iter(model.parameters()), None)
        return None if p is None else p.device
    return None


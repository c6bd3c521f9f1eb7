"""The perturbation engine: the model's target scores on many perturbed copies of x, in chunks.

Every perturbation method (occlusion, feature ablation, RISE, meaningful perturbation's
evaluation, LIME, KernelSHAP, Score-CAM) and every faithfulness metric evaluates the model
through this module, which is the one place that loops over perturbations.

Contract (methods use only this API)::

    engine = PerturbationEngine(model, batch_size=None, memory_budget=None)
    prep = engine.prepare(x, target, forward_kwargs)       # one no-grad forward on x
    prep.inputs, prep.was_tuple, prep.forward_kwargs, prep.outputs, prep.target, prep.n
    prep.target_values(output_transform=None)               # [N, T] explained scalars on x
    scores = engine.evaluate(prep, K, perturb, output_transform=None)    # [N, K, T]
    scores = engine.evaluate_masks(prep, masks, baseline)   # convenience: b + m * (x - b)
    engine.scores(prep, inputs, s, output_transform)        # [B, T] on one given chunk
    engine.chunk(prep, n_rows)                              # rows per forward pass
    resolved_baseline(spec, prep, generator)                # a baseline spec as tensors shaped like x

``evaluate`` walks the flat index ``j = k * N + s`` (k-major: perturbation k of sample s,
as in the gradient engine) in chunks of at most ``batch_size`` rows, or of as many rows as
fit ``memory_budget``. For each chunk it calls ``perturb(k, s)`` with the chunk's
LongTensors ``k`` and ``s`` (same length B, on x's device), which returns the chunk's
perturbed inputs (one ``[B, ...]`` tensor per input tensor); it runs the model once on
them (per-sample ``forward_kwargs`` tensors indexed by ``s``), applies ``output_transform``
(e.g. softmax) to the outputs and selects the target scalars ``[B, T]`` with
``prep.target`` (every target form of ``propex.targets``). Everything runs under
``torch.no_grad()`` (methods that optimise a mask call ``ModelCall`` themselves). The
scores are written into a preallocated buffer by slice, so the loop has no host
synchronisation; results do not depend on the chunk size.

Chunk size. With ``batch_size`` given, chunks have at most that many rows. Otherwise
``prepare`` measures, during its own forward pass on x (no extra pass), the peak bytes of
live tensors derived from x, per input row (a ``TorchDispatchMode`` follows every op;
tensors derived only from parameters, such as a transposed weight, are not counted because
they do not grow with the batch), and a chunk holds at most
``memory_budget // (peak per row + input row)`` rows. The default budget is 2 GiB on
accelerators and 32 MiB on CPU, where large batches are slower per row once activations
outgrow the caches (and glibc returns big blocks to the OS after every call). Measured with
one thread, CPU time of resnet18 224² forward passes: on a quiet machine chunks of 4-10 rows
are within 2-4 % of each other and 49 rows at once is 1.6x slower; on the busy shared machine
4 rows are 7-9 % faster than 8 (docs/performance.md). 32 MiB gives resnet18 4 rows (7.6 MiB
per row), resnet50 2, mobilenet_v3_small 10, vgg16 1, the digits CNN about 500. The rows
are then spread evenly over the chunks (49 rows with a limit of 10 run as 10, 10, 10, 10, 9).
If the model cannot run under the dispatch mode, it is run plainly and 16 input rows' worth
of bytes per row is assumed.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from ..baselines import resolve_baseline
from ..batching import check_batch_size, parse_memory
from ..inputs import as_input_tuple, check_forward_kwargs, index_kwargs
from ..model_call import ModelCall
from ..targets import TargetSelector, resolve_target

PerturbFn = Callable[[Tensor, Tensor], Sequence[Tensor]]
MaskFn = Callable[[Tensor, Tensor], Tensor]

CPU_MEMORY_BUDGET = 32 * 1024**2      # default budget on CPU (bytes of live forward tensors per chunk)


@dataclass
class PreparedPerturbation:
    """What one explanation call knows after the forward pass on x."""

    inputs: tuple[Tensor, ...]           # x as a tuple (propex.inputs.as_input_tuple), detached
    was_tuple: bool
    forward_kwargs: dict[str, Any]
    outputs: Tensor                      # model output on x, detached
    target: TargetSelector               # from propex.targets.resolve_target
    bytes_per_row: int = 0               # measured peak live bytes of the forward pass per input row
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.inputs[0].shape[0]

    @property
    def device(self) -> torch.device:
        return self.inputs[0].device

    def target_values(self, output_transform: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """``[N, T]`` explained scalars on x (after ``output_transform``, if given)."""
        outputs = self.outputs if output_transform is None else output_transform(self.outputs)
        return self.target.select(outputs, torch.arange(self.n, device=outputs.device)).detach()


class PerturbationEngine:
    """Evaluates the model's target scores on perturbed copies of x in memory-bounded chunks.

    Args:
        model: an ``nn.Module`` or a callable returning ``[N, ...]``.
        batch_size: most rows (perturbed samples) per forward pass; ``None``: from the budget.
        memory_budget: bytes (or ``"512MB"``) of live forward tensors per chunk, used when
            ``batch_size`` is None (default 2 GiB, 32 MiB on CPU).
    """

    def __init__(self, model: Any, *, batch_size: int | None = None, memory_budget: Any = None):
        self.call = ModelCall(model)
        self.model = model
        self.batch_size = check_batch_size(batch_size)
        self.memory_budget = parse_memory(memory_budget)
        self.budget_given = memory_budget is not None

    # ------------------------------------------------------------------ preparation
    def prepare(self, x: Any, target: Any, forward_kwargs: Mapping[str, Any] | None = None) -> PreparedPerturbation:
        """One no-grad forward pass on x: outputs, target resolution and (without ``batch_size``)
        the memory each row of a chunk needs, measured on this same pass."""
        inputs, was_tuple = as_input_tuple(x)
        kwargs = check_forward_kwargs(forward_kwargs)
        per_row = 0
        with torch.no_grad():
            if self.batch_size is None:
                outputs, per_row = self._measured_first_call(inputs, kwargs)
            else:
                outputs = self.call.first_call(inputs, kwargs)
        outputs = outputs.detach()
        selector = resolve_target(target, outputs)
        return PreparedPerturbation(inputs, was_tuple, kwargs, outputs, selector, bytes_per_row=per_row)

    def _measured_first_call(self, inputs: tuple[Tensor, ...], kwargs: dict[str, Any]) -> tuple[Tensor, int]:
        n = inputs[0].shape[0]
        row_bytes = sum(t[:1].numel() * t.element_size() for t in inputs)
        tracker = _ForwardMemory(inputs)
        try:
            with tracker:
                outputs = self.call.first_call(inputs, kwargs)
        except Exception:
            # the model may not run under a dispatch mode (custom tensor subclasses, compiled code):
            # run it plainly (raising the model's own error, if that is what it was) and estimate
            outputs = self.call.first_call(inputs, kwargs)
            return outputs, 16 * row_bytes
        return outputs, max(1, math.ceil(tracker.peak / n))

    # ------------------------------------------------------------------ chunking
    def chunk(self, prep: PreparedPerturbation, n_rows: int) -> int:
        """Rows per forward pass for ``n_rows`` rows in all (before spreading them evenly)."""
        if n_rows < 1:
            return 1
        if self.batch_size is not None:
            return max(1, min(self.batch_size, n_rows))
        on_cpu = prep.device.type == "cpu"
        budget = self.memory_budget
        if on_cpu and not self.budget_given:
            budget = min(budget, CPU_MEMORY_BUDGET)
        row_bytes = sum(t[:1].numel() * t.element_size() for t in prep.inputs)
        per_row = max(1, prep.bytes_per_row + row_bytes)   # the forward's tensors + the perturbed input row
        return max(1, min(n_rows, budget // per_row))

    # ------------------------------------------------------------------ evaluation
    def scores(self, prep: PreparedPerturbation, inputs: Sequence[Tensor], sample_idx: Tensor,
               output_transform: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """Target scalars ``[B, T]`` of the model on one chunk of inputs (rows of samples ``sample_idx``)."""
        kwargs = index_kwargs(prep.forward_kwargs, prep.n, sample_idx) if prep.forward_kwargs else {}
        with torch.no_grad():
            out = self.call(tuple(inputs), kwargs)
            if output_transform is not None:
                out = output_transform(out)
            return prep.target.select(out, sample_idx)

    def evaluate(self, prep: PreparedPerturbation, n_perturbations: int, perturb: PerturbFn, *,
                 output_transform: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """Target scores of K = ``n_perturbations`` perturbed copies of every sample: ``[N, K, T]``.

        The flat index ``j = k * N + s`` is walked in chunks; ``perturb(k, s)`` gets the chunk's
        LongTensors ``k`` and ``s`` and returns its perturbed inputs, one ``[B, ...]`` tensor per
        input tensor (a single tensor is accepted for single-tensor x). ``output_transform`` is
        applied to the model outputs before the target is selected. The result does not depend
        on the chunk size.
        """
        if isinstance(n_perturbations, bool) or not isinstance(n_perturbations, int) or n_perturbations < 0:
            raise ValueError(f"n_perturbations must be an int >= 0, got {n_perturbations!r}")
        n, k_total = prep.n, n_perturbations
        total = n * k_total
        if total == 0:
            values = self.scores(prep, prep.inputs, torch.arange(n, device=prep.device), output_transform)
            return values.new_empty((n, 0, values.shape[1]))
        device = prep.device
        out: Tensor | None = None
        checked = False
        for start, stop in balanced_ranges(total, self.chunk(prep, total)):
            j = torch.arange(start, stop, device=device)
            k = torch.div(j, n, rounding_mode="floor")
            s = j - k * n
            rows = perturb(k, s)
            rows = (rows,) if isinstance(rows, Tensor) else tuple(rows)
            if not checked:
                _check_rows(rows, prep, stop - start)
                checked = True
            values = self.scores(prep, rows, s, output_transform)
            if out is None:
                out = values.new_empty((total, values.shape[1]))
            out[start:stop] = values
        assert out is not None
        return out.reshape(k_total, n, -1).transpose(0, 1).contiguous()

    def evaluate_masks(self, prep: PreparedPerturbation, masks: Tensor | MaskFn | Sequence[Tensor | MaskFn],
                       baseline: Any = None, *, per_sample: bool = False, n_masks: int | None = None,
                       output_transform: Callable[[Tensor], Tensor] | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        """Scores ``[N, K, T]`` of ``b + m_k * (x - b)`` for K masks (1 keeps x, 0 puts the baseline).

        ``masks``: a tensor ``[K, ...]`` broadcastable to one sample (shared by all samples), or
        with ``per_sample=True`` ``[N, K, ...]``; or a callable ``(k, s) -> [B, ...]`` giving the
        masks of one chunk (then ``n_masks`` = K is required). For tuple inputs, a tuple with one
        mask (tensor or callable, same K) per input tensor. ``baseline``: any baseline spec of
        ``propex.baselines`` (zeros by default), or already resolved tensors shaped like x.
        """
        inputs = prep.inputs
        if prep.was_tuple and isinstance(masks, (tuple, list)):
            if len(masks) != len(inputs):
                raise ValueError(f"masks: x has {len(inputs)} tensors but {len(masks)} masks were given")
            per_input = list(masks)
        else:
            per_input = [masks] * len(inputs)
        counts = set()
        getters: list[MaskFn] = []
        for i, (m, x) in enumerate(zip(per_input, inputs)):
            label = f"masks[{i}]" if prep.was_tuple else "masks"
            if isinstance(m, Tensor):
                counts.add(_mask_count(m, x, per_sample, label))
                getters.append(_tensor_masks(m, x, per_sample))
            elif callable(m):
                getters.append(m)
            else:
                raise TypeError(f"{label} must be a tensor or a callable (k, s) -> masks, got {type(m).__name__}")
        if n_masks is not None:
            counts.add(n_masks)
        if len(counts) != 1:
            raise ValueError("masks: pass n_masks=K with callable masks" if not counts
                             else f"masks: every input tensor needs the same number of masks, got {sorted(counts)}")
        k_total = counts.pop()
        bases = resolved_baseline(baseline, prep, generator)

        def perturb(k: Tensor, s: Tensor) -> tuple[Tensor, ...]:
            rows = []
            for get, x, b in zip(getters, inputs, bases):
                xs, bs = x.index_select(0, s), b.index_select(0, s)
                rows.append(bs + get(k, s).to(xs.dtype) * (xs - bs))
            return tuple(rows)

        return self.evaluate(prep, k_total, perturb, output_transform=output_transform)


# --------------------------------------------------------------------------- helpers
def balanced_ranges(total: int, limit: int) -> list[tuple[int, int]]:
    """``(start, stop)`` chunks of at most ``limit`` covering ``range(total)``, of near-equal sizes."""
    n_chunks = max(1, -(-total // max(1, limit)))
    base, extra = divmod(total, n_chunks)
    out, start = [], 0
    for i in range(n_chunks):
        stop = start + base + (1 if i < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def resolved_baseline(spec: Any, prep: PreparedPerturbation, generator: torch.Generator | None = None,
                      name: str = "baseline") -> tuple[Tensor, ...]:
    """A baseline spec of ``propex.baselines`` as tensors shaped like ``prep.inputs`` (already
    resolved tuples of such tensors pass through)."""
    if (isinstance(spec, tuple) and len(spec) == len(prep.inputs)
            and all(isinstance(b, Tensor) and b.shape == x.shape for b, x in zip(spec, prep.inputs))
            and (prep.was_tuple or len(spec) == 1)):
        return tuple(b.to(device=x.device, dtype=x.dtype) for b, x in zip(spec, prep.inputs))
    return resolve_baseline(spec, prep.inputs, prep.was_tuple, generator, name=name)


def _check_rows(rows: tuple[Tensor, ...], prep: PreparedPerturbation, b: int) -> None:
    if len(rows) != len(prep.inputs) or not all(isinstance(r, Tensor) for r in rows):
        raise ValueError(f"perturb(k, s) must return {len(prep.inputs)} tensor(s), one per input tensor; "
                         f"got {len(rows)}")
    for i, (r, x) in enumerate(zip(rows, prep.inputs)):
        if r.shape[0] != b or r.shape[1:] != x.shape[1:]:
            raise ValueError(f"perturb(k, s) returned shape {tuple(r.shape)} for input {i}; expected "
                             f"{(b, *x.shape[1:])} (one row per (k, s) pair)")


def _mask_count(m: Tensor, x: Tensor, per_sample: bool, label: str) -> int:
    lead = 2 if per_sample else 1
    if m.dim() < lead:
        raise ValueError(f"{label} of shape {tuple(m.shape)} needs a leading "
                         f"{'[N, K]' if per_sample else '[K]'} dimension")
    if per_sample and m.shape[0] != x.shape[0]:
        raise ValueError(f"{label}: per-sample masks must be [N, K, ...] with N={x.shape[0]}, got {tuple(m.shape)}")
    try:
        torch.broadcast_shapes(m.shape[lead:], x.shape[1:])
        if len(m.shape[lead:]) > x.dim() - 1:
            raise RuntimeError
    except RuntimeError:
        raise ValueError(f"{label} of shape {tuple(m.shape)}: the mask dims {tuple(m.shape[lead:])} do not "
                         f"broadcast to one sample of x, {tuple(x.shape[1:])}") from None
    return m.shape[lead - 1]


def _tensor_masks(m: Tensor, x: Tensor, per_sample: bool) -> MaskFn:
    lead = 2 if per_sample else 1
    sample = tuple(m.shape[lead:])
    # give the mask rows x's number of sample dims, so that [K, H, W] masks broadcast over channels
    m = m.detach().to(x.device).reshape(*m.shape[:lead], *[1] * (x.dim() - 1 - len(sample)), *sample)
    if per_sample:
        return lambda k, s: m[s, k]
    return lambda k, s: m.index_select(0, k)


class _ForwardMemory(torch.utils._python_dispatch.TorchDispatchMode):
    """Peak bytes of live tensors derived from ``roots`` (x) during a forward pass.

    Every op's outputs are seen; an output counts when one of the op's tensor arguments is
    derived from x (so transposed weights and other parameter-only tensors are not counted).
    Storages are counted once; a storage is released when the last tensor seen on it dies.
    """

    def __init__(self, roots: Sequence[Tensor]):
        super().__init__()
        self.refs: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.live = sum(t.numel() * t.element_size() for t in roots)
        self.peak = self.live
        self.rooted = {t.untyped_storage().data_ptr() for t in roots if t.numel() > 0}

    def _derived(self, key: int) -> bool:
        return key in self.rooted or key in self.refs

    def _release(self, key: int) -> None:
        count = self.refs.get(key)
        if count is None:
            return
        if count <= 1:
            del self.refs[key]
            self.live -= self.sizes.pop(key)
        else:
            self.refs[key] = count - 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        flat_in, _ = torch.utils._pytree.tree_flatten((args, kwargs))
        if not any(isinstance(t, Tensor) and t.numel() > 0 and self._derived(t.untyped_storage().data_ptr())
                   for t in flat_in):
            return out
        flat_out, _ = torch.utils._pytree.tree_flatten(out)
        for t in flat_out:
            if not isinstance(t, Tensor) or t.numel() == 0:
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key == 0 or key in self.rooted:
                continue
            if key not in self.refs:
                self.refs[key] = 0
                self.sizes[key] = storage.nbytes()
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
            self.refs[key] += 1
            weakref.finalize(t, self._release, key)
        return out

"""Occlusion (sliding-window) sensitivity."""
from __future__ import annotations

from numbers import Integral
from typing import Any, Sequence

import torch
from torch import Tensor

from ..api import register
from .base import PerturbationMethod, baseline_tensors, check_baseline_spec, check_seed
from .engine import PreparedPerturbation
from .masks import check_output_transform, output_transform_fn

WindowSpec = Any   # int | tuple[int, ...] | per-input list/tuple of those


@register
class Occlusion(PerturbationMethod):
    r"""Occlusion sensitivity: slide a window over the input, replace what it covers by a
    baseline, and record how much the target score drops.

    .. math:: a_i = \frac{1}{|W(i)|} \sum_{w \in W(i)} \big(f_y(x) - f_y(x_{[w \leftarrow b]})\big)

    where :math:`W(i)` is the set of window positions covering element :math:`i` and
    :math:`x_{[w \leftarrow b]}` is x with the window's elements replaced by the baseline's.
    Overlapping windows are averaged exactly as Captum's ``Occlusion`` does; windows start at
    multiples of the stride from index 0 and are shifted until they reach the end of each
    dimension (the last one may be cut off by the border).

    Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014
    (arXiv:1311.2901).

    Options:

    * ``window``: ``(h, w)`` (one size per spatial dim; all channels are occluded together),
      an int (the same size in every spatial dim), or a full per-dimension shape
      ``(c, h, w)`` (Captum's ``sliding_window_shapes``). ``[N, F]`` inputs take ``(f,)`` or an
      int. Default ``None``: about 1/8 of each spatial dim (``ceil(D / 8)``).
    * ``stride``: the step between windows, an int (every dim) or per dimension in the same
      form as ``window``. Default ``None``: equal to the window (disjoint tiles). Captum's
      default is 1. A stride larger than the window would leave elements uncovered.
    * ``baseline``: what occluded elements become: ``0`` (default), a number, ``"mean"``
      (per-sample, per-channel mean), ``"blur"``, ``"noise"`` (x + Gaussian noise, seeded), a
      tensor broadcastable to x, ... (see ``propex.baselines``).
    * ``output_transform``: ``None`` (raw scores, default), ``"softmax"``, ``"log_softmax"``,
      ``"sigmoid"`` or a callable applied to the outputs before the target is taken.
    * ``seed``: for stochastic baselines; ``batch_size`` / ``memory_budget``: chunking.

    For tuple inputs every tensor is occluded separately (its windows are perturbations of
    their own, as in Captum); ``window``/``stride`` may then be a list with one spec per tensor.
    """

    name = "occlusion"
    aliases = ("occlusion_sensitivity", "sliding_window")

    def __init__(self, model: Any, *, window: WindowSpec = None, stride: WindowSpec = None, baseline: Any = 0.0,
                 output_transform: Any = None, seed: int | None = None, **options: Any):
        _check_spec(window, "window")
        _check_spec(stride, "stride")
        check_baseline_spec(baseline)
        check_output_transform(output_transform)
        seed = check_seed(seed)
        super().__init__(model, window=window, stride=stride, baseline=baseline, output_transform=output_transform,
                         seed=seed, **options)
        self.window, self.stride, self.baseline = window, stride, baseline
        self.output_transform, self.seed = output_transform, seed

    def _attribute(self, prep: PreparedPerturbation) -> tuple[Tensor, ...]:
        inputs = prep.inputs
        grids = [SlidingWindows(x.shape[1:], w, s, self._label("window", i, prep), self._label("stride", i, prep),
                                x.device)
                 for i, (x, w, s) in enumerate(zip(inputs, _per_input(self.window, len(inputs), prep.was_tuple),
                                                   _per_input(self.stride, len(inputs), prep.was_tuple)))]
        bases = baseline_tensors(self.baseline, prep, self.seed)
        transform = output_transform_fn(self.output_transform, prep.outputs, self.name)
        offsets = [0]
        for g in grids:
            offsets.append(offsets[-1] + g.count)

        def perturb(k: Tensor, s: Tensor) -> tuple[Tensor, ...]:
            rows = []
            for x, b, g, off in zip(inputs, bases, grids, offsets):
                xs = x.index_select(0, s)
                if len(grids) == 1:
                    mask = g.masks(k)
                else:
                    local = k - off
                    owned = (local >= 0) & (local < g.count)
                    mask = g.masks(local.clamp(0, g.count - 1))
                    mask = mask & owned.reshape(-1, *[1] * (mask.dim() - 1))
                rows.append(torch.where(mask, b.index_select(0, s), xs))
            return tuple(rows)

        scores = self.engine.evaluate(prep, offsets[-1], perturb, output_transform=transform)    # [N, K, T]
        f_x = prep.target_values(transform)                                                      # [N, T]
        diff = f_x.unsqueeze(1) - scores                                                         # [N, K, T]
        return tuple(g.spread(diff[:, off:off + g.count]) for g, off in zip(grids, offsets))

    @staticmethod
    def _label(name: str, i: int, prep: PreparedPerturbation) -> str:
        return f"{name}[{i}]" if prep.was_tuple else name


class SlidingWindows:
    """The window positions over one sample shape ``S`` (Captum's shift semantics).

    Per dim d: ``n_d = ceil((S_d - w_d) / s_d) + 1`` positions starting at ``i * s_d``, each
    covering ``[i * s_d, min(i * s_d + w_d, S_d))``; ``cover[d]`` is the ``[n_d, S_d]``
    indicator matrix. Windows are numbered row-major (the last dim fastest).
    """

    def __init__(self, shape: Sequence[int], window: Any, stride: Any, window_name: str, stride_name: str,
                 device: torch.device):
        shape = tuple(int(d) for d in shape)
        if not shape:
            raise ValueError("occlusion needs samples with at least one dimension (x shaped [N, ...]); "
                             "x has one scalar per sample")
        self.shape = shape
        self.window = _full_shape(window, shape, window_name, default=True)
        self.stride = self.window if stride is None else _full_shape(stride, shape, stride_name, default=False,
                                                                     fill=self.window)
        for d, (size, w, st) in enumerate(zip(shape, self.window, self.stride)):
            if w > size:
                raise ValueError(f"{window_name}={_show(window)} is larger than the input: window {self.window} on a "
                                 f"sample of shape {shape} (dim {d + 1} of x has size {size}, the window {w})")
            if w < size and st > w:
                raise ValueError(f"{stride_name}={_show(stride)} is larger than the window {self.window} (dim {d + 1}: "
                                 f"stride {st} > window {w}), which would leave elements that no window covers; "
                                 f"use a stride <= the window")
        self.counts = tuple(-(-(size - w) // st) + 1 for size, w, st in zip(shape, self.window, self.stride))
        self.count = 1
        for c in self.counts:
            self.count *= c
        self.cover = []
        for size, w, st, c in zip(shape, self.window, self.stride, self.counts):
            start = torch.arange(c, device=device).unsqueeze(1) * st
            pos = torch.arange(size, device=device).unsqueeze(0)
            self.cover.append((pos >= start) & (pos < start + w))                              # [n_d, S_d]

    def masks(self, k: Tensor) -> Tensor:
        """Boolean masks ``[B, *S]`` (broadcastable) of windows ``k`` (True = occluded)."""
        mask: Tensor | None = None
        rest = k
        nd = len(self.shape)
        for d in reversed(range(nd)):
            idx = rest % self.counts[d]
            rest = torch.div(rest, self.counts[d], rounding_mode="floor")
            if self.counts[d] == 1 and self.window[d] == self.shape[d]:
                continue                                                    # covered entirely: no constraint
            md = self.cover[d].index_select(0, idx).reshape(-1, *[1] * d, self.shape[d], *[1] * (nd - 1 - d))
            mask = md if mask is None else mask & md
        if mask is None:
            return torch.ones((k.shape[0],) + (1,) * nd, dtype=torch.bool, device=k.device)
        return mask

    def spread(self, diff: Tensor) -> Tensor:
        """``[N, K, T]`` score drops -> ``[N, T, *S]``: each element averages the windows covering it."""
        n, _, t = diff.shape
        out = diff.transpose(1, 2).reshape(n, t, *self.counts)
        for d, cover in enumerate(self.cover):
            # contract the window-position dim (at 2 + d) with the [n_d, S_d] cover matrix
            out = torch.tensordot(out, cover.to(out.dtype), dims=([2 + d], [0])).movedim(-1, 2 + d)
        denom = torch.ones((), dtype=out.dtype, device=out.device)
        for d, cover in enumerate(self.cover):
            c = cover.sum(0).to(out.dtype).reshape(*[1] * d, -1, *[1] * (len(self.shape) - 1 - d))
            denom = denom * c
        return out / denom


# --------------------------------------------------------------------------- option parsing
def _check_spec(spec: Any, name: str) -> None:
    """Types of ``window``/``stride`` (ints >= 1, tuples of them, a list of per-input specs)."""
    if spec is None:
        return
    if isinstance(spec, list):
        for i, item in enumerate(spec):
            _check_spec(item, f"{name}[{i}]")
        return
    items = spec if isinstance(spec, tuple) else (spec,)
    if isinstance(spec, tuple) and len(spec) == 0:
        raise ValueError(f"{name} must be an int >= 1 or a tuple of them, got ()")
    for item in items:
        if isinstance(item, tuple) and isinstance(spec, tuple) and item is not spec:
            _check_spec(item, name)
            continue
        if isinstance(item, bool) or not isinstance(item, Integral):
            raise TypeError(f"{name} must be an int >= 1 or a tuple of ints (one per dimension), got {_show(spec)}")
        if item < 1:
            raise ValueError(f"{name} must hold ints >= 1, got {_show(spec)}")


def _per_input(spec: Any, n_inputs: int, was_tuple: bool) -> list[Any]:
    """One spec per input tensor: a list (or a tuple of tuples) of per-input specs, else shared."""
    per_input = isinstance(spec, list) or (isinstance(spec, tuple) and len(spec) > 0
                                           and all(isinstance(s, tuple) for s in spec))
    if per_input and was_tuple:
        if len(spec) != n_inputs:
            raise ValueError(f"a per-input window/stride list needs one entry per input tensor ({n_inputs}), "
                             f"got {len(spec)}: {_show(spec)}")
        return list(spec)
    if isinstance(spec, list):
        if len(spec) == 1:
            return [spec[0]]
        raise ValueError(f"a list of window/stride specs is for tuple inputs; x is a single tensor, got {_show(spec)}")
    return [spec] * n_inputs


def _full_shape(spec: Any, shape: tuple[int, ...], name: str, *, default: bool,
                fill: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """A per-dimension size over the whole sample shape from an int, a spatial or a full tuple."""
    nd = len(shape)
    if spec is None and default:
        if nd == 1:
            return (-(-shape[0] // 8),)
        return (shape[0],) + tuple(-(-d // 8) for d in shape[1:])
    if isinstance(spec, tuple) and any(isinstance(s, tuple) for s in spec):
        raise ValueError(f"{name}={_show(spec)}: nested tuples are per-input specs, for tuple inputs")
    if isinstance(spec, Integral):
        if fill is not None or nd == 1:
            return (int(spec),) * nd          # a stride: every dim (Captum's int stride)
        return (shape[0],) + (int(spec),) * (nd - 1)    # a window: all channels together
    spec = tuple(int(s) for s in spec)
    if len(spec) == nd:
        return spec
    if nd >= 2 and len(spec) == nd - 1:
        return ((shape[0] if fill is None else fill[0]),) + spec
    want = f"{nd - 1} (one per spatial dim; all channels together) or {nd} (every dim)" if nd >= 2 else "1"
    raise ValueError(f"{name}={_show(spec)} has {len(spec)} entries but a sample of x has shape {shape}: "
                     f"give {want} entries, or an int")


def _show(spec: Any) -> str:
    return repr(spec)

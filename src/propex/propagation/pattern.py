r"""PatternAttribution: LRP-like backward passes with weights corrected by learned signal patterns.

For a layer :math:`y = w^\top x` the *signal* of x is the part that makes the output vary,
:math:`a\,y` with the pattern (two-component estimator for units followed by a ReLU, which
keeps only the positive regime :math:`y > 0`; the linear estimator for the last layer)

.. math:: a = \frac{\mathbb E_+[x y] - \mathbb E_+[x]\,\mathbb E_+[y]}{w^\top\big(\mathbb E_+[x y] - \mathbb E_+[x]\,\mathbb E_+[y]\big)} .

PatternAttribution backpropagates the explained output :math:`f_y(x)` with each conv/dense
weight replaced by :math:`w \odot a`; activations and pooling keep their gradient.

Kindermans et al., "Learning how to explain neural networks: PatternNet and
PatternAttribution", ICLR 2018. Patterns are fitted from data once (``fit_patterns``), saved
and reloaded (``Patterns.save`` / ``Patterns.load``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..api import register
from ..inputs import as_input_tuple
from ..model_call import ModelCall, frozen_parameters, model_guard
from .engine import Policy, PropagationMethod
from .functions import Combine
from .lrp import linear_parts
from .tracing import ModuleStack, OpCall, PropagationMode, UnsupportedOpError

_CONV1D = {F.conv1d, torch.conv1d}
_CONV = _CONV1D | {F.conv2d, torch.conv2d}


@dataclass
class Patterns:
    """Fitted patterns, one per conv/dense op of the forward pass (in execution order)."""

    patterns: list[Tensor]
    op_names: list[str] = field(default_factory=list)
    n_samples: int = 0

    def save(self, path: str | os.PathLike) -> None:
        torch.save({"patterns": self.patterns, "op_names": self.op_names, "n_samples": self.n_samples}, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Patterns":
        data = torch.load(path, weights_only=True, map_location="cpu")
        return cls(list(data["patterns"]), list(data["op_names"]), int(data["n_samples"]))

    def __repr__(self) -> str:
        return f"Patterns({len(self.patterns)} layers, fitted on {self.n_samples} samples)"


class _Stats:
    """Running sums for the pattern estimator of one layer (per output unit)."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}

    def add(self, x: Tensor, y: Tensor, positive: bool) -> None:
        """x: [G, M, D] inputs per group (rows: samples or patches), y: [G, M, K/G] outputs without
        bias; the sums are kept per output unit k (group-major, as conv weights order them)."""
        x, y = x.double(), y.double()
        mask = (y > 0).double() if positive else torch.ones_like(y)
        ym = y * mask
        d = x.shape[2]
        parts = {"n": mask.sum(1).reshape(-1), "x": (mask.transpose(1, 2) @ x).reshape(-1, d),
                 "y": ym.sum(1).reshape(-1), "xy": (ym.transpose(1, 2) @ x).reshape(-1, d)}
        for key, value in parts.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value

    def pattern(self, weight2d: Tensor) -> Tensor:
        n = self.sums["n"].clamp(min=1).unsqueeze(1)
        ex, ey, exy = self.sums["x"] / n, self.sums["y"].unsqueeze(1) / n, self.sums["xy"] / n
        cov = exy - ex * ey                                      # [K, D]
        denom = (cov * weight2d.double()).sum(1, keepdim=True)
        a = torch.where(denom.abs() > 1e-12, cov / torch.where(denom.abs() > 1e-12, denom, torch.ones_like(denom)),
                        torch.zeros_like(cov))
        return a


class _FitPolicy(Policy):
    """Runs every op unchanged and collects layer statistics on the way."""

    def __init__(self, stats: list[_Stats], names: list[str]):
        super().__init__("warn")
        self.stats, self.names = stats, names
        self._seen: dict[int, Tensor] = {}
        self.index = 0

    def tracked(self, t: Any) -> bool:
        return isinstance(t, Tensor) and id(t) in self._seen and self._seen[id(t)] is t

    def taint(self, out: Any) -> Any:
        if isinstance(out, Tensor):
            self._seen[id(out)] = out
        elif isinstance(out, (list, tuple)):
            for o in out:
                self.taint(o)
        return out

    def __call__(self, call: OpCall) -> Any:
        if call.kind == "linear":
            x, w, b, fn = linear_parts(call)
            if self.index >= len(self.stats):
                self.stats.append(_Stats())
                self.names.append(call.module_name or call.name)
            rows, outs = _rows(call, x, w, fn)
            self.stats[self.index].add(rows, outs, positive=True)
            self.stats[self.index].__dict__.setdefault("linear", _Stats()).add(rows, outs, positive=False)
            self.index += 1
        return self.taint(call.run())


def _rows(call: OpCall, x: Tensor, w: Tensor, fn) -> tuple[Tensor, Tensor]:
    """(input rows [G, M, D], output rows [G, M, K/G]) of a dense op, or of a conv1d/conv2d op over
    its patches (G = groups; each group's outputs see only its own input channels)."""
    if call.func is F.linear:
        return x.reshape(1, -1, x.shape[-1]), F.linear(x, w).reshape(1, -1, w.shape[0])
    if call.func not in _CONV:
        raise UnsupportedOpError(f"PatternAttribution: fitting {call.where()} is not supported "
                                 "(dense, conv1d and conv2d are)")
    args = list(call.args) + [None] * 7
    kw = call.kwargs
    stride, padding = kw.get("stride", args[3] or 1), kw.get("padding", args[4] or 0)
    dilation, groups = kw.get("dilation", args[5] or 1), kw.get("groups", args[6] or 1)
    if call.func in _CONV1D:                      # as a conv2d of height 1
        x, w = x.unsqueeze(2), w.unsqueeze(2)
        stride, dilation = (1, _one(stride)), (1, _one(dilation))
        padding = padding if isinstance(padding, str) else (0, _one(padding))
    kernel = w.shape[2:]
    if isinstance(padding, str):                  # 'valid' or 'same' (stride 1): pad explicitly
        dil = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
        pads: list[int] = []
        for k, dl in zip(reversed(kernel), reversed(dil)):
            total = 0 if padding == "valid" else dl * (k - 1)
            pads += [total // 2, total - total // 2]
        x, padding = F.pad(x, pads), 0
    patches = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)   # [N, C·k, L]
    n, length = patches.shape[0], patches.shape[2]
    d = patches.shape[1] // groups                # unfold orders channels first: groups are blocks
    rows = patches.reshape(n, groups, d, length).permute(1, 0, 3, 2).reshape(groups, n * length, d)
    w_groups = w.reshape(groups, w.shape[0] // groups, -1)                              # [G, K/G, D]
    return rows, rows @ w_groups.transpose(1, 2)


def _one(v: Any) -> int:
    return v if isinstance(v, int) else int(v[0])


def fit_patterns(model: Any, data: Iterable[Any] | Tensor, *, forward_kwargs: dict[str, Any] | None = None,
                 max_batches: int | None = None) -> Patterns:
    """Fit PatternAttribution's patterns on ``data`` (a tensor [M, ...], or an iterable of batches:
    tensors, or tuples whose first item is the input, as a ``DataLoader`` yields)."""
    batches = [data] if isinstance(data, Tensor) else data
    stats: list[_Stats] = []
    names: list[str] = []
    weights: list[Tensor] = []
    n_samples = 0
    call = ModelCall(model)
    with model_guard(model), frozen_parameters(model), torch.no_grad():
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            inputs, _ = as_input_tuple(x, "data")
            policy = _FitPolicy(stats, names)
            for t in inputs:
                policy.taint(t)
            modules = ModuleStack(model)
            recorder = _WeightRecorder(policy, weights)
            with modules.active(), PropagationMode(recorder, modules):
                call(inputs, forward_kwargs or {})
            n_samples += inputs[0].shape[0]
    if not stats:
        raise ValueError("data: no conv/dense op was seen while fitting patterns (is the data empty?)")
    patterns = []
    for i, (s, w) in enumerate(zip(stats, weights)):
        last = i == len(stats) - 1
        source = s.__dict__["linear"] if last else s
        patterns.append(source.pattern(w.reshape(w.shape[0], -1)).reshape(w.shape).to(w.dtype))
    return Patterns(patterns, names, n_samples)


class _WeightRecorder:
    """Wraps the fit policy to remember each layer's weight (once)."""

    def __init__(self, policy: _FitPolicy, weights: list[Tensor]):
        self.policy, self.weights = policy, weights
        self.tracked = policy.tracked

    def __call__(self, call: OpCall) -> Any:
        if call.kind == "linear" and self.policy.index >= len(self.weights):
            self.weights.append(linear_parts(call)[1].detach().clone())
        return self.policy(call)


class PatternPolicy(Policy):
    def __init__(self, patterns: Patterns, unknown_ops: str):
        super().__init__(unknown_ops)
        self.patterns = patterns
        self.index = 0

    def on_linear(self, call: OpCall) -> Any:
        x, w, b, fn = linear_parts(call)
        if self.index >= len(self.patterns.patterns):
            raise ValueError(f"patterns: fitted for {len(self.patterns.patterns)} conv/dense ops, but the model "
                             f"runs more ({call.where()}); refit the patterns for this model")
        a = self.patterns.patterns[self.index].to(device=w.device, dtype=w.dtype)
        self.index += 1
        if a.shape != w.shape:
            raise ValueError(f"patterns: layer {self.index - 1} ({call.where()}) has weights {tuple(w.shape)} but "
                             f"the pattern is {tuple(a.shape)}; refit the patterns for this model")
        y = call.value()
        branch = fn(x, (w * a).detach(), None)
        return Combine.apply([y], (torch.ones_like(y),), branch)

    def on_activation(self, call: OpCall) -> Any:
        return call.run()

    on_batch_norm = on_pool = on_max_pool = on_add = on_sub = on_mul = on_div = on_neg = on_activation


@register
class PatternAttribution(PropagationMethod):
    __doc__ = __doc__

    name = "pattern_attribution"
    aliases = ("patternattribution",)

    def __init__(self, model: Any, *, patterns: Patterns | str | os.PathLike | None = None, **options: Any):
        if isinstance(patterns, (str, os.PathLike)):
            patterns = Patterns.load(patterns)
        if patterns is not None and not isinstance(patterns, Patterns):
            raise TypeError(f"patterns must be the result of fit_patterns (or a saved file), got {type(patterns).__name__}")
        super().__init__(model, **options)
        self.patterns = patterns

    fit = staticmethod(fit_patterns)

    def make_policy(self, inputs, n_linear) -> Policy:
        if self.patterns is None:
            raise ValueError("pattern_attribution needs patterns= fitted on data first: "
                             "patterns = propex.propagation.fit_patterns(model, data_loader)")
        return PatternPolicy(self.patterns, self.unknown_ops)

    def initial_message(self, values: Tensor) -> Tensor:
        return values

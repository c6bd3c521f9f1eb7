"""Shared plumbing of the perturbation methods: engine construction and result formatting.

A perturbation method derives from ``PerturbationMethod``, validates its own options in
``__init__`` (``batch_size`` and ``memory_budget`` are handled here) and implements
``_attribute(prep) -> tuple[Tensor, ...]``: one ``[N, T, ...]`` tensor per attributed input
tensor (T = targets per sample), computed from ``self.engine.evaluate(...)``. The base
class turns that into an ``Explanation`` (dropping the T dimension unless the user asked for
several targets per sample, and giving back a tuple only for tuple inputs).
"""
from __future__ import annotations

from numbers import Integral
from typing import Any

import torch
from torch import Tensor

from ..base import Explanation, Method
from ..inputs import restore_structure
from .engine import PerturbationEngine, PreparedPerturbation, resolved_baseline


class PerturbationMethod(Method):
    """A method computed from the model's outputs on perturbed copies of the input.

    Common options: ``batch_size`` (most perturbed samples per forward pass) and
    ``memory_budget`` (bytes or e.g. ``"512MB"`` of live forward tensors per chunk, used when
    ``batch_size`` is None; see ``propex.perturbation.engine``).
    """

    family = "perturbation"

    def __init__(self, model: Any, *, batch_size: int | None = None, memory_budget: Any = None, **options: Any):
        super().__init__(model, **options)
        self.engine = PerturbationEngine(model, batch_size=batch_size, memory_budget=memory_budget)

    def _explain(self, x: Any, target: Any, forward_kwargs: dict[str, Any] | None) -> Explanation:
        prep = self.engine.prepare(x, target, forward_kwargs)
        return self.explanation(prep, self._attribute(prep))

    def _attribute(self, prep: PreparedPerturbation) -> tuple[Tensor, ...]:
        """Attributions ``[N, T, ...]``, one tensor per input tensor."""
        raise NotImplementedError

    def explanation(self, prep: PreparedPerturbation, attributions: tuple[Tensor, ...],
                    delta: Tensor | None = None) -> Explanation:
        """Format ``[N, T, ...]`` attributions (and an optional ``[N, T]`` delta) as an Explanation."""
        if not prep.target.multi:
            attributions = tuple(a.squeeze(1) for a in attributions)
            delta = None if delta is None else delta[:, 0]
        return Explanation(restore_structure(tuple(attributions), prep.was_tuple), prep.target.public(),
                           prep.outputs, delta, self.name, dict(self.options))


def baseline_tensors(spec: Any, prep: PreparedPerturbation, seed: int | None = None,
                     name: str = "baseline") -> tuple[Tensor, ...]:
    """The baseline ``spec`` as tensors shaped like x (stochastic specs drawn with ``seed``)."""
    gen = None
    if seed is not None:
        gen = torch.Generator(device=prep.device)
        gen.manual_seed(seed)
    return resolved_baseline(spec, prep, gen, name=name)


def check_seed(seed: Any, name: str = "seed") -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise TypeError(f"{name} must be an int or None, got {type(seed).__name__}")
    return int(seed)


def check_baseline_spec(spec: Any, name: str = "baseline") -> Any:
    """Reject baseline specs that can never be resolved, at construction time (before any forward)."""
    from ..baselines import BaselineSpec
    known = ("zeros", "uniform", "blur", "mean", "noise")
    if isinstance(spec, tuple):
        for i, s in enumerate(spec):
            check_baseline_spec(s, f"{name}[{i}]")
        return spec
    if isinstance(spec, str) and spec not in known:
        raise ValueError(f"{name}={spec!r} is not a known baseline; use one of {', '.join(map(repr, known))}, "
                         "a number, a tensor or a callable")
    if isinstance(spec, bool) or not (spec is None or isinstance(spec, (str, int, float, Tensor, BaselineSpec))
                                      or callable(spec)):
        raise TypeError(f"{name} must be None, a number, a tensor, a callable or one of {', '.join(map(repr, known))}; "
                        f"got {type(spec).__name__}")
    if isinstance(spec, float) and not (spec == spec and abs(spec) != float("inf")):
        raise ValueError(f"{name} must be finite, got {spec}")
    return spec

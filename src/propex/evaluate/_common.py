"""Shared argument validation and model-call helpers of ``propex.evaluate``.

Every metric validates at its boundary with these functions, so that the errors read the
same everywhere:

* ``check_inputs(x)``: a floating-point tensor ``[N, ...]`` with N >= 1 and finite values;
* ``check_attributions(a, x)``: a finite tensor shaped like ``x`` or channel-reduced
  (``[N, 1, H, W]`` or ``[N, H, W]`` for ``[N, C, H, W]`` inputs), broadcast to ``x``'s shape;
* ``check_fraction``, ``check_int``, ``check_number``, ``check_choice``, ``check_seed``;
* ``prepare(model, x, target, ...)``: the perturbation engine and its prepared state (one
  forward pass on x, the target resolved with ``propex.targets``);
* ``fixed_target(prep, target)``: the target to pass to an explainer on perturbed copies of x,
  so that the class stays the one explained on x (``None`` = top class on x, frozen);
* ``resolve_explainer(method, **options)``: a method name (with its options), a ``Method``
  class, or any callable ``(model, inputs, target) -> attributions`` as a callable
  ``(model, inputs, target) -> Tensor`` (used by the metrics that recompute explanations).
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ..inputs import as_input_tuple
from ..perturbation.engine import PerturbationEngine, PreparedPerturbation

Explainer = Callable[[Any, Tensor, Any], Tensor]


# --------------------------------------------------------------------------- inputs
def check_inputs(x: Any, name: str = "x") -> Tensor:
    """``x`` as a detached floating-point tensor ``[N, ...]`` with N >= 1 and finite values."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [N, ...], got {type(x).__name__}")
    if x.dim() == 0:
        raise ValueError(f"{name} must have a batch dimension [N, ...], got a scalar tensor")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}); pass at least one sample")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    (x,), _ = as_input_tuple(x, name)    # detaches and checks finiteness
    return x


def check_attributions(attributions: Any, x: Tensor, name: str = "attributions", broadcast: bool = True) -> Tensor:
    """Attributions as a finite floating tensor with ``x``'s shape (dtype and device of ``x``);
    with ``broadcast=False`` a channel-reduced map stays ``[N, 1, *S]``.

    Accepted shapes: ``x.shape``; for image-like ``x`` ``[N, C, *S]`` also channel-reduced
    maps ``[N, 1, *S]`` and ``[N, *S]``, which are broadcast over the channels (every channel
    of a pixel then shares the pixel's relevance). A numpy array is accepted too.
    """
    if not isinstance(attributions, Tensor):
        try:
            import numpy as np
            if isinstance(attributions, np.ndarray):
                attributions = torch.from_numpy(attributions)
        except ImportError:  # pragma: no cover
            pass
    if not isinstance(attributions, Tensor):
        raise TypeError(f"{name} must be a tensor shaped like x {tuple(x.shape)}, got {type(attributions).__name__}")
    a = attributions.detach()
    if a.is_complex() or a.dtype == torch.bool:
        raise TypeError(f"{name} must be real numbers, got dtype {a.dtype}")
    if a.dim() == 0 or a.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(a.shape)}); pass one map per sample of x")
    shape = tuple(x.shape)
    ok = tuple(a.shape) == shape
    if not ok and x.dim() >= 3:
        if tuple(a.shape) == (shape[0], 1, *shape[2:]):
            ok = True
        elif tuple(a.shape) == (shape[0], *shape[2:]):
            a = a.unsqueeze(1)
            ok = True
    if not ok:
        allowed = f"{shape}" + (f", {(shape[0], 1, *shape[2:])} or {(shape[0], *shape[2:])}" if x.dim() >= 3 else "")
        raise ValueError(f"{name} of shape {tuple(a.shape)} does not match x of shape {shape}; expected {allowed}")
    a = a.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)
    if not bool(torch.isfinite(a).all()):
        n_nan, n_inf = int(torch.isnan(a).sum()), int(torch.isinf(a).sum())
        raise ValueError(f"{name} contains {n_nan} NaN and {n_inf} Inf values; metrics need finite attributions")
    return a.expand(shape) if broadcast else a


def check_mask(mask: Any, x: Tensor, name: str = "mask") -> Tensor:
    """A per-sample mask (bool or 0/1) shaped like ``x`` or channel-reduced, broadcast to ``x``."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a tensor shaped like x {tuple(x.shape)}, got {type(mask).__name__}")
    m = check_attributions(mask.to(torch.float32) if mask.dtype == torch.bool else mask, x, name)
    return m != 0


# --------------------------------------------------------------------------- scalar options
def check_fraction(value: Any, name: str) -> float:
    """A number in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, Real) or not (0 < float(value) <= 1):
        raise ValueError(f"{name} must be a fraction in (0, 1], got {value!r}")
    return float(value)


def check_int(value: Any, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """An int in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (isinstance(value, Tensor) and value.dim() == 0
                                                                         and not value.is_floating_point()):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an int {bound}, got {value}")
    return value


def check_number(value: Any, name: str, minimum: float | None = None, strict: bool = False) -> float:
    """A finite real number (``> minimum`` if ``strict`` else ``>= minimum``)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value}")
    return value


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """One of ``choices`` (case-insensitive, ``-`` and ``_`` alike)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {', '.join(map(repr, choices))}; got {type(value).__name__} {value!r}")
    key = value.strip().lower().replace("-", "_")
    if key not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")
    return key


def check_seed(seed: Any, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{name} must be an int, got {type(seed).__name__} {seed!r}")
    return seed


def generator_for(seed: int, device: torch.device) -> torch.Generator:
    """A seeded generator on ``device`` (CPU generators for devices without one)."""
    try:
        gen = torch.Generator(device=device)
    except RuntimeError:  # pragma: no cover - devices without generators
        gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


# --------------------------------------------------------------------------- model calls
def prepare(model: Any, x: Tensor, target: Any, *, forward_kwargs: Any = None, batch_size: int | None = None,
            memory_budget: Any = None) -> tuple[PerturbationEngine, PreparedPerturbation]:
    """The perturbation engine for ``model`` and its prepared state for ``x`` (one forward pass)."""
    engine = PerturbationEngine(model, batch_size=batch_size, memory_budget=memory_budget)
    prep = engine.prepare(x, target, forward_kwargs)
    if prep.target.multi:
        raise ValueError("target: the metrics explain one target per sample; pass [N] class indices, not [N, T]")
    return engine, prep


def output_transform(softmax: Any) -> Callable[[Tensor], Tensor] | None:
    """``softmax=True`` → softmax over dim 1 of the output; ``False`` → the raw output."""
    if not isinstance(softmax, bool):
        raise TypeError(f"softmax must be True or False, got {type(softmax).__name__} {softmax!r}")
    return (lambda out: torch.softmax(out, dim=1)) if softmax else None


def target_scores(engine: PerturbationEngine, prep: PreparedPerturbation, transform: Callable[[Tensor], Tensor] | None
                  ) -> Tensor:
    """``[N]`` explained scalars on x itself (after ``transform``), without another forward pass."""
    out = prep.outputs if transform is None else transform(prep.outputs)
    return prep.target.select(out, torch.arange(prep.n, device=out.device))[:, 0]


def fixed_target(prep: PreparedPerturbation, target: Any) -> Any:
    """The target to explain perturbed copies of x with: the class indices resolved on x
    (``None`` becomes the top class on x, frozen), else the user's callable / tuple as given."""
    public = prep.target.public()
    return public if public is not None else target


# --------------------------------------------------------------------------- explainers
def resolve_explainer(method: Any, **options: Any) -> Explainer:
    """A callable ``(model, inputs, target) -> attributions`` (a tensor shaped like ``inputs``).

    ``method`` may be a method name of ``propex.methods()`` (with ``options`` passed to it, and
    validated now), a ``propex.base.Method`` subclass, or any callable
    ``(model, inputs, target) -> attributions`` (e.g. wrapping another library; ``options`` are
    then passed to it as keyword arguments). An ``Explanation`` returned by a callable is
    unwrapped to its attributions.
    """
    from ..api import get_method
    from ..base import Explanation, Method

    if isinstance(method, str) or (isinstance(method, type) and issubclass(method, Method)):
        cls = get_method(method)
        _check_option_names(cls, options)   # names now; values when the method is first built

        def run(model: Any, inputs: Tensor, target: Any) -> Tensor:
            return cls(model, **options).attribute(inputs, target)
        run.__name__ = cls.name
        return run
    if isinstance(method, Method):
        if options:
            raise TypeError(f"method: pass options to the method object's constructor, not here ({sorted(options)})")
        inst = method

        def run_inst(model: Any, inputs: Tensor, target: Any) -> Tensor:
            if model is not inst.model:
                return type(inst)(model, **inst.options).attribute(inputs, target)
            return inst.attribute(inputs, target)
        run_inst.__name__ = inst.name
        return run_inst
    if callable(method):
        fn = method

        def run_fn(model: Any, inputs: Tensor, target: Any) -> Tensor:
            out = fn(model, inputs, target, **options)
            if isinstance(out, Explanation):
                out = out.attributions
            if not isinstance(out, Tensor):
                try:
                    import numpy as np
                    if isinstance(out, np.ndarray):
                        return torch.from_numpy(out).to(inputs.device)
                except ImportError:  # pragma: no cover
                    pass
                raise TypeError(f"method: the explainer callable must return a tensor of attributions, "
                                f"it returned {type(out).__name__}")
            return out
        run_fn.__name__ = getattr(fn, "__name__", "explainer")
        return run_fn
    raise TypeError(f"method must be a method name such as 'saliency', a propex Method, or a callable "
                    f"(model, inputs, target) -> attributions; got {type(method).__name__}")


def _check_option_names(cls: type, options: dict[str, Any]) -> None:
    import difflib

    from ..base import _accepted_options

    accepted = sorted(_accepted_options(cls))
    unknown = [key for key in options if key not in accepted]
    if unknown:
        hints = "; ".join(f"{k!r}" + (f" (did you mean {' or '.join(map(repr, c))}?)" if c else "")
                          for k in unknown for c in [difflib.get_close_matches(k, accepted, n=2, cutoff=0.6)])
        raise TypeError(f"{cls.name} got unknown option(s) {hints}. Its options are: {', '.join(accepted)}")


# --------------------------------------------------------------------------- counter-based randomness
_M32 = 0xFFFFFFFF


def _fmix32(h: Tensor) -> Tensor:
    """MurmurHash3's 32-bit finaliser on int64 tensors holding values in [0, 2³²)."""
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & _M32
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def _i32(c: int) -> int:
    return c - (1 << 32) if c >= (1 << 31) else c


def hashed_uniform(seed: int, rows: Tensor, n: int, stream: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[B, n]`` uniform numbers in (0, 1) that depend only on ``(seed, stream, row, column)``.

    ``rows`` (LongTensor ``[B]``) are global row ids (e.g. ``k * N + s``), so a metric's random
    draws do not depend on how its rows are chunked, and are made in one vectorised op on the
    rows' device (no per-row generators, no host synchronisation): a per-row key (MurmurHash3's
    finaliser of seed, stream and row) plus a Weyl sequence over the columns, mixed again by the
    finaliser in wrapping int32 arithmetic; the top 24 bits give the number (exact in float32).
    """
    rows = rows.to(torch.int64)
    key = _fmix32((rows & _M32) ^ ((seed * 0x9E3779B9 + stream * 0x7F4A7C15) & _M32))
    key = _fmix32(key ^ ((rows >> 32) & _M32))
    key = torch.where(key >= 2**31, key - 2**32, key).to(torch.int32)
    h = torch.arange(n, device=rows.device, dtype=torch.int32) * _i32(0x61C88647)
    h = h[None, :] + key[:, None]
    h ^= (h >> 16) & 0xFFFF                      # MurmurHash3 fmix32, logical shifts on int32
    h *= _i32(0x85EBCA6B)
    h ^= (h >> 13) & 0x7FFFF
    h *= _i32(0xC2B2AE35)
    h ^= (h >> 16) & 0xFFFF
    u = ((h >> 8) & 0xFFFFFF).to(torch.float32).add_(0.5).mul_(1.0 / 16777216.0)
    return u if dtype == torch.float32 else u.to(dtype)


def hashed_normal(seed: int, rows: Tensor, n: int, stream: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[B, n]`` standard normal numbers (Box–Muller on two ``hashed_uniform`` streams)."""
    u1 = hashed_uniform(seed, rows, n, 2 * stream + 1, torch.float64)
    u2 = hashed_uniform(seed, rows, n, 2 * stream + 2, torch.float64)
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)).to(dtype)

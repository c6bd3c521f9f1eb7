"""The base class every method derives from, and the ``Explanation`` it returns."""
from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from .model_call import model_guard


@dataclass
class Explanation:
    """The result of ``propex.explain``.

    Attributes:
        attributions: shaped like ``x`` (a tuple for a tuple input; the layer's shape with
            ``layer=``); with T targets per sample, ``[N, T, ...]``.
        target: LongTensor ``[N]`` (or ``[N, T]``) of explained class indices; ``None`` for
            callable targets.
        outputs: the model output on ``x`` (detached).
        delta: per-sample completeness error ``sum(attributions) - (f(x) - f(baseline))``
            (``[N]`` or ``[N, T]``) for methods that claim completeness, else ``None``.
        method: canonical method name.
        options: the options the method ran with.
    """

    attributions: Tensor | tuple[Tensor, ...]
    target: Tensor | None
    outputs: Tensor
    delta: Tensor | None
    method: str
    options: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        attrs = self.attributions
        shape = tuple(tuple(a.shape) for a in attrs) if isinstance(attrs, tuple) else tuple(attrs.shape)
        delta = None if self.delta is None else f"max|delta|={self.delta.abs().max().item():.3g}"
        return f"Explanation(method={self.method!r}, attributions={shape}, target={None if self.target is None else self.target.tolist()}, {delta})"


class Method:
    """A named explanation method bound to a model and its options.

    Subclasses set ``name`` (canonical snake-case name), ``aliases`` and implement
    ``_explain(x, target, forward_kwargs) -> Explanation``. ``attribute`` returns only
    the attributions; ``explain`` the full ``Explanation``. Both leave the model exactly
    as they found it, also when the forward pass raises.
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    family: ClassVar[str] = ""
    claims_completeness: ClassVar[bool] = False

    def __init__(self, model: Any, **options: Any):
        unknown = [key for key in options if key not in _accepted_options(type(self))]
        if unknown:
            accepted = sorted(_accepted_options(type(self)))
            close = {k: difflib.get_close_matches(k, accepted, n=2, cutoff=0.6) for k in unknown}
            hints = "; ".join(f"{k!r}" + (f" (did you mean {' or '.join(map(repr, c))}?)" if c else "")
                              for k, c in close.items())
            raise TypeError(f"{self.name or type(self).__name__} got unknown option(s) {hints}. "
                            f"Its options are: {', '.join(accepted)}")
        self.model = model
        self.options = options

    def attribute(self, x: Tensor | tuple[Tensor, ...], target: Any = None, *,
                  forward_kwargs: dict[str, Any] | None = None) -> Tensor | tuple[Tensor, ...]:
        """Attributions for ``x`` (see ``explain`` for the arguments)."""
        return self.explain(x, target, forward_kwargs=forward_kwargs).attributions

    def explain(self, x: Tensor | tuple[Tensor, ...], target: Any = None, *,
                forward_kwargs: dict[str, Any] | None = None) -> Explanation:
        """Explain ``model(x)`` for ``target`` (see ``propex.targets`` for its forms)."""
        # explanations need autograd: leave an enclosing torch.inference_mode() for the call
        # (torch.no_grad() needs nothing: the engines enable grad where they need it)
        allow_autograd = torch.inference_mode(False) if torch.is_inference_mode_enabled() else contextlib.nullcontext()
        with allow_autograd, model_guard(self.model):
            return self._explain(x, target, forward_kwargs)

    def _explain(self, x: Any, target: Any, forward_kwargs: dict[str, Any] | None) -> Explanation:
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={_short(v)}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


@functools.lru_cache(maxsize=None)
def _accepted_options(cls: type) -> frozenset[str]:
    """Keyword options some ``__init__`` in ``cls``'s MRO declares (what ``Method`` may receive)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        for param in inspect.signature(init).parameters.values():
            if param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD) and param.name not in ("self", "model"):
                names.add(param.name)
    return frozenset(names)


def _short(v: Any) -> str:
    if isinstance(v, Tensor):
        return f"Tensor{tuple(v.shape)}"
    text = repr(v)
    return text if len(text) < 40 else text[:37] + "..."

"""The base class every method derives from, and the ``Explanation`` it returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

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
        self.model = model
        self.options = options

    def attribute(self, x: Tensor | tuple[Tensor, ...], target: Any = None, *,
                  forward_kwargs: dict[str, Any] | None = None) -> Tensor | tuple[Tensor, ...]:
        """Attributions for ``x`` (see ``explain`` for the arguments)."""
        return self.explain(x, target, forward_kwargs=forward_kwargs).attributions

    def explain(self, x: Tensor | tuple[Tensor, ...], target: Any = None, *,
                forward_kwargs: dict[str, Any] | None = None) -> Explanation:
        """Explain ``model(x)`` for ``target`` (see ``propex.targets`` for its forms)."""
        with model_guard(self.model):
            return self._explain(x, target, forward_kwargs)

    def _explain(self, x: Any, target: Any, forward_kwargs: dict[str, Any] | None) -> Explanation:
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={_short(v)}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


def _short(v: Any) -> str:
    if isinstance(v, Tensor):
        return f"Tensor{tuple(v.shape)}"
    text = repr(v)
    return text if len(text) < 40 else text[:37] + "..."

"""``propex.explain`` and the method registry."""
from __future__ import annotations

import difflib
from typing import Any

from torch import Tensor

from .base import Explanation, Method

_REGISTRY: dict[str, type[Method]] = {}
# the order of propex.methods(): DESIGN.md's table; names not listed come after, alphabetically
_CANONICAL_ORDER = (
    "saliency", "input_x_gradient", "smoothgrad", "vargrad", "integrated_gradients", "expected_gradients",
    "blur_ig", "guided_ig", "guided_backprop", "deconvnet", "lrp", "deeplift", "excitation_backprop",
    "deep_taylor", "pattern_attribution", "gradcam", "gradcam_pp", "hirescam", "layercam", "scorecam",
    "guided_gradcam", "occlusion", "feature_ablation", "rise", "meaningful_perturbation", "lime", "kernel_shap",
    "attention", "attention_rollout", "attention_flow", "grad_attention",
)
_ALIASES: dict[str, str] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available under ``cls.name`` and its aliases."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no canonical name")
    for key in (cls.name, *cls.aliases):
        owner = _REGISTRY.get(key) or _REGISTRY.get(_ALIASES.get(key, ""))
        if owner is not None and owner is not cls:
            raise ValueError(f"method name {key!r} is already taken by {owner.__name__}")
    _REGISTRY[cls.name] = cls
    for alias in cls.aliases:
        _ALIASES[alias] = cls.name
    return cls


def methods(family: str | None = None) -> list[str]:
    """Canonical names of the available methods (optionally of one family, e.g. ``"gradient"``)."""
    rank = {name: i for i, name in enumerate(_CANONICAL_ORDER)}
    names = sorted(_REGISTRY, key=lambda n: (rank.get(n, len(rank)), n))
    return [name for name in names if family is None or _REGISTRY[name].family == family]


def get_method(method: str | type[Method]) -> type[Method]:
    """The method class for a canonical name, an alias or a class."""
    if isinstance(method, type) and issubclass(method, Method):
        return method
    if not isinstance(method, str):
        raise TypeError(f"method must be a method name such as 'saliency', got {type(method).__name__}")
    key = method.strip().lower().replace("-", "_").replace(" ", "_")
    key = _ALIASES.get(key, key)
    if key in _REGISTRY:
        return _REGISTRY[key]
    names = list(_REGISTRY) + list(_ALIASES)
    close = difflib.get_close_matches(key, names, n=4, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(f"method={method!r} is not a known method.{hint} Available: {', '.join(methods())}")


def explain(model: Any, x: Tensor | tuple[Tensor, ...], method: str = "saliency", target: Any = None, *,
            forward_kwargs: dict[str, Any] | None = None, **options: Any) -> Explanation:
    """Explain ``model``'s predictions on ``x`` with ``method``.

    Args:
        model: an ``nn.Module`` or a callable returning a tensor ``[N, ...]`` (or a mapping /
            ``ModelOutput`` with ``logits``).
        x: a tensor ``[N, ...]`` or a tuple of such tensors (multi-input models).
        method: a name from ``propex.methods()`` (aliases such as ``"ig"`` allowed).
        target: which output to explain; see ``propex.targets`` (``None`` = top class).
        forward_kwargs: extra, non-attributed keyword arguments of the forward pass;
            tensors whose first dimension is N are treated as per-sample.
        **options: the method's options (``n_steps``, ``baseline``, ``batch_size``, ...).
    """
    cls = get_method(method)
    return cls(model, **options).explain(x, target, forward_kwargs=forward_kwargs)

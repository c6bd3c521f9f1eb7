"""Erasure tests for token rankings (Serrano & Smith, "Is Attention Interpretable?", ACL 2019).

A *ranking* scores the items (tokens) of each sample, ``[N, T]``; higher = more important. For each
ranking the test reports

* **single erasure**: erase the top-ranked item i* and, separately, a random item r (uniform among
  the erasable items of the sample, one draw per sample shared by all rankings, so it may equal
  i*, as in the paper) and measure the change of the output distribution p → q:
  JS(p, q) = ½ KL(p‖m) + ½ KL(q‖m), m = ½(p + q), in bits (0 ≤ JS ≤ 1), for both, and whether
  the decision (argmax) flips — the 2 × 2 decision-flip table (top flipped? × random flipped?);
* **erasure until the decision flips**: erase items in ranked order, 1, 2, 3, ..., all N samples
  of a step in one forward pass, and record the fraction of the sample's erasable items removed
  when the decision first changes (NaN for samples that never flip; ``flipped`` says which did).
  At least one erasable item always stays (a model with no input left has no decision to flip;
  attention over an empty set is undefined).
  A faithful ranking flips decisions after few items; Serrano & Smith found attention needs
  many more than gradients.

Erasure (``erase=``):

* ``"mask"`` (default): set the item's entry of the attention mask (``forward_kwargs[mask_key]``,
  default ``"attention_mask"``) to 0, so no attention reads it in any layer. For a model with one
  attention layer over the items (Serrano & Smith's set-up) this is exactly their erasure: the
  item's attention weight set to 0 and the others renormalised.
* ``"replace"``: replace the item by ``replacement`` (a pad / [MASK] token id for token ids, or a
  value / ``[D]`` vector for ``[N, T, D]`` embeddings). The token stays visible to attention.
* a callable ``(x, forward_kwargs, erased) -> (x', forward_kwargs')`` with ``erased`` a bool
  ``[N, T]``: any other erasure (e.g. zeroing one layer's attention through a hook).

Items that are padding (mask 0) or ``exclude``-d (e.g. [CLS]/[SEP]) are never erased.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from ..inputs import as_input_tuple, check_forward_kwargs
from ..model_call import ModelCall, model_guard
from ._common import check_seed, generator_for

RankingSpec = Any  # Tensor [N, T] | method name | (name, options) | callable (model, x, target, forward_kwargs)


@dataclass
class ErasureResult:
    """Per-sample results of one ranking (tensors ``[N]``)."""

    name: str
    top_item: Tensor
    js_top: Tensor
    js_random: Tensor
    flip_top: Tensor
    flip_random: Tensor
    fraction_to_flip: Tensor
    flipped: Tensor
    n_items: Tensor

    @property
    def flip_table(self) -> Tensor:
        """``[[top✓ random✓, top✓ random✗], [top✗ random✓, top✗ random✗]]`` sample counts."""
        t, r = self.flip_top, self.flip_random
        return torch.tensor([[int((t & r).sum()), int((t & ~r).sum())],
                             [int((~t & r).sum()), int((~t & ~r).sum())]])

    def summary(self) -> dict[str, Any]:
        frac = self.fraction_to_flip[self.flipped]
        table = self.flip_table
        return {
            "ranking": self.name,
            "js_top": float(self.js_top.mean()),
            "js_random": float(self.js_random.mean()),
            "delta_js": float((self.js_top - self.js_random).mean()),
            "top_flips_only": int(table[0, 1]),
            "random_flips_only": int(table[1, 0]),
            "both_flip": int(table[0, 0]),
            "neither_flips": int(table[1, 1]),
            "flipped_share": float(self.flipped.float().mean()),
            "median_fraction_to_flip": float(frac.median()) if frac.numel() else math.nan,
            "mean_fraction_to_flip": float(frac.mean()) if frac.numel() else math.nan,
        }


@dataclass
class ErasureReport:
    """The results of ``erasure`` for every ranking, with the shared random items and predictions."""

    results: dict[str, ErasureResult]
    random_item: Tensor
    prediction: Tensor
    options: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> ErasureResult:
        return self.results[name]

    def to_records(self) -> list[dict[str, Any]]:
        return [r.summary() for r in self.results.values()]

    def to_markdown(self) -> str:
        cols = ["ranking", "js_top", "js_random", "top_flips_only", "random_flips_only", "both_flip",
                "neither_flips", "flipped_share", "median_fraction_to_flip"]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for rec in self.to_records():
            lines.append("| " + " | ".join(f"{rec[c]:.3f}" if isinstance(rec[c], float) else str(rec[c])
                                           for c in cols) + " |")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return "ErasureReport\n" + self.to_markdown()


def js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Jensen–Shannon divergence in bits between rows of probability tensors ``[N, C]``."""
    m = 0.5 * (p + q)

    def kl(a: Tensor, b: Tensor) -> Tensor:
        return torch.where(a > 0, a * (torch.log2(a.clamp_min(1e-38)) - torch.log2(b.clamp_min(1e-38))),
                           torch.zeros_like(a)).sum(dim=1)
    return (0.5 * kl(p, m) + 0.5 * kl(q, m)).clamp_min(0)


def erasure(model: Any, x: Tensor, rankings: Mapping[str, RankingSpec] | RankingSpec, *, target: Any = None,
            forward_kwargs: Mapping[str, Any] | None = None, erase: str | Callable = "mask",
            replacement: Any = 0, mask_key: str = "attention_mask", exclude: Tensor | None = None,
            softmax: bool = True, seed: int = 0, include_random: bool = True,
            max_steps: int | None = None) -> ErasureReport:
    """Serrano & Smith's erasure tests for one or several rankings (see the module docstring).

    Args:
        model: the classifier; its output ``[N, C]`` (or ``.logits``).
        x: ``[N, T]`` token ids, or ``[N, T, ...]`` inputs whose dim 1 are the items.
        rankings: a ranking or a mapping name → ranking. A ranking is a ``[N, T]`` tensor of scores
            (``[N, T, ...]`` is summed over the trailing dims), a method name of ``propex.methods()``
            or ``(name, options)`` (explained with ``target`` and ``forward_kwargs``), or a callable
            ``(model, x, target, forward_kwargs) -> [N, T]`` (an ``Explanation`` is unwrapped).
        target: the class explained by method rankings (default: the predicted class).
        forward_kwargs: extra model arguments (``attention_mask`` ...), per-sample tensors ``[N, ...]``.
        erase: ``"mask"``, ``"replace"`` or a callable (module docstring).
        replacement: the replacing token id / value for ``erase="replace"``.
        mask_key: the attention-mask keyword for ``erase="mask"`` (1 = keep, 0 = erased).
        exclude: bool ``[T]`` or ``[N, T]``: items never erased (e.g. special tokens).
        softmax: apply softmax to the output to get the distributions (False: it already is one).
        seed: seeds the random item and the ``"random"`` ranking.
        include_random: add a ``"random"`` ranking (a seeded permutation) as the baseline.
        max_steps: erase at most this many items in the flip search (default: all).

    Returns:
        ``ErasureReport``: per ranking an ``ErasureResult`` (``js_top``, ``js_random``,
        ``flip_top``, ``flip_random``, ``flip_table``, ``fraction_to_flip``, ``flipped``), with
        ``to_records()`` / ``to_markdown()``.
    """
    (x,), _ = as_input_tuple(x)
    if x.dim() < 2:
        raise ValueError(f"x must be [N, T, ...] with the erasable items on dim 1, got shape {tuple(x.shape)}")
    fkw = check_forward_kwargs(forward_kwargs)
    seed = check_seed(seed)
    if not isinstance(softmax, bool):
        raise TypeError(f"softmax must be True or False, got {softmax!r}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"max_steps must be a positive int or None, got {max_steps!r}")
    n, t = x.shape[:2]
    eraser = _eraser(erase, x, fkw, replacement, mask_key)
    eligible = _eligible(fkw.get(mask_key), exclude, n, t, x.device)
    if bool((eligible.sum(1) == 0).any()):
        raise ValueError("every sample needs at least one erasable item; some have none after the mask and exclude")
    call = ModelCall(model)

    def distribution(inp: Tensor, kw: dict[str, Any]) -> Tensor:
        with torch.no_grad(), model_guard(model):
            out = call((inp,), kw).detach()
        if out.dim() != 2:
            raise ValueError(f"erasure needs classifier outputs [N, C], the model returned {tuple(out.shape)}")
        return torch.softmax(out.double(), dim=1) if softmax else out.double()

    p = distribution(x, fkw)
    prediction = p.argmax(dim=1)
    explain_target = prediction if target is None else target
    specs = dict(rankings) if isinstance(rankings, Mapping) else {_spec_name(rankings): rankings}
    gen = generator_for(seed, torch.device("cpu"))
    if include_random and "random" not in specs:
        specs["random"] = torch.rand(n, t, generator=gen).to(x.device)
    # one random item per sample, uniform over its erasable items
    draw = torch.rand(n, t, generator=gen).to(x.device).masked_fill(~eligible, -1.0)
    random_item = draw.argmax(dim=1)
    q_random = distribution(*eraser(_one_hot(random_item, t, x.device)))
    js_random = js_divergence(p, q_random).float()
    flip_random = q_random.argmax(dim=1) != prediction

    results = {}
    for name, spec in specs.items():
        scores = _scores(spec, name, model, x, explain_target, fkw, n, t)
        scores = scores.masked_fill(~eligible, -math.inf)
        top = scores.argmax(dim=1)
        q_top = distribution(*eraser(_one_hot(top, t, x.device)))
        fraction, flipped = _first_flip(scores, eligible, prediction, eraser, distribution, max_steps)
        results[name] = ErasureResult(
            name=name, top_item=top, js_top=js_divergence(p, q_top).float(), js_random=js_random,
            flip_top=q_top.argmax(dim=1) != prediction, flip_random=flip_random,
            fraction_to_flip=fraction, flipped=flipped, n_items=eligible.sum(1))
    options = {"erase": erase if isinstance(erase, str) else getattr(erase, "__name__", "callable"),
               "seed": seed, "softmax": softmax}
    return ErasureReport(results=results, random_item=random_item, prediction=prediction, options=options)


def _first_flip(scores: Tensor, eligible: Tensor, prediction: Tensor, eraser: Callable, distribution: Callable,
                max_steps: int | None) -> tuple[Tensor, Tensor]:
    """Erase in ranked order until the argmax changes: (fraction of erasable items erased, flipped)."""
    n, t = scores.shape
    order = scores.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(t, device=scores.device).expand(n, t))
    count = eligible.sum(1)
    steps = int(count.max()) - 1 if max_steps is None else min(int(count.max()) - 1, max_steps)
    first = torch.zeros(n, dtype=torch.long, device=scores.device)     # 0 = not flipped yet
    for k in range(1, steps + 1):
        todo = (first == 0) & (count > k)       # at least one erasable item stays
        if not bool(todo.any()):
            break
        erased = (rank < k) & eligible
        q = distribution(*eraser(erased))
        flip = todo & (q.argmax(dim=1) != prediction)
        first = torch.where(flip, torch.full_like(first, k), first)
    flipped = first > 0
    fraction = torch.where(flipped, first.float() / count.float(), torch.full_like(first, math.nan, dtype=torch.float))
    return fraction, flipped


def _one_hot(index: Tensor, t: int, device: torch.device) -> Tensor:
    return torch.nn.functional.one_hot(index, t).to(device=device, dtype=torch.bool)


def _eligible(mask: Any, exclude: Any, n: int, t: int, device: torch.device) -> Tensor:
    eligible = torch.ones(n, t, dtype=torch.bool, device=device)
    if isinstance(mask, Tensor) and mask.dim() == 2 and tuple(mask.shape) == (n, t):
        eligible &= mask.to(device) != 0
    if exclude is not None:
        ex = torch.as_tensor(exclude, device=device)
        if ex.dtype != torch.bool or ex.shape not in ((t,), (n, t)):
            raise ValueError(f"exclude must be a bool tensor [T]={t} or [N, T]=({n}, {t}), got "
                             f"{tuple(ex.shape)} {ex.dtype}")
        eligible &= ~ex.expand(n, t)
    return eligible


def _eraser(erase: Any, x: Tensor, fkw: dict[str, Any], replacement: Any, mask_key: str
            ) -> Callable[[Tensor], tuple[Tensor, dict[str, Any]]]:
    """A function ``erased [N, T] bool -> (x', forward_kwargs')``."""
    n, t = x.shape[:2]
    if callable(erase):
        def custom(erased: Tensor) -> tuple[Tensor, dict[str, Any]]:
            out = erase(x, dict(fkw), erased)
            if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Tensor)):
                raise TypeError("erase: the callable must return (x', forward_kwargs')")
            return out[0], dict(out[1])
        return custom
    if erase == "mask":
        base = fkw.get(mask_key)
        if base is None:
            base = torch.ones(n, t, dtype=torch.long, device=x.device)
        elif not isinstance(base, Tensor) or tuple(base.shape) != (n, t):
            raise ValueError(f"erase='mask' needs forward_kwargs[{mask_key!r}] of shape [N, T]=({n}, {t}), got "
                             f"{getattr(base, 'shape', type(base).__name__)}")

        def by_mask(erased: Tensor) -> tuple[Tensor, dict[str, Any]]:
            kw = dict(fkw)
            kw[mask_key] = base.masked_fill(erased.to(base.device), 0)
            return x, kw
        return by_mask
    if erase == "replace":
        value = torch.as_tensor(replacement, dtype=x.dtype, device=x.device)
        if value.dim() > x.dim() - 2:
            raise ValueError(f"replacement must be a scalar or shaped like one item {tuple(x.shape[2:])}, "
                             f"got {tuple(value.shape)}")
        if not x.is_floating_point() and value.dim() != 0:
            raise ValueError("replacement for token ids must be one token id (an int)")

        def by_value(erased: Tensor) -> tuple[Tensor, dict[str, Any]]:
            sel = erased.reshape(n, t, *([1] * (x.dim() - 2)))
            return torch.where(sel, value, x), dict(fkw)
        return by_value
    raise ValueError(f"erase must be 'mask', 'replace' or a callable (x, forward_kwargs, erased) -> "
                     f"(x', forward_kwargs'), got {erase!r}")


def _spec_name(spec: Any) -> str:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, tuple) and spec and isinstance(spec[0], str):
        return spec[0]
    return getattr(spec, "__name__", "ranking")


def _scores(spec: Any, name: str, model: Any, x: Tensor, target: Any, fkw: dict[str, Any], n: int, t: int) -> Tensor:
    """The ``[N, T]`` scores of a ranking spec."""
    from ..api import explain
    from ..base import Explanation

    if isinstance(spec, str) or (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str)):
        method, options = (spec, {}) if isinstance(spec, str) else spec
        if not isinstance(options, Mapping):
            raise TypeError(f"rankings[{name!r}]: options must be a mapping, got {type(options).__name__}")
        scores = explain(model, x, method, target, forward_kwargs=fkw, **options).attributions
    elif isinstance(spec, Tensor):
        scores = spec
    elif callable(spec):
        scores = spec(model, x, target, fkw)
        if isinstance(scores, Explanation):
            scores = scores.attributions
    else:
        raise TypeError(f"rankings[{name!r}] must be a [N, T] tensor, a method name, (name, options) or a callable "
                        f"(model, x, target, forward_kwargs) -> [N, T]; got {type(spec).__name__}")
    if isinstance(scores, tuple):
        if len(scores) != 1:
            raise ValueError(f"rankings[{name!r}] gave {len(scores)} attribution tensors; need one [N, T]")
        scores = scores[0]
    if not isinstance(scores, Tensor) or scores.dim() < 2 or tuple(scores.shape[:2]) != (n, t):
        raise ValueError(f"rankings[{name!r}] must give scores [N, T]=({n}, {t}) (or [N, T, ...]), got "
                         f"{getattr(scores, 'shape', type(scores).__name__)}")
    scores = scores.detach().to(x.device)
    if scores.dim() > 2:
        scores = scores.reshape(n, t, -1).sum(dim=2)
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(f"rankings[{name!r}] contains NaN or Inf scores")
    return scores.float()

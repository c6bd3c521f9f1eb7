"""Robustness of explanations to small input perturbations.

* ``max_sensitivity`` / ``avg_sensitivity`` (Yeh et al. 2019) and ``local_lipschitz``
  (Alvarez-Melis & Jaakkola 2018): Monte-Carlo estimates over K random perturbations of x;
* ``map_stability``: the map's stability under perturbations that keep the prediction —
  random sign ±ε, and the top-k and centre-of-mass attacks of Ghorbani et al. 2019 — as rank
  correlation and top-k intersection between the original and the perturbed map.

These metrics recompute explanations: ``method`` is a method name of ``propex.methods()``
(its options in ``method_options``), a ``propex`` ``Method``, or any callable
``(model, inputs, target) -> attributions`` (maps from other libraries). Explanations of the
perturbed copies are never computed one perturbation at a time: the K·N perturbed rows
(row ``j = k·N + s``: perturbation k of sample s, k-major as in the engines) are stacked and
the explainer is called once per chunk of ``batch_size`` rows (default: as many rows as hold
6 MiB of input on CPU, 64 MiB on accelerators, at most 256 — e.g. all 3,200 rows of 200
perturbations of 16 digits in 13 calls, 8 rows of 224² images per call; the explainer bounds
its own memory inside a call). The target explained on every
perturbed copy is the one resolved on x (``None``: the top class on x, frozen), as in Yeh et
al. and Quantus. Noise is drawn per perturbation k for all N samples from one seeded
generator, so results do not depend on the chunk size.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch
from torch import Tensor

from ._common import (Explainer, check_attributions, check_choice, check_inputs, check_int, check_number,
                      check_seed, fixed_target, generator_for, prepare, resolve_explainer)
from ..model_call import model_guard
from ._stats import spearman, topk_intersection

DEFAULT_ROWS_PER_CALL = 256
# Input bytes per explainer call by default. On CPU, explainers slow down once a call outgrows
# what they evaluate in one chunk (resnet18 224² saliency, 48 rows, 1 thread: 9.4 s in calls of
# 4 or 8 rows, 15 s in calls of 12 to 24 rows: the gradient engine's first forward pass on the
# whole call is then redone in chunks), so calls stay near 8 rows of 224² images there.
INPUT_BYTES_PER_CALL = {"cpu": 6 * 1024**2, "accelerator": 64 * 1024**2}


# --------------------------------------------------------------------------- shared machinery
_F = TypeVar("_F", bound=Callable[..., Any])


def guarded(fn: _F) -> _F:
    """Run the metric inside ``model_guard(model)``: whatever the explainer does (also a user's
    callable), the model's flags, buffers, ``requires_grad``, ``.grad`` and hooks are restored."""
    @functools.wraps(fn)
    def wrapper(model: Any, *args: Any, **kwargs: Any) -> Any:
        with model_guard(model):
            return fn(model, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


def _explainer(method: Any, method_options: dict[str, Any] | None) -> Explainer:
    if method_options is None:
        method_options = {}
    if not isinstance(method_options, dict):
        raise TypeError(f"method_options must be a dict of the method's options, got {type(method_options).__name__}")
    return resolve_explainer(method, **method_options)


def _rows_target(tgt: Any, s: Tensor) -> Any:
    """The explainer's target for rows whose sample indices are ``s``."""
    if isinstance(tgt, Tensor):
        return tgt.to(s.device).index_select(0, s) if tgt.dim() >= 1 else tgt
    if isinstance(tgt, list):
        return [tgt[int(i)] for i in s.tolist()]
    return tgt        # a callable or a tuple index applies to every row alike


def _explain(explainer: Explainer, model: Any, rows: Tensor, tgt: Any, s: Tensor) -> Tensor:
    out = explainer(model, rows, _rows_target(tgt, s))
    if isinstance(out, tuple):
        if len(out) != 1:
            raise TypeError("the explainer returned a tuple of attributions; these metrics explain one input tensor")
        out = out[0]
    return check_attributions(out, rows, "the explainer's attributions", broadcast=False)


def _explain_stacked(explainer: Explainer, model: Any, flat: Tensor, tgt: Any, s_all: Tensor,
                     rows_per_call: int) -> Tensor:
    """Attributions for stacked perturbed rows ``flat`` (sample ids ``s_all``), ``rows_per_call``
    rows per explainer call — never one perturbation at a time."""
    parts = [_explain(explainer, model, flat[r0:r0 + rows_per_call], tgt, s_all[r0:r0 + rows_per_call])
             for r0 in range(0, flat.shape[0], rows_per_call)]
    return torch.cat(parts)


def _chunk_rows(batch_size: int | None, x: Tensor) -> int:
    """Rows per explainer call: ``batch_size``, or as many rows as hold ``INPUT_BYTES_PER_CALL``
    of input (6 MiB on CPU, 64 MiB on accelerators), at most 256."""
    if batch_size is not None:
        return check_int(batch_size, "batch_size", minimum=1)
    row_bytes = max(1, x[0].numel() * x.element_size())
    budget = INPUT_BYTES_PER_CALL["cpu" if x.device.type == "cpu" else "accelerator"]
    return max(1, min(DEFAULT_ROWS_PER_CALL, budget // row_bytes))


class _Noise:
    """Perturbations δ_k (one ``[N, ...]`` tensor per k), drawn per k from a seeded generator,
    or taken from a user-given ``[K, N, ...]`` tensor."""

    def __init__(self, x: Tensor, kind: str, radius: float, n: int, seed: int, given: Tensor | None):
        self.x = x
        self.kind = kind
        self.radius = radius
        self.given = given
        self.n = n if given is None else given.shape[0]
        self.gen = generator_for(seed, x.device) if given is None else None

    def block(self, k0: int, k1: int) -> Tensor:
        """``[k1 - k0, N, ...]``; must be called for consecutive blocks (the generator advances)."""
        if self.given is not None:
            return self.given[k0:k1]
        out = []
        for _ in range(k0, k1):
            if self.kind == "uniform":
                u = torch.rand(self.x.shape, generator=self.gen, device=self.x.device, dtype=self.x.dtype)
                out.append((2 * u - 1) * self.radius)
            elif self.kind == "gaussian":
                out.append(torch.randn(self.x.shape, generator=self.gen, device=self.x.device, dtype=self.x.dtype)
                           * self.radius)
            else:  # "sign"
                u = torch.rand(self.x.shape, generator=self.gen, device=self.x.device, dtype=self.x.dtype)
                out.append(torch.where(u < 0.5, -self.radius, self.radius).to(self.x.dtype))
        return torch.stack(out)


def _check_perturbations(perturbations: Any, x: Tensor) -> Tensor | None:
    if perturbations is None:
        return None
    if not isinstance(perturbations, Tensor):
        raise TypeError(f"perturbations must be a tensor [K, N, ...] of input offsets, got {type(perturbations).__name__}")
    if perturbations.dim() != x.dim() + 1 or tuple(perturbations.shape[1:]) != tuple(x.shape) \
            or perturbations.shape[0] == 0:
        raise ValueError(f"perturbations must have shape [K, *x.shape] = [K, {', '.join(map(str, x.shape))}] with "
                         f"K >= 1, got {tuple(perturbations.shape)}")
    p = perturbations.detach().to(device=x.device, dtype=x.dtype)
    if not bool(torch.isfinite(p).all()):
        raise ValueError("perturbations contain NaN or Inf values")
    return p


def _sweep(explainer: Explainer, model: Any, x: Tensor, tgt: Any, noise: _Noise, rows_per_call: int,
           consume: Callable[[int, int, Tensor, Tensor, Tensor], None]) -> None:
    """Explain x + δ_k for all k in chunks; ``consume(k0, k1, delta, x_pert, a_pert)`` gets
    ``[kb, N, ...]`` blocks of consecutive perturbations."""
    n = x.shape[0]
    kb = max(1, rows_per_call // n)
    for k0 in range(0, noise.n, kb):
        k1 = min(noise.n, k0 + kb)
        delta = noise.block(k0, k1)
        xp = (x.unsqueeze(0) + delta).reshape(-1, *x.shape[1:])
        s_all = torch.arange(n, device=x.device).repeat(k1 - k0)
        a = _explain_stacked(explainer, model, xp, tgt, s_all, rows_per_call)
        a = a.reshape(k1 - k0, n, *a.shape[1:])
        consume(k0, k1, delta, xp.reshape(k1 - k0, *x.shape), a)


_NORMS = ("fro", "l2", "l1", "linf")


def _norm(v: Tensor, norm: str) -> Tensor:
    """Per-row norm of ``[..., F]``."""
    if norm in ("fro", "l2"):
        return torch.linalg.vector_norm(v, ord=2, dim=-1)
    if norm == "l1":
        return v.abs().sum(dim=-1)
    return v.abs().amax(dim=-1)


def _sensitivities(model: Any, x: Any, method: Any, target: Any, *, radius: float, n_samples: int, noise: str,
                   norm: str, relative: bool, seed: int, batch_size: int | None, perturbations: Any,
                   attributions: Any, method_options: dict[str, Any] | None,
                   denominator: str) -> Tensor:
    """``[K, N]``: ‖Φ(x + δ_k) − Φ(x)‖ divided by ‖Φ(x)‖ (``denominator="map"``, if relative),
    by ‖δ_k‖₂ (``"input"``, the Lipschitz quotient) or by 1."""
    x = check_inputs(x)
    radius = check_number(radius, "radius", minimum=0.0, strict=True)
    n_samples = check_int(n_samples, "n_samples", minimum=1)
    kind = check_choice(noise, "noise", ("uniform", "gaussian", "sign"))
    norm = check_choice(norm, "norm", _NORMS)
    if not isinstance(relative, bool):
        raise TypeError(f"relative must be True or False, got {type(relative).__name__} {relative!r}")
    seed = check_seed(seed)
    rows = _chunk_rows(batch_size, x)
    given = _check_perturbations(perturbations, x)
    explainer = _explainer(method, method_options)
    _, prep = prepare(model, x, target)
    tgt = fixed_target(prep, target)
    n = x.shape[0]
    if attributions is None:
        a0 = _explain(explainer, model, x, tgt, torch.arange(n, device=x.device))
    else:
        a0 = check_attributions(attributions, x, broadcast=False)
    a0_flat = a0.reshape(n, -1)
    ref = _norm(a0_flat, norm)
    # Captum's convention: a zero map is divided by 1 (Quantus divides by 0)
    ref = torch.where(ref == 0, torch.ones_like(ref), ref)
    out = torch.empty(given.shape[0] if given is not None else n_samples, n, dtype=x.dtype, device=x.device)

    def consume(k0: int, k1: int, delta: Tensor, xp: Tensor, a: Tensor) -> None:
        if a.shape[2:] != a0.shape[1:]:
            raise ValueError(f"the explainer returned maps of shape {tuple(a.shape[2:])} on perturbed inputs but "
                             f"{tuple(a0.shape[1:])} on x")
        diff = _norm(a.reshape(k1 - k0, n, -1) - a0_flat.unsqueeze(0), norm)
        if denominator == "map" and relative:
            diff = diff / ref.unsqueeze(0)
        elif denominator == "input":
            dx = torch.linalg.vector_norm(delta.reshape(k1 - k0, n, -1), ord=2, dim=-1)
            diff = diff / dx
        out[k0:k1] = diff

    _sweep(explainer, model, x, tgt, _Noise(x, kind, radius, n_samples, seed, given), rows, consume)
    return out


@guarded
def max_sensitivity(model: Any, x: Tensor, method: Any = "saliency", target: Any = None, *,
                    radius: float = 0.02, n_samples: int = 10, noise: str = "uniform", norm: str = "fro",
                    relative: bool = True, seed: int = 0, batch_size: int | None = None,
                    perturbations: Tensor | None = None, attributions: Tensor | None = None,
                    method_options: dict[str, Any] | None = None) -> Tensor:
    r"""Max-sensitivity of an explanation, per sample → ``[N]``.

    .. math:: \mathrm{SENS}_{\max}(\Phi, f, x, r) = \max_{\lVert y - x\rVert_\infty \le r}
              \frac{\lVert \Phi(f, y) - \Phi(f, x)\rVert}{\lVert \Phi(f, x)\rVert}

    estimated by the maximum over ``n_samples`` points y = x + δ_k, δ uniform in the L∞ ball
    of ``radius`` (``noise="gaussian"``: δ ~ N(0, radius²); ``"sign"``: ±radius). Yeh,
    Hsieh, Suggala, Inouye & Ravikumar, "On the (In)fidelity and Sensitivity of
    Explanations", NeurIPS 2019. The paper's sensitivity is absolute (``relative=False``);
    the default divides by ‖Φ(x)‖ as Captum's ``sensitivity_max`` and Quantus'
    ``MaxSensitivity`` do (a zero map is divided by 1, as in Captum). ``norm``: ``"fro"``
    (= ``"l2"`` of the flattened map), ``"l1"``, ``"linf"``. Defaults (radius 0.02, 10
    samples) are Captum's; Quantus uses radius 0.2 and 200 samples.

    ``perturbations`` (``[K, N, ...]``) replaces the random δ_k (for exact comparisons);
    ``attributions`` replaces Φ(x) (Quantus compares with the ``a_batch`` it is given).
    """
    s = _sensitivities(model, x, method, target, radius=radius, n_samples=n_samples, noise=noise, norm=norm,
                       relative=relative, seed=seed, batch_size=batch_size, perturbations=perturbations,
                       attributions=attributions, method_options=method_options,
                       denominator="map")
    return s.amax(dim=0)


@guarded
def avg_sensitivity(model: Any, x: Tensor, method: Any = "saliency", target: Any = None, *,
                    radius: float = 0.02, n_samples: int = 10, noise: str = "uniform", norm: str = "fro",
                    relative: bool = True, seed: int = 0, batch_size: int | None = None,
                    perturbations: Tensor | None = None, attributions: Tensor | None = None,
                    method_options: dict[str, Any] | None = None) -> Tensor:
    r"""Average sensitivity of an explanation, per sample → ``[N]``.

    .. math:: \mathrm{SENS}_{\mathrm{avg}}(\Phi, f, x) = \mathbb{E}_{y \sim \mu_x}
              \frac{\lVert \Phi(f, y) - \Phi(f, x)\rVert}{\lVert \Phi(f, x)\rVert}

    the mean over ``n_samples`` perturbations (same sampling and options as
    ``max_sensitivity``). Yeh et al., NeurIPS 2019 (the integral over the neighbourhood
    distribution µ_x; absolute with ``relative=False``), Quantus' ``AvgSensitivity``.
    """
    s = _sensitivities(model, x, method, target, radius=radius, n_samples=n_samples, noise=noise, norm=norm,
                       relative=relative, seed=seed, batch_size=batch_size, perturbations=perturbations,
                       attributions=attributions, method_options=method_options,
                       denominator="map")
    return s.mean(dim=0)


@guarded
def local_lipschitz(model: Any, x: Tensor, method: Any = "saliency", target: Any = None, *,
                    radius: float = 0.1, n_samples: int = 10, noise: str = "gaussian", norm: str = "l2",
                    seed: int = 0, batch_size: int | None = None, perturbations: Tensor | None = None,
                    attributions: Tensor | None = None, method_options: dict[str, Any] | None = None) -> Tensor:
    r"""Local Lipschitz estimate of an explanation, per sample → ``[N]``.

    .. math:: \hat L(x) = \max_{x' \in B_\epsilon(x)}
              \frac{\lVert \Phi(x) - \Phi(x')\rVert_2}{\lVert x - x'\rVert_2}

    Alvarez-Melis & Jaakkola, "On the Robustness of Interpretability Methods", ICML workshop
    2018 (and "Towards Robust Interpretability with Self-Explaining Neural Networks", NeurIPS
    2018). The maximum is estimated over ``n_samples`` sampled neighbours x' = x + δ_k
    (default δ ~ N(0, 0.1²), Quantus' ``LocalLipschitzEstimate`` sampling; ``noise="uniform"``
    samples the L∞ ball of ``radius``); the paper also optimises x' (Bayesian optimisation),
    which only raises the estimate. ``norm`` is the numerator's norm (the denominator is L2).
    """
    s = _sensitivities(model, x, method, target, radius=radius, n_samples=n_samples, noise=noise, norm=norm,
                       relative=False, seed=seed, batch_size=batch_size, perturbations=perturbations,
                       attributions=attributions, method_options=method_options,
                       denominator="input")
    return s.amax(dim=0)


# --------------------------------------------------------------------------- map stability
@dataclass
class MapStability:
    """What ``map_stability`` returns.

    Attributes:
        spearman: ``[N]`` rank correlation between the original and the perturbed map.
        topk_intersection: ``[N]`` fraction of the original top-k features still in the top k.
        changed: ``[N]`` bool, whether a label-keeping perturbation was found (if not, x is
            kept as it is for the attacks — scores 1 —, and the random-sign scores are NaN).
        x_perturbed: the perturbed inputs (x where ``changed`` is False).
        maps, maps_perturbed: the compared maps (Σ_c |a|, ``[N, *S]``).
        objective: ``[N]`` the attack's objective reached (top-k: share of the perturbed map's
            mass outside the original top k, to maximise; centre: displacement of the centre of
            mass in pixels; random sign: NaN).
        attack: the attack's name.
    """

    spearman: Tensor
    topk_intersection: Tensor
    changed: Tensor
    x_perturbed: Tensor
    maps: Tensor
    maps_perturbed: Tensor
    objective: Tensor
    attack: str


def _maps(a: Tensor, x: Tensor) -> Tensor:
    """Σ_c |a| for image-like x ``[N, C, *S]`` (``[N, *S]``), else |a|."""
    a = a.abs()
    return a.sum(dim=1) if x.dim() >= 3 else a


def _center_of_mass(m: Tensor) -> Tensor:
    """``[B, *S]`` → ``[B, len(S)]`` centre of mass in grid coordinates (the grid's centre for a zero map)."""
    b = m.shape[0]
    spatial = m.shape[1:]
    total = m.reshape(b, -1).sum(dim=1)
    coords = []
    for d, size in enumerate(spatial):
        shape = [1] * len(spatial)
        shape[d] = size
        c = torch.arange(size, device=m.device, dtype=m.dtype).reshape(1, *shape)
        mass = (m * c).reshape(b, -1).sum(dim=1)
        centre = torch.full_like(mass, (size - 1) / 2)
        coords.append(torch.where(total > 0, mass / torch.where(total > 0, total, torch.ones_like(total)), centre))
    return torch.stack(coords, dim=1)


def _kept(engine: Any, prep: Any, cands: Tensor) -> Tensor:
    """``[C, N]`` bool: the top class on each candidate (``cands`` ``[C, N, ...]``) is the top class on x."""
    c = cands.shape[0]

    def perturb(k: Tensor, s: Tensor) -> tuple[Tensor, ...]:
        return (cands[k, s],)

    def margin(out: Tensor) -> Tensor:
        return out - out.amax(dim=1, keepdim=True)

    scores = engine.evaluate(prep, c, perturb, output_transform=margin)      # [N, C, 1]
    return (scores[:, :, 0] >= 0).T


@guarded
def map_stability(model: Any, x: Tensor, method: Any = "saliency", target: Any = None, *,
                  attack: str = "random_sign", epsilon: float = 8 / 255, k: int | float = 0.1,
                  n_steps: int = 10, n_candidates: int = 8, step_size: float | None = None,
                  n_samples: int = 8, clamp: tuple[float, float] | None = None, search: str = "random",
                  seed: int = 0, batch_size: int | None = None,
                  method_options: dict[str, Any] | None = None) -> MapStability:
    r"""Stability of the map under input perturbations that keep the prediction.

    Ghorbani, Abid & Zou, "Interpretation of Neural Networks is Fragile", AAAI 2019 (the
    robustness plot of seed 002). A perturbed input x' with ‖x' − x‖_∞ ≤ ε whose top class
    equals the top class on x is sought, and the maps m = Σ_c |Φ| on x and x' are compared by
    Spearman's rank correlation and the top-k intersection (``k`` features, or a fraction):

    * ``"random_sign"``: x' = x + ε·sign(u), u uniform (the paper's baseline); the first of
      ``n_samples`` draws that keeps the prediction is used;
    * ``"topk"``: maximise D(x') = 1 − Σ_{i ∈ T} m̂(x')_i, the share of the normalised
      perturbed map m̂ = m / Σm outside the original top-k set T;
    * ``"center"``: maximise D(x') = ‖C(m(x')) − C(m(x))‖₂, the displacement of the map's
      centre of mass C (in pixels).

    The attacks are iterative as in the paper (``n_steps`` steps of size ``step_size``,
    default ε/4, projected onto the ε-ball and onto ``clamp`` = (lo, hi) if given, keeping
    the label at every step), but search instead of following ∇D: each step draws
    ``n_candidates`` random sign directions for every sample, explains all N·C candidates
    in stacked calls, discards those that change the prediction and keeps the best if it
    improves D. Ghorbani et al. differentiate D through the map (second derivatives, ReLU
    replaced by softplus); the search needs no gradient of the explainer, so it attacks any
    method (LRP, occlusion, other libraries' maps) — it is a weaker attacker, so its scores
    are upper bounds on the stability.

    ``search="gradient"`` is the paper's iteration for explainers whose attributions are
    differentiable in the inputs (a callable that builds them with ``create_graph=True``;
    propex's methods return detached maps): x ← Π(x + step·sign(∇_x D)), a step that changes
    the prediction is rejected (the sample stays where it is), and the best point seen is
    kept; one batched explanation with a double-backward per step for all N samples.
    """
    x = check_inputs(x)
    kind = check_choice(attack, "attack", ("random_sign", "topk", "center"))
    eps = check_number(epsilon, "epsilon", minimum=0.0, strict=True)
    n_steps = check_int(n_steps, "n_steps", minimum=1)
    n_candidates = check_int(n_candidates, "n_candidates", minimum=1)
    n_samples = check_int(n_samples, "n_samples", minimum=1)
    mode = check_choice(search, "search", ("random", "gradient"))
    step = eps / 4 if step_size is None else check_number(step_size, "step_size", minimum=0.0, strict=True)
    seed = check_seed(seed)
    rows = _chunk_rows(batch_size, x)
    if clamp is not None:
        if not (isinstance(clamp, (tuple, list)) and len(clamp) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in clamp) and clamp[0] < clamp[1]):
            raise ValueError(f"clamp must be a pair (lo, hi) of numbers with lo < hi, got {clamp!r}")
    explainer = _explainer(method, method_options)
    engine, prep = prepare(model, x, None)        # the top class on x: the prediction to keep
    _, tprep = prepare(model, x, target) if target is not None else (engine, prep)
    tgt = fixed_target(tprep, target)
    n = x.shape[0]
    idx = torch.arange(n, device=x.device)
    a0 = _explain(explainer, model, x, tgt, idx)
    m0 = _maps(a0, x)
    f = m0[0].numel()
    kk = _k_count(k, f)
    gen = generator_for(seed, x.device)

    def project(c: Tensor) -> Tensor:
        c = torch.minimum(torch.maximum(c, x - eps), x + eps)
        return c.clamp(clamp[0], clamp[1]) if clamp is not None else c

    def explain_all(cands: Tensor) -> Tensor:
        """``[C, N, ...]`` → maps ``[C, N, *S]``, in stacked calls of ``rows`` rows."""
        flat = cands.reshape(-1, *x.shape[1:])
        a = _explain_stacked(explainer, model, flat, tgt, idx.repeat(cands.shape[0]), rows)
        return _maps(a, flat).reshape(cands.shape[0], n, *m0.shape[1:])

    def signs(c: int) -> Tensor:
        u = torch.rand((c, *x.shape), generator=gen, device=x.device, dtype=x.dtype)
        return torch.where(u < 0.5, -1.0, 1.0).to(x.dtype)

    top = torch.zeros(n, f, dtype=torch.bool, device=x.device)
    top.scatter_(1, torch.topk(m0.reshape(n, -1), kk, dim=1).indices, True)
    c0 = _center_of_mass(m0)

    def objective(maps: Tensor) -> Tensor:          # maps [C, N, *S] -> [C, N]
        c = maps.shape[0]
        flat = maps.reshape(c, n, -1)
        if kind == "topk":
            tot = flat.sum(dim=2)
            inside = (flat * top.unsqueeze(0)).sum(dim=2)
            return 1 - torch.where(tot > 0, inside / torch.where(tot > 0, tot, torch.ones_like(tot)), torch.ones_like(tot))
        cm = _center_of_mass(maps.reshape(c * n, *maps.shape[2:])).reshape(c, n, -1)
        return torch.linalg.vector_norm(cm - c0.unsqueeze(0), dim=2)

    if kind != "random_sign" and mode == "gradient":
        # ∇D vanishes at x for the centre attack (‖C(x') − C(x)‖ is flat at its minimum): a random
        # sign step of the step size starts it, where it keeps the prediction
        start = project(x + step * signs(1)[0]) if kind == "center" else x
        x_pert, m1, obj, found = _gradient_attack(explainer, model, x, tgt, engine, prep, objective, project,
                                                  n_steps, step, m0, start)
    elif kind == "random_sign":
        cands = project(x.unsqueeze(0) + eps * signs(n_samples))
        kept = _kept(engine, prep, cands)                           # [S, N]
        found = kept.any(dim=0)
        first = kept.to(torch.int8).argmax(dim=0)
        x_pert = torch.where(_bcast(found, x), cands[first, idx], x)
        m1 = explain_all(x_pert.unsqueeze(0))[0]
        obj = torch.full((n,), float("nan"), dtype=x.dtype, device=x.device)
    else:
        x_cur = x.clone()
        m1 = m0.clone()
        best = objective(m0.unsqueeze(0))[0]
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        for _ in range(n_steps):
            cands = project(x_cur.unsqueeze(0) + step * signs(n_candidates))
            kept = _kept(engine, prep, cands)                       # [C, N]
            maps = explain_all(cands)
            obj_c = objective(maps).masked_fill(~kept, -math.inf)
            val, arg = obj_c.max(dim=0)
            better = val > best
            x_cur = torch.where(_bcast(better, x), cands[arg, idx], x_cur)
            m1 = torch.where(_bcast(better, m1), maps[arg, idx], m1)
            best = torch.where(better, val, best)
            found = found | better
        x_pert = x_cur
        obj = best
    rho = spearman(m0, m1)
    inter = topk_intersection(m0, m1, kk)
    if kind == "random_sign":
        nan = torch.full_like(rho, float("nan"))
        rho = torch.where(found, rho, nan)
        inter = torch.where(found, inter, nan)
    return MapStability(spearman=rho, topk_intersection=inter, changed=found, x_perturbed=x_pert, maps=m0,
                        maps_perturbed=m1, objective=obj, attack=kind)


def _gradient_attack(explainer: Explainer, model: Any, x: Tensor, tgt: Any, engine: Any, prep: Any,
                     objective: Callable[[Tensor], Tensor], project: Callable[[Tensor], Tensor], n_steps: int,
                     step: float, m0: Tensor, start: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Ghorbani et al.'s iterative sign-gradient ascent on D, rejecting label-changing steps."""
    n = x.shape[0]
    idx = torch.arange(n, device=x.device)
    x_cur = torch.where(_bcast(_kept(engine, prep, start.unsqueeze(0))[0], x), start, x)
    moved = (x_cur != x).reshape(n, -1).any(dim=1)        # the start point counts if it is not x itself
    best_x, best_m = x.clone(), m0.clone()
    best = objective(m0.unsqueeze(0))[0]
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    for it in range(n_steps + 1):
        xi = x_cur.detach().requires_grad_(True)
        with torch.enable_grad():
            a = explainer(model, xi, _rows_target(tgt, idx))
            if isinstance(a, tuple) and len(a) == 1:
                a = a[0]
            if not isinstance(a, Tensor) or not a.requires_grad:
                raise ValueError("map_stability(search='gradient') needs an explainer whose attributions are "
                                 "differentiable in the inputs (e.g. a callable computing them with "
                                 "torch.autograd.grad(..., create_graph=True)); propex methods return detached "
                                 "maps: use search='random'")
            if tuple(a.shape) == (n, *m0.shape[1:]) and x.dim() >= 3:
                maps = a.abs()                              # a channel-reduced [N, *S] map
            elif tuple(a.shape) == tuple(x.shape) or (x.dim() >= 3 and tuple(a.shape) == (n, 1, *m0.shape[1:])):
                maps = _maps(a, x)
            else:
                raise ValueError(f"the explainer's attributions of shape {tuple(a.shape)} do not match x of "
                                 f"shape {tuple(x.shape)}")
            d = objective(maps.unsqueeze(0))[0]
            better = (d.detach() > best) & (moved if it == 0 else torch.ones_like(moved))
            best = torch.where(better, d.detach(), best)
            best_x = torch.where(_bcast(better, x), x_cur, best_x)
            best_m = torch.where(_bcast(better, best_m), maps.detach(), best_m)
            found = found | better
            if it == n_steps:
                break
            (g,) = torch.autograd.grad(d.sum(), xi)
        x_new = project(x_cur + step * torch.nan_to_num(g).sign())
        kept = _kept(engine, prep, x_new.unsqueeze(0))[0]
        x_cur = torch.where(_bcast(kept, x), x_new, x_cur)
    return best_x, best_m, best, found


def _bcast(flag: Tensor, like: Tensor) -> Tensor:
    return flag.reshape(-1, *([1] * (like.dim() - 1)))


def _k_count(k: int | float, f: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise TypeError(f"k must be an int count or a fraction in (0, 1), got {type(k).__name__} {k!r}")
    if isinstance(k, float):
        if not 0 < k < 1:
            raise ValueError(f"k given as a float must be a fraction in (0, 1), got {k}")
        return max(1, int(round(k * f)))
    if not 1 <= k <= f:
        raise ValueError(f"k must be in [1, {f}] (features per map), got {k}")
    return k


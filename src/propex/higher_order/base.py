r"""Shared machinery of the second-order methods: points on a path, Hessian-vector products, groups.

A second-order method is given by a node set :math:`(t_k, w^{(1)}_k, w^{(2)}_k)`: points
:math:`z_k = x' + t_k\,\Delta x` (:math:`\Delta x = x - x'`) and

.. math:: \Gamma_{GH} = \sum_k w^{(2)}_k \sum_{i \in G,\, j \in H} \Delta x_i\,\partial_{ij} f(z_k)\,\Delta x_j
          \;+\; [G = H] \sum_k w^{(1)}_k \sum_{i \in G} \Delta x_i\,\partial_i f(z_k)

for groups G, H of the flattened features (every feature its own group by default). The
Hessian is never formed: per point, one backward pass with ``create_graph=True`` gives
:math:`\nabla f(z)`, and one batched double-backward (``is_grads_batched=True``, i.e. vmap over
directions) gives :math:`H v` for a chunk of directions :math:`v_H = \Delta x \odot 1_H` —
one direction per group, so grouping a 150 000-pixel image into 49 patches costs 49
Hessian-vector products per point, not 150 000. Points × directions per pass are bounded by
``batch_size`` or by ``memory_budget`` (bytes autograd saves per point, measured on x).
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any

import torch
from torch import Tensor

from ..base import Explanation, Method
from ..batching import ranges
from ..gradient.engine import GradientEngine, Prepared
from ..gradient.integrated_gradients import path_baselines
from ..inputs import require_float
from ..perturbation.feature_ablation import feature_masks
from ..propagation.smoothing import check_beta
from .smoothing import softplus_forward

MAX_FEATURES = 4096   # without groups: [N, d, d] interactions; beyond this ask for groups=


class InteractionMethod(Method):
    """Base class: options ``baseline``, ``groups``, ``beta_smooth``, ``layer``/``layer_input``,
    ``batch_size``/``memory_budget``, ``seed`` (for ``baseline="uniform"``)."""

    family = "higher_order"
    claims_completeness = True

    def __init__(self, model: Any, *, baseline: Any = None, groups: Any = None, beta_smooth: float | None = None,
                 layer: Any = None, layer_input: bool = False, batch_size: int | None = None,
                 memory_budget: Any = None, seed: int | None = None, hvp: str = "reverse", **options: Any):
        self.beta = check_beta(beta_smooth)
        if hvp not in ("reverse", "forward"):
            raise ValueError(f"hvp={hvp!r}; choose 'reverse' (autograd double-backward, batched over directions) "
                             "or 'forward' (torch.func: jvp of grad, vmapped over directions)")
        self.hvp = hvp
        _check_groups(groups)
        super().__init__(model, **options)
        self.options.update({k: v for k, v in dict(baseline=baseline, groups=groups, beta_smooth=beta_smooth,
                                                   seed=seed).items() if v is not None}, hvp=hvp)
        if layer is not None:
            self.options["layer"] = layer if isinstance(layer, str) else type(layer).__name__
        self.baseline, self.groups, self.seed = baseline, groups, seed
        self.engine = GradientEngine(model, layer=layer, layer_input=layer_input, batch_size=batch_size,
                                     memory_budget=memory_budget)

    def nodes(self) -> tuple[Tensor, Tensor, Tensor]:
        """Float64 ``(t [K], w1 [K], w2 [K])``: path positions, first- and second-order weights."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the pass
    def _explain(self, x: Any, target: Any, forward_kwargs: dict[str, Any] | None) -> Explanation:
        with softplus_forward(self.beta), _math_attention():
            prep = self.engine.prepare(x, target, forward_kwargs)
            if self.engine.tap is None:
                require_float(prep.inputs, "x", self.name)
            space = prep.space
            gidx, ids = self._group_index(prep)
            n_groups = ids.numel()
            if self.groups is None and n_groups > MAX_FEATURES:
                raise ValueError(f"{self.name}: x has d={n_groups} features per sample, so the interactions would be "
                                 f"[N, {n_groups}, {n_groups}]; pass groups= (an integer mask of patches or tokens, "
                                 f"as feature_ablation's feature_mask) to get [N, G, G] group interactions")
            flat_x = _flatten(space)
            total_attr, total_delta = None, None
            baselines = path_baselines(self, prep, self.baseline, self.seed)
            for base in baselines:
                flat_b = _flatten(base).to(flat_x.dtype)
                attr = self._interactions(prep, flat_b, flat_x - flat_b, gidx, n_groups)
                f_base = self.engine.values(prep, base, torch.arange(prep.n, device=flat_x.device))
                delta = attr.sum(dim=(-1, -2)) - (prep.target_values() - f_base)
                total_attr = attr if total_attr is None else total_attr + attr
                total_delta = delta if total_delta is None else total_delta + delta
        m = len(baselines)
        attr, delta = total_attr / m, total_delta / m
        if not prep.target.multi:
            attr, delta = attr[:, 0], delta[:, 0]
        options = dict(self.options)
        if self.groups is not None:
            options["group_ids"] = ids.tolist()
        return Explanation(attr, prep.target.public(), prep.outputs, delta, self.name, options)

    def _group_index(self, prep: Prepared) -> tuple[Tensor, Tensor]:
        """Group index per flattened feature ``[1 or N, d]`` (0..G-1) and the sorted group ids ``[G]``."""
        space = prep.space
        if self.groups is None:
            d = sum(t[:1].numel() for t in space)
            ids = torch.arange(d, device=space[0].device)
            return ids.unsqueeze(0), ids
        was_tuple = prep.was_tuple and self.engine.tap is None
        masks = feature_masks(self.groups, space, was_tuple)
        rows = max(m.shape[0] for m in masks)
        flat = torch.cat([m.expand(rows, *t.shape[1:]).reshape(rows, -1) for m, t in zip(masks, space)], dim=1)
        ids = torch.unique(flat)
        return torch.searchsorted(ids, flat.contiguous()), ids

    def _interactions(self, prep: Prepared, flat_b: Tensor, dx: Tensor, gidx: Tensor, n_groups: int) -> Tensor:
        """``[N, T, G, G]`` interactions for one baseline (``flat_b``, ``dx``: ``[N, d]``)."""
        n, d = dx.shape
        ts, w1, w2 = (v.to(dtype=dx.dtype, device=dx.device) for v in self.nodes())
        n_targets = prep.target_values().shape[1]
        first = torch.zeros(n, n_targets, n_groups, dtype=dx.dtype, device=dx.device)
        second = torch.zeros(n, n_targets, n_groups, n_groups, dtype=dx.dtype, device=dx.device)
        total = ts.numel() * n
        cap = self.engine.chunk(prep, total * n_groups)
        size = min(cap, total)
        per_pass = max(1, min(n_groups, cap // size))       # directions per batched double-backward
        space_shapes = [t.shape[1:] for t in prep.space]
        for start, stop in ranges(total, size):
            j = torch.arange(start, stop, device=dx.device)
            k, s = j // n, j % n
            dx_s = dx.index_select(0, s)
            g_rows = gidx.index_select(0, s) if gidx.shape[0] > 1 else gidx.expand(len(s), d)
            z = flat_b.index_select(0, s) + ts[k].unsqueeze(1) * dx_s
            for t in range(n_targets):
                hvp = self._hvp_fn(prep, z, s, t, space_shapes)
                grad = hvp(None)
                per_group = torch.zeros(len(s), n_groups, dtype=dx.dtype, device=dx.device)
                per_group.scatter_add_(1, g_rows, grad * dx_s)
                first[:, t].index_add_(0, s, w1[k].unsqueeze(1) * per_group)
                for c0, c1 in ranges(n_groups, per_pass):
                    cols = torch.arange(c0, c1, device=dx.device)
                    directions = dx_s.unsqueeze(0) * (g_rows.unsqueeze(0) == cols.reshape(-1, 1, 1)).to(dx.dtype)
                    hv = hvp(directions)                                            # [m, B, d] or None
                    if hv is None:                  # the target is linear in x: no second-order term
                        break
                    m, b = directions.shape[:2]
                    block = torch.zeros(m, b, n_groups, dtype=dx.dtype, device=dx.device)
                    block.scatter_add_(2, g_rows.unsqueeze(0).expand(m, b, d), hv * dx_s.unsqueeze(0))
                    second[:, t, :, c0:c1].index_add_(0, s, w2[k].reshape(-1, 1, 1) * block.permute(1, 2, 0))
        return second + torch.diag_embed(first)

    def _hvp_fn(self, prep: Prepared, z: Tensor, s: Tensor, t: int, shapes: list[torch.Size]):
        """``hvp(None)`` -> gradient ``[B, d]`` at ``z``; ``hvp(V [m, B, d])`` -> Hessian-vector products or None."""
        def target(zf: Tensor) -> Tensor:
            return prep.target.select(self.engine._forward(prep, _unflatten(zf, shapes), s), s)[:, t]
        if self.hvp == "forward":
            return _forward_over_reverse(target, z)
        return _reverse_over_reverse(target, z)


def _reverse_over_reverse(target: Any, z: Tensor) -> Any:
    """One backward with ``create_graph=True``, then batched double-backward passes (vmap over directions)."""
    with torch.enable_grad():
        leaf = z.detach().requires_grad_()
        (grad,) = torch.autograd.grad(target(leaf).sum(), leaf, create_graph=True)

    def hvp(directions: Tensor | None) -> Tensor | None:
        if directions is None:
            return grad.detach()
        if not grad.requires_grad:
            return None
        try:
            (hv,) = torch.autograd.grad(grad, leaf, grad_outputs=directions, is_grads_batched=True,
                                        retain_graph=True, allow_unused=True)
        except RuntimeError:   # an op without a batching rule: one double-backward per direction
            parts = [torch.autograd.grad(grad, leaf, grad_outputs=v, retain_graph=True, allow_unused=True)[0]
                     for v in directions]
            hv = None if any(p is None for p in parts) else torch.stack(parts)
        return None if hv is None else hv.detach()
    return hvp


def _forward_over_reverse(target: Any, z: Tensor) -> Any:
    """``torch.func``: the gradient by ``grad``, Hessian-vector products by ``jvp`` of it, vmapped over directions."""
    from torch.func import grad as func_grad, jvp, vmap
    grad_fn = func_grad(lambda zf: target(zf).sum())

    def hvp(directions: Tensor | None) -> Tensor | None:
        # functorch differentiates anyway: no autograd graph for the parameters. torch's own first
        # use of vmap scripts a helper and warns that torch.jit.script is deprecated: not the user's concern
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated", category=FutureWarning)
            if directions is None:
                return grad_fn(z)
            return vmap(lambda v: jvp(grad_fn, (z,), (v,))[1])(directions)
    return hvp


def _math_attention() -> Any:
    """Fused attention kernels (flash, memory-efficient) have no second derivative: use the math one."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - older torch
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


def _flatten(tensors: tuple[Tensor, ...]) -> Tensor:
    return torch.cat([t.reshape(t.shape[0], -1) for t in tensors], dim=1)


def _unflatten(flat: Tensor, shapes: list[torch.Size]) -> tuple[Tensor, ...]:
    sizes = [int(torch.Size(s).numel()) for s in shapes]
    return tuple(part.reshape(flat.shape[0], *shape) for part, shape in zip(flat.split(sizes, dim=1), shapes))


def _check_groups(groups: Any) -> None:
    items = groups if isinstance(groups, (tuple, list)) else (groups,)
    for m in items:
        if m is None and not isinstance(groups, (tuple, list)):
            continue
        if callable(m) and not isinstance(m, Tensor) and not isinstance(groups, (tuple, list)):
            continue
        if not isinstance(m, Tensor):
            raise TypeError(f"groups must be an integer tensor of group ids (like feature_ablation's feature_mask), "
                            f"a tuple of them for tuple inputs, or a callable x -> mask; got {type(m).__name__}")
        if m.dtype.is_floating_point or m.dtype.is_complex or m.dtype == torch.bool:
            raise TypeError(f"groups must hold integer group ids, got dtype {m.dtype}")

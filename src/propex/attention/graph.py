"""Attention rollout and attention flow on (heads-reduced) attention matrices (Abnar & Zuidema, 2020).

Pure tensor functions, also usable on maps captured elsewhere:

* ``residual_attention(A)``: Â = row-normalise(0.5·A + 0.5·I), the attention of a layer with its
  residual connection (rows of padded tokens are left as they are; their columns are zero).
* ``rollout(maps)``: R = Â_L · Â_{L-1} ··· Â_1, ``[N, T, T]``; row i says how much of token i's
  final representation comes from each input token.
* ``max_flow(capacity, source, sink)``: batched push-relabel on dense capacity matrices.
* ``attention_flow(maps, position)``: for each input token j the value of a maximum flow from
  node (0, j) to node (L, position) in the layered graph whose edge (l-1, j) → (l, i) has capacity
  Â_l[i, j]; ``[N, T]``.

Abnar, S. & Zuidema, W. "Quantifying Attention Flow in Transformers", ACL 2020.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def residual_attention(a: Tensor) -> Tensor:
    """Â = (0.5·A + 0.5·I) / row sums, for ``A`` of shape ``[N, T, T]``."""
    if a.dim() != 3 or a.shape[1] != a.shape[2]:
        raise ValueError(f"residual_attention needs square self-attention maps [N, T, T], got {tuple(a.shape)}")
    eye = torch.eye(a.shape[1], dtype=a.dtype, device=a.device)
    mixed = 0.5 * a + 0.5 * eye
    return mixed / mixed.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)


def rollout(maps: Sequence[Tensor], residual: bool = True) -> Tensor:
    """R = Â_L ··· Â_1 for heads-reduced maps ``[N, T, T]`` listed from the first layer to the last."""
    if len(maps) == 0:
        raise ValueError("rollout needs at least one attention map")
    result = None
    for a in maps:
        a_hat = residual_attention(a) if residual else a
        result = a_hat if result is None else a_hat @ result
    return result


def max_flow(capacity: Tensor, source: Tensor, sink: Tensor) -> Tensor:
    """Values of maximum s-t flows, one problem per row of a batch (synchronous push-relabel).

    Args:
        capacity: ``[B, V, V]`` non-negative capacities, ``capacity[b, u, v]`` for the edge u → v.
        source, sink: ``[B]`` node indices.

    Goldberg & Tarjan's preflow push-relabel, run for all problems and all active nodes at once:
    each round every active node (positive excess, height < V) either pushes its excess greedily
    over its admissible residual edges (height one lower) or, having none, is relabelled to one
    more than its lowest residual neighbour. Simultaneous pushes never meet on one edge (they go
    strictly downhill) and simultaneous relabels keep the labelling valid, so when no node below
    height V is active the sink's excess is the maximum flow value (the first phase of
    push-relabel; the excess left stranded would only flow back to the source). Heights start at
    the exact residual distance to the sink and are recomputed every V rounds (global relabelling).
    Computed in float64; tested against ``networkx.maximum_flow_value``.
    """
    if capacity.dim() != 3 or capacity.shape[1] != capacity.shape[2]:
        raise ValueError(f"capacity must be [B, V, V], got {tuple(capacity.shape)}")
    if bool((capacity < 0).any()):
        raise ValueError("capacity must be non-negative")
    b, v_count, _ = capacity.shape
    res = capacity.detach().to(torch.float64).clone()
    device = res.device
    rows = torch.arange(b, device=device)
    source = source.to(device).long()
    sink = sink.to(device).long()
    tol = 1e-12 * float(res.max()) if res.numel() else 0.0
    special = torch.zeros(b, v_count, dtype=torch.bool, device=device)
    special[rows, source] = True
    special[rows, sink] = True

    def labels() -> Tensor:
        h = _distance_to_sink(res > tol, sink)
        h[rows, source] = v_count
        return h

    height = labels()
    out = res[rows, source].clone()                         # saturate the source's edges
    res[rows, source] -= out
    res.transpose(1, 2)[rows, source] += out
    excess = out
    excess[rows, source] = 0
    excess = torch.where(source.unsqueeze(1) == sink.unsqueeze(1), torch.zeros_like(excess), excess)
    rounds = 0
    while True:
        active = (excess > tol) & ~special & (height < v_count)
        if not bool(active.any()):
            break
        rounds += 1
        if rounds % v_count == 0:
            height = torch.where(special, height, labels())
            continue
        residual = res > tol
        admissible = residual & (height.unsqueeze(2) == height.unsqueeze(1) + 1) & active.unsqueeze(2)
        offer = torch.where(admissible, res, torch.zeros_like(res))
        before = offer.cumsum(2) - offer
        push = torch.minimum(offer, (excess.unsqueeze(2) - before).clamp_min(0))
        res = res - push + push.transpose(1, 2)
        excess = excess - push.sum(2) + push.sum(1)
        relabel = active & ~admissible.any(2)
        if bool(relabel.any()):
            neighbour = torch.where(residual, height.unsqueeze(1), torch.full_like(height, 2 * v_count).unsqueeze(1))
            height = torch.where(relabel, (neighbour.min(2).values + 1).clamp_max(2 * v_count), height)
    return excess[rows, sink]


def _distance_to_sink(edges: Tensor, sink: Tensor) -> Tensor:
    """Residual distance ``[B, V]`` of every node to the sink (V where unreachable)."""
    b, v_count, _ = edges.shape
    rows = torch.arange(b, device=edges.device)
    dist = torch.full((b, v_count), v_count, dtype=torch.long, device=edges.device)
    dist[rows, sink] = 0
    frontier = dist == 0
    for k in range(1, v_count):
        new = (edges & frontier.unsqueeze(1)).any(2) & (dist == v_count)
        if not bool(new.any()):
            break
        dist[new] = k
        frontier = new
    return dist


def layered_capacity(maps: Sequence[Tensor]) -> Tensor:
    """The ``[N, V, V]`` capacity matrix of the layered attention graph, V = (L+1)·T: node
    (l, i) has index l·T + i and the edge (l-1, j) → (l, i) has capacity ``maps[l-1][:, i, j]``."""
    n, t, _ = maps[0].shape
    v_count = (len(maps) + 1) * t
    cap = maps[0].new_zeros(n, v_count, v_count)
    for layer, a in enumerate(maps):
        lo, hi = layer * t, (layer + 1) * t
        cap[:, lo:hi, hi:hi + t] = a.transpose(1, 2)
    return cap


def attention_flow(maps: Sequence[Tensor], position: Tensor) -> Tensor:
    """``[N, T]``: max-flow value from each input token to output node ``position`` (``[N]``)
    through the layered graph of the (already residual-adjusted) maps ``[N, T, T]``."""
    if len(maps) == 0:
        raise ValueError("attention_flow needs at least one attention map")
    n, t, _ = maps[0].shape
    cap = layered_capacity(maps)
    v_count = cap.shape[1]
    batch = cap.unsqueeze(1).expand(n, t, v_count, v_count).reshape(n * t, v_count, v_count)
    source = torch.arange(t, device=cap.device).repeat(n)
    sink = (len(maps) * t + position.to(cap.device).long()).repeat_interleave(t)
    return max_flow(batch, source, sink).reshape(n, t).to(maps[0].dtype)

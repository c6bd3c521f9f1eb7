r"""GNN-LRP: the relevance of walks through a message-passing network (Schnake et al. 2020).

A message-passing network computes node states :math:`H^t = g_t(H^{t-1}, \Lambda)`, t = 1..T,
and an output from :math:`H^T`. First-order LRP gives each input node its relevance. GNN-LRP
resolves it further into *walks* :math:`W = (j_0, j_1, \dots, j_T)` along the graph: the
relevance of W is what arrives at node :math:`j_0`'s input features when, at the output of every
layer t, the backward relevance is kept only at node :math:`j_t`:

.. math:: R_W = \sum_i \Big[\,\mathcal{L}_1 \circ M_{j_1} \circ \mathcal{L}_2 \circ \cdots \circ
          M_{j_T} \circ \mathcal{L}_{\text{out}}\,(R^{\text{out}})\Big]_{j_0 i}

with :math:`\mathcal{L}_t` the LRP backward map of layer t and :math:`M_j` the restriction to
node j. The LRP backward maps are linear in the relevance (for a fixed forward pass), so the
walk relevances of a conservative rule (LRP-0, or ε/γ with biases excluded) sum exactly to the
explained output: :math:`\sum_W R_W = f(x)` — the higher-order Taylor decomposition of seed
001, section 3.d. Walks between non-adjacent nodes have zero relevance and are never formed.

The number of walks grows like :math:`n\,d^T`; restrict them to walks through given ``nodes``
or prune with ``top_k`` (a beam search from the output layer down: only the ``top_k`` most
relevant walk suffixes are extended at each layer; a suffix's relevance is the sum over all its
completions, computed exactly with the same masks).

Every walk is one row of a batched pass: the graph is replicated, and forward hooks on the
``layers`` modules apply per-row masks that leave the forward values untouched and act on the
backward message only, so any propagation method of propex (LRP presets, DeepLIFT, gradient×input
via ``method=``) yields walk relevances, on models written in plain PyTorch.

Schnake, Eberle, Lederer, Nakajima, Schütt, Müller, Montavon, "Higher-Order Explanations of
Graph Neural Networks via Relevant Walks", IEEE TPAMI 2022 (arXiv 2006.03589).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..layers import resolve_layer
from ..propagation.functions import RowMultiplier
from .relevance import check_graph


class _Walker(nn.Module):
    """``model(x, adjacency)`` whose listed layers apply per-row message masks ``[B, L, n]``."""

    def __init__(self, model: nn.Module, layers: Sequence[nn.Module]):
        super().__init__()
        self.model = model
        self.layers = list(layers)
        self._masks: Tensor | None = None

    def forward(self, x: Tensor, adjacency: Tensor, walk_masks: Tensor) -> Any:
        self._masks = walk_masks
        try:
            return self.model(x, adjacency)
        finally:
            self._masks = None

    @contextlib.contextmanager
    def hooked(self) -> Iterator[None]:
        handles = [layer.register_forward_hook(self._hook(t)) for t, layer in enumerate(self.layers)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _hook(self, t: int):
        def hook(module: nn.Module, args: Any, out: Any) -> Any:
            if self._masks is None or not isinstance(out, Tensor):
                return None
            if out.dim() < 2 or out.shape[1] != self._masks.shape[2]:
                raise ValueError(f"layers[{t}] ({type(module).__name__}) must output node states [B, n, ...] "
                                 f"with n={self._masks.shape[2]} nodes, got shape {tuple(out.shape)}")
            mask = self._masks[:, t].to(out.dtype).reshape(out.shape[0], out.shape[1], *[1] * (out.dim() - 2))
            if torch.all(mask == 1):
                return None
            # value unchanged, backward message times the mask (kept at the walk's node only)
            return RowMultiplier.apply(out, out, mask.expand_as(out))
        return hook


def relevant_walks(model: nn.Module, x: Tensor, adjacency: Tensor, target: Any = None, *,
                   layers: Sequence[str | nn.Module], nodes: Iterable[int] | None = None,
                   top_k: int | None = None, method: str = "lrp", self_loops: bool = True,
                   batch_size: int = 512, **options: Any) -> dict[tuple[int, ...], float]:
    """Relevance of every walk ``(j_0, ..., j_T)`` (input node first) for ``model``'s output.

    Args:
        model: a message-passing network called as ``model(x, adjacency)`` on a batch of graphs
            (``x`` ``[B, n, f]``, dense ``adjacency`` ``[B, n, n]``) returning ``[B, C]``.
        x: node features of one graph ``[n, f]``.
        adjacency: its dense adjacency ``[n, n]`` (weights allowed; a walk steps from j to k
            where ``adjacency[k, j] != 0`` or ``adjacency[j, k] != 0``, and stays where
            ``self_loops`` is true).
        target: the class to explain (default: the predicted class).
        layers: the T message-passing modules (names or modules) in order, each returning node
            states ``[B, n, ...]``.
        nodes: keep only walks through at least one of these nodes.
        top_k: beam width: keep the ``top_k`` most relevant walk suffixes at every layer
            (by absolute relevance) instead of enumerating all walks.
        method: the propagation method (``"lrp"`` with ``ignore_bias=True`` by default, so the walk
            relevances of all walks sum to the output).
        batch_size: walks per batched pass.
        **options: the method's options (e.g. ``composite="gamma"``).

    Returns:
        ``{walk: relevance}`` ordered from the most to the least relevant (by absolute value).
    """
    from ..api import explain

    n = check_graph(model, x, adjacency)
    if isinstance(layers, (str, nn.Module)) or not layers:
        raise ValueError("layers must be a non-empty list of the message-passing modules (names or modules) in order")
    mods = [resolve_layer(model, layer) for layer in layers]
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None or a positive int, got {top_k!r}")
    keep = None if nodes is None else {int(j) for j in nodes}
    if keep is not None and not all(0 <= j < n for j in keep):
        raise ValueError(f"nodes must be node indices in [0, {n}), got {sorted(keep)}")
    if method == "lrp":
        options.setdefault("ignore_bias", True)
    if target is None:
        with torch.no_grad():
            target = int(model(x[None], adjacency[None]).argmax(1)[0])

    steps = _neighbours(adjacency, self_loops)
    walker = _Walker(model, mods)
    depth = len(mods)

    def score(suffixes: list[tuple[int, ...]]) -> Tensor:
        """Relevance per input node ``[S, n]`` of each suffix ``(j_t, ..., j_T)`` (masks on its layers)."""
        out = []
        for start in range(0, len(suffixes), batch_size):
            part = suffixes[start: start + batch_size]
            masks = torch.ones(len(part), depth, n, dtype=x.dtype, device=x.device)
            for row, suffix in enumerate(part):
                first = depth - len(suffix)
                for t, j in enumerate(suffix, start=first):
                    masks[row, t].zero_()[j] = 1
            xb = x.expand(len(part), *x.shape).clone()
            ab = adjacency.expand(len(part), n, n).clone()
            with walker.hooked():
                exp = explain(walker, xb, method, target=target, forward_kwargs={"adjacency": ab, "walk_masks": masks},
                              **options)
            a = exp.attributions
            out.append(a.reshape(len(part), n, -1).sum(2))
        return torch.cat(out)

    if top_k is None:
        walks = _enumerate(steps, n, depth, keep)
        if not walks:
            return {}
        suffixes = [w[1:] for w in walks]
        uniq = list(dict.fromkeys(suffixes))
        rel = score(uniq)
        index = {s: i for i, s in enumerate(uniq)}
        values = {w: float(rel[index[w[1:]], w[0]]) for w in walks}
    else:
        beam: list[tuple[int, ...]] = [()]
        for level in range(depth):
            cands = list(dict.fromkeys(((j,) + s) for s in beam for j in (steps[s[0]] if s else range(n))))
            rel = score(cands).sum(1)
            order = rel.abs().argsort(descending=True)
            beam = [cands[i] for i in order[:top_k].tolist()]
        rel = score(beam)
        values = {}
        for i, s in enumerate(beam):
            for j in steps[s[0]]:
                values[(j,) + s] = float(rel[i, j])
        if keep is not None:
            values = {w: v for w, v in values.items() if keep.intersection(w)}
        values = dict(sorted(values.items(), key=lambda kv: -abs(kv[1]))[:top_k])
    return dict(sorted(values.items(), key=lambda kv: -abs(kv[1])))


def _neighbours(adjacency: Tensor, self_loops: bool) -> list[list[int]]:
    a = (adjacency != 0) | (adjacency.T != 0)
    if self_loops:
        a = a | torch.eye(a.shape[0], dtype=torch.bool, device=a.device)
    return [torch.nonzero(row).flatten().tolist() for row in a.cpu()]


def _enumerate(steps: list[list[int]], n: int, depth: int, keep: set[int] | None) -> list[tuple[int, ...]]:
    walks: list[tuple[int, ...]] = [(j,) for j in range(n)]
    for _ in range(depth):
        walks = [w + (k,) for w in walks for k in steps[w[-1]]]
    if keep is not None:
        walks = [w for w in walks if keep.intersection(w)]
    return walks

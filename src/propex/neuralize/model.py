r"""``NeuralizedModel``: a first layer (distances or pairwise linear maps), soft-min pooling, a link.

``forward(x) = link(smin_β(first(x)))`` with ``x`` ``[N, d]`` and output ``[N, K]`` (``K = 1``
for the kernel density / one-class models). The link is the identity, a negation, or
``exp(-o) + offset`` (one-class SVM's ``decision_function``).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import PairwiseLinear, SoftMin, SquaredDistance

LINKS = ("identity", "negate", "decision_function")


class Neuralized(nn.Module):
    """What ``neon`` needs from a neuralized model: ``check_input``, ``forward`` ``[N, K]`` and
    ``relevance(x, k, epsilon)`` -> input relevance ``[N, d]`` of output ``k[N]``."""

    source: str = ""

    @property
    def n_features(self) -> int:
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        return next(self.buffers()).dtype

    def check_input(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor [N, {self.n_features}], got {type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"x must have shape [N, {self.n_features}] (the {self.source} was fitted on "
                             f"{self.n_features} features), got {tuple(x.shape)}")
        return x.to(self.dtype)

    def check_explainable(self) -> None:
        """Raise if ``neon`` cannot explain this model's output."""

    def relevance(self, x: Tensor, k: Tensor, epsilon: float = 0.0) -> Tensor:
        raise NotImplementedError


class NeuralizedModel(Neuralized):
    """A scikit-learn model rewritten as a strictly equivalent two-layer network (see ``propex.neuralize``).

    Attributes: ``first`` (:class:`SquaredDistance` or :class:`PairwiseLinear`), ``pool``
    (:class:`SoftMin`), ``link``, ``offset``, ``output`` (what the output means), ``source``
    (the scikit-learn class name), ``classes`` (class labels or cluster indices, or None).
    Inputs are cast to the model's dtype (float64 by default).
    """

    def __init__(self, first: SquaredDistance | PairwiseLinear, pool: SoftMin, *, link: str = "identity",
                 offset: float = 0.0, output: str = "", source: str = "", classes: list | None = None):
        super().__init__()
        if link not in LINKS:
            raise ValueError(f"link={link!r}; choose one of {', '.join(LINKS)}")
        self.first, self.pool = first, pool
        self.link, self.offset = link, float(offset)
        self.output, self.source, self.classes = output, source, classes

    @property
    def n_features(self) -> int:
        buf = self.first.centers if isinstance(self.first, SquaredDistance) else self.first.weight
        return buf.shape[-1]

    def check_explainable(self) -> None:
        if self.link == "decision_function":
            raise ValueError("neon conserves the outlier score o(x) = -log sum_j alpha_j k(x, s_j); the "
                             "OneClassSVM decision_function exp(-o) - rho is not conservative: use "
                             "propex.neuralize(ocsvm, output='outlier_score')")

    def relevance(self, x: Tensor, k: Tensor, epsilon: float = 0.0) -> Tensor:
        """NEON: the pooled score of output ``k`` to the pooled units by the soft-min weights, then to
        the inputs by the first layer's rule (negated for ``link="negate"``)."""
        x = self.preprocess(x)
        h = self.first(x)                                                  # [N, K, L]
        rows = torch.arange(x.shape[0], device=x.device)
        h_k = h[rows, k]
        r_pool = self.pool.weights(h_k) * self.pool(h_k)[:, None]          # [N, L]
        rel = self.first.relevance(x, k, r_pool, epsilon)   # per preprocessed feature = per input feature
        return -rel if self.link == "negate" else rel

    def score(self, x: Tensor) -> Tensor:
        """The pooled score before the link, ``[N, K]`` (what the relevance rules conserve)."""
        return self.pool(self.first(self.preprocess(self.check_input(x))))

    def set_preprocessing(self, scale: Tensor, shift: Tensor) -> None:
        """Apply ``x * scale + shift`` per feature before the first layer (a pipeline's scalers)."""
        self.register_buffer("pre_scale", scale.to(self.dtype))
        self.register_buffer("pre_shift", shift.to(self.dtype))

    def preprocess(self, x: Tensor) -> Tensor:
        scale = getattr(self, "pre_scale", None)
        return x if scale is None else x * scale + self.pre_shift

    def forward(self, x: Tensor) -> Tensor:
        out = self.score(x)
        if self.link == "negate":
            return -out
        if self.link == "decision_function":
            return torch.exp(-out) + self.offset
        return out

    def extra_repr(self) -> str:
        return f"source={self.source}, output={self.output!r}, link={self.link}"

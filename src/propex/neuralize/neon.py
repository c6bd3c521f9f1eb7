"""NEON: layer-wise relevance propagation through a neuralized model."""
from __future__ import annotations

from typing import Any

import torch

from ..api import register
from ..base import Explanation, Method
from ..inputs import as_input_tuple
from ..propagation.tracing import UnsupportedOpError
from ..targets import resolve_target
from .model import Neuralized


class NotNeuralizedError(UnsupportedOpError, TypeError):
    """``neon`` was given a model that ``propex.neuralize`` did not make (a TypeError; also an
    ``UnsupportedOpError``, so that the CLI / demo list neon as "not applicable" to such models)."""


@register
class NEON(Method):
    r"""NEON (neuralization-propagation): LRP through a model made by ``propex.neuralize``.

    The explained score :math:`s_k` (output k before the link) is first given to the pooled
    units in proportion to the soft-min weights, :math:`R_{kl} = p_{kl}\,s_k` with
    :math:`p_{kl} = e^{-\beta h_{kl}} / \sum_{l'} e^{-\beta h_{kl'}}` (the minimum only for
    β = ∞), then to the input features by the first layer's rule
    (:mod:`propex.neuralize.layers`): squared-difference shares for kernel models, LRP-0/ε
    with the midpoint root for k-means, LRP-0/ε with the bias keeping its share for
    logistic regression. Conservation: :math:`\sum_i R_i = s_k` for KernelDensity,
    OneClassSVM (``output="outlier_score"``) and k-means (``epsilon=0``);
    :math:`\sum_i R_i = s_k - \sum_l R_{kl} b_{kl} / h_{kl}` for logistic regression.
    ``delta`` = :math:`\sum_i R_i - \text{output}_k`. With ``output="log_density"`` the
    relevances are negated (the output is :math:`-o(x)`).

    Kauffmann, Müller & Montavon, "Towards explaining anomalies: a deep Taylor decomposition
    of one-class models", Pattern Recognit. 101 (2020); Kauffmann, Esders, Ruff, Montavon,
    Samek & Müller, "From clustering to cluster explanations via neural networks", IEEE TNNLS
    2022 (arXiv:1906.07633); Montavon et al., "Layer-wise relevance propagation: an overview", 2019.

    Options: ``epsilon`` (stabilizer of the linear layers' rule, default 0).
    """

    name = "neon"
    aliases = ("neuralized_lrp",)
    family = "neuralize"
    claims_completeness = True

    def __init__(self, model: Any, *, epsilon: float = 0.0, **options: Any):
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or epsilon < 0:
            raise ValueError(f"epsilon must be a number >= 0, got {epsilon!r}")
        super().__init__(model, epsilon=epsilon, **options)
        self.epsilon = float(epsilon)

    def _explain(self, x: Any, target: Any, forward_kwargs: dict[str, Any] | None) -> Explanation:
        if forward_kwargs:
            raise ValueError("neon: a neuralized model takes no forward_kwargs")
        (x,), was_tuple = as_input_tuple(x)
        if was_tuple:
            raise TypeError("neon: x must be one tensor [N, d], not a tuple")
        model = self.model
        if not isinstance(model, Neuralized):
            raise NotNeuralizedError(f"neon explains models made by propex.neuralize(fitted_estimator); got "
                            f"{type(model).__name__}. For other models use e.g. 'lrp'")
        model.check_explainable()
        xin = model.check_input(x)
        with torch.no_grad():
            outputs = model(xin)
            selector = resolve_target(target, outputs)
            if selector.indices is None:
                raise ValueError("neon: target must be None, an int, N ints or an [N, T] tensor of output indices")
            idx = selector.indices.to(x.device)                                      # [N, T]
            attr = torch.stack([model.relevance(xin, idx[:, t], self.epsilon) for t in range(idx.shape[1])], 1)
            delta = attr.sum(-1) - outputs.gather(1, idx)
        if not selector.multi:
            attr, delta = attr[:, 0], delta[:, 0]
        return Explanation(attr.to(x.dtype) if x.is_floating_point() else attr, selector.public(), outputs.detach(),
                           delta, self.name, dict(self.options))

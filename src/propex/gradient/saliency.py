"""Saliency (vanilla gradient) and gradient × input."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from ..api import register
from .base import GradientMethod, per_point, rows
from .engine import Prepared


@register
class Saliency(GradientMethod):
    r"""Saliency map: the gradient of the target score with respect to the input.

    .. math:: a_i = \frac{\partial f_y}{\partial x_i}(x)  \qquad (\texttt{abs=True}: |\cdot|)

    Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks: Visualising Image
    Classification Models and Saliency Maps", ICLR workshop 2014.

    propex returns the *signed* gradient by default; ``abs=True`` gives its magnitude,
    which is what Captum's ``Saliency`` returns by default.
    """

    name = "saliency"
    aliases = ("gradient", "vanilla_gradient")

    def __init__(self, model: Any, *, abs: bool = False, **options: Any):
        super().__init__(model, abs=bool(abs), **options)
        self.abs = bool(abs)

    reuses_first_forward = True

    def _attribute(self, prep: Prepared) -> tuple[tuple[Tensor, ...], None]:
        take_abs = self.abs
        grads = self.engine.gradients_at_inputs(prep)
        if grads is not None:
            return tuple(g.abs() if take_abs else g for g in grads), None
        sums = self.engine.reduce(prep, 1, lambda k, s: rows(prep.space, s),
                                  lambda g, k, s: [gi.abs() if take_abs else gi for gi in g])
        return tuple(sums), None


@register
class InputXGradient(GradientMethod):
    r"""Gradient × input.

    .. math:: a_i = x_i \cdot \frac{\partial f_y}{\partial x_i}(x)

    Shrikumar et al., "Not Just a Black Box: Learning Important Features Through
    Propagating Activation Differences", 2016 (arXiv:1605.01713). On ReLU networks without
    biases it equals LRP-0 and DeepLIFT-Rescale with a zero baseline (Ancona et al. 2018).
    """

    name = "input_x_gradient"
    aliases = ("gradient_x_input", "grad_x_input", "ixg")

    reuses_first_forward = True

    def _attribute(self, prep: Prepared) -> tuple[tuple[Tensor, ...], None]:
        grads = self.engine.gradients_at_inputs(prep)
        if grads is not None:
            return tuple(g * per_point(x) for g, x in zip(grads, prep.space)), None
        sums = self.engine.reduce(prep, 1, lambda k, s: rows(prep.space, s),
                                  lambda g, k, s: [gi * per_point(xi) for gi, xi in zip(g, rows(prep.space, s))])
        return tuple(sums), None

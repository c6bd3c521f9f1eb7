"""propex: explanations for PyTorch models.

>>> import propex
>>> exp = propex.explain(model, x, "integrated_gradients", n_steps=64)
>>> exp.attributions, exp.target, exp.outputs, exp.delta
"""
from . import baselines, targets
from .api import explain, get_method, methods, register
from .base import Explanation, Method
from .gradient import (BlurIG, ExpectedGradients, GuidedIG, InputXGradient, IntegratedGradients, Saliency,
                       SmoothGrad, VarGrad)
from .propagation import LRP, Deconvnet, DeepLift, GuidedBackprop

__version__ = "0.1.0"

__all__ = [
    "explain", "methods", "get_method", "register", "Explanation", "Method",
    "Saliency", "InputXGradient", "SmoothGrad", "VarGrad", "IntegratedGradients", "ExpectedGradients",
    "BlurIG", "GuidedIG", "LRP", "DeepLift", "GuidedBackprop", "Deconvnet", "baselines", "targets",
    "__version__",
]

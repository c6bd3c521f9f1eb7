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
from . import evaluate
from .pair_relevance import PairRelevance, bilrp
from .cam import GradCAM, GradCAMPlusPlus, GuidedGradCAM, HiResCAM, LayerCAM, ScoreCAM
from .perturbation import RISE, FeatureAblation, KernelShap, Lime, MeaningfulPerturbation, Occlusion
from . import attention  # registers attention, attention_rollout, attention_flow, grad_attention
from .higher_order import IntegratedHessians, TaylorInteractions
from . import higher_order, neuralize  # propex.neuralize(est) works: the package is callable
from . import gnn, text

__version__ = "0.1.0"

__all__ = [
    "explain", "methods", "get_method", "register", "Explanation", "Method",
    "Saliency", "InputXGradient", "SmoothGrad", "VarGrad", "IntegratedGradients", "ExpectedGradients",
    "BlurIG", "GuidedIG", "LRP", "DeepLift", "GuidedBackprop", "Deconvnet",
    "GradCAM", "GradCAMPlusPlus", "HiResCAM", "LayerCAM", "ScoreCAM", "GuidedGradCAM",
    "Occlusion", "FeatureAblation", "RISE", "MeaningfulPerturbation", "Lime", "KernelShap",
    "IntegratedHessians", "TaylorInteractions", "bilrp", "PairRelevance",
    "baselines", "targets", "evaluate", "attention", "text", "higher_order", "neuralize", "gnn",
    "__version__",
]

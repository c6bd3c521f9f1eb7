"""The gradient engine and the gradient-based methods."""
from .blur_ig import BlurIG
from .engine import GradientEngine
from .expected_gradients import ExpectedGradients
from .guided_ig import GuidedIG
from .integrated_gradients import IntegratedGradients
from .saliency import InputXGradient, Saliency
from .smoothgrad import SmoothGrad, VarGrad

__all__ = ["GradientEngine", "Saliency", "InputXGradient", "SmoothGrad", "VarGrad", "IntegratedGradients",
           "ExpectedGradients", "BlurIG", "GuidedIG"]

"""The CAM family: class activation maps from a layer's activations and gradients."""
from .base import CAMMethod
from .gradcam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM
from .guided import GuidedGradCAM
from .scorecam import ScoreCAM
from .layer import default_layer

__all__ = ["CAMMethod", "GradCAM", "GradCAMPlusPlus", "HiResCAM", "LayerCAM", "ScoreCAM", "GuidedGradCAM", "default_layer"]

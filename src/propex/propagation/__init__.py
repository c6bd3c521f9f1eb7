"""The propagation engine and the propagation methods (LRP, DeepLIFT, Guided Backprop, Deconvnet)."""
from . import composites, rules
from .composites import All, Composite, GammaByDepth, Name, Position, depth_schedule, preset
from .deeplift import DeepLift
from .excitation import DeepTaylor, ExcitationBackprop
from .engine import Policy, PropagationMethod
from .guided import Deconvnet, GuidedBackprop
from .lrp import LRP
from .pattern import PatternAttribution, Patterns, fit_patterns
from .ops import register_op
from .tracing import UnsupportedOpError

__all__ = ["LRP", "DeepLift", "ExcitationBackprop", "DeepTaylor", "PatternAttribution", "Patterns", "fit_patterns", "GuidedBackprop", "Deconvnet", "Composite", "Name", "Position", "All", "GammaByDepth",
           "depth_schedule", "preset", "register_op", "UnsupportedOpError", "Policy", "PropagationMethod",
           "composites", "rules"]

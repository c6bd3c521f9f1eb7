"""Second-order explanations: feature interactions (Integrated Hessians, second-order Taylor)."""
from .base import InteractionMethod
from .integrated_hessians import IntegratedHessians
from .quadrature import log_weight_rule
from .taylor import TaylorInteractions

__all__ = ["InteractionMethod", "IntegratedHessians", "TaylorInteractions", "log_weight_rule"]

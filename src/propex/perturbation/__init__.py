"""The perturbation engine and the perturbation methods."""
from .base import PerturbationMethod
from .engine import PerturbationEngine, PreparedPerturbation
from .feature_ablation import FeatureAblation
from .meaningful_perturbation import MeaningfulPerturbation
from .occlusion import Occlusion
from .rise import RISE
from .superpixels import grid_superpixels, slic_superpixels
from .surrogate import KernelShap, Lime

__all__ = ["PerturbationEngine", "PreparedPerturbation", "PerturbationMethod", "Occlusion", "FeatureAblation",
           "RISE", "MeaningfulPerturbation", "Lime", "KernelShap", "grid_superpixels", "slic_superpixels"]

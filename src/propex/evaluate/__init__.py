"""``propex.evaluate``: metrics that judge explanations (faithfulness, robustness, randomisation
sanity checks, localisation, complexity) and the axiom checker.

Every metric takes ``(model, x, attributions, target=..., **options)`` — attributions from any
method, also from other libraries, as plain tensors — and returns per-sample values (and the
curve behind them where there is one).
"""

from .curves import PerturbationCurve, aopc, deletion, insertion, pixel_flipping, region_perturbation
from .faithfulness import faithfulness_correlation, infidelity, sensitivity_n
from .road import noisy_linear_impute, road
from .complexity import complexity, compressed_size, sparseness
from .localization import (bbox_iou, energy_pointing_game, pointing_game, rank_correlation, relevance_mass,
                           relevance_rank)
from .randomization import random_target_check, randomization_check
from .robustness import MapStability, avg_sensitivity, local_lipschitz, map_stability, max_sensitivity
from .axioms import AxiomReport, AxiomResult, axioms
from .compare import Comparison, available_metrics, compare
from .erasure import ErasureReport, ErasureResult, erasure, js_divergence

__all__ = [
    "PerturbationCurve", "pixel_flipping", "region_perturbation", "insertion", "deletion", "aopc", "road",
    "noisy_linear_impute", "infidelity", "faithfulness_correlation", "sensitivity_n",
    "max_sensitivity", "avg_sensitivity", "local_lipschitz", "map_stability", "MapStability",
    "randomization_check", "random_target_check",
    "pointing_game", "energy_pointing_game", "relevance_mass", "relevance_rank", "bbox_iou", "rank_correlation",
    "sparseness", "complexity", "compressed_size",
    "axioms", "AxiomReport", "AxiomResult", "compare", "Comparison", "available_metrics",
    "erasure", "ErasureReport", "ErasureResult", "js_divergence",
]

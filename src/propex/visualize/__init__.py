"""Pictures of explanations: heatmaps and grids (matplotlib, the ``viz`` extra)."""
from .heatmap import attribution_grid, to_heatmap

__all__ = ["to_heatmap", "attribution_grid"]

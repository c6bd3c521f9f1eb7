"""``propex.visualize``: pictures of explanations (Pillow and matplotlib, the ``viz`` extra).

* ``heatmap(attributions)`` → ``Picture`` (red positive, blue negative, white zero);
* ``overlay(image, attributions)``, ``grid(rows, row_labels, col_labels)``;
* ``text(tokens, scores)`` → ``TextPicture`` (HTML, terminal colours);
* ``curves({label: PerturbationCurve})`` → ``Picture`` with the AUC in the legend.

Every result saves with ``.save(path)`` (PNG; text: HTML) and shows itself in a notebook.
No pyplot state is created and no rcParams are changed.
"""
from .colors import colorbar, colorize
from .compose import grid, overlay, to_picture
from .plots import curves
from .heatmap import attribution_grid, heatmap, reduce_channels, to_heatmap
from .picture import Picture
from .tokens import TextPicture, text

__all__ = ["Picture", "TextPicture", "heatmap", "overlay", "grid", "text", "curves", "to_picture",
           "colorize", "colorbar", "reduce_channels", "to_heatmap", "attribution_grid"]

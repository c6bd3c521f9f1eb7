"""Perturbation curves (pixel flipping, region perturbation, insertion, deletion) with their AUC.

Drawn with matplotlib's object API (``Figure`` + ``FigureCanvasAgg``): no pyplot figure is
created and no rcParams are changed.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .heatmap import as_tensor, check_size
from .picture import Picture

_REMOVED = {"pixel_flipping": "fraction of features removed", "deletion": "fraction of features removed",
            "region_perturbation": "fraction of regions removed", "road": "fraction of features imputed",
            "insertion": "fraction of features inserted"}


def curve_points(curve: Any, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float, str | None]:
    """``(x, mean y, standard error of y or None, AUC, metric name or None)`` of a curve.

    A ``PerturbationCurve`` gives ``fractions`` and the mean of ``scores`` over samples, with
    ``AUC = mean(curve.auc)``; an ``(x, y)`` pair with ``y`` ``[K]`` or ``[N, K]`` gives the
    trapezoidal area under the mean of ``y``.
    """
    if hasattr(curve, "scores") and hasattr(curve, "fractions"):
        xs = as_tensor(curve.fractions, f"curves[{name!r}].fractions").numpy().astype(np.float64)
        ys = as_tensor(curve.scores, f"curves[{name!r}].scores").numpy().astype(np.float64)
        metric = getattr(curve, "metric", None)
    elif isinstance(curve, (tuple, list)) and len(curve) == 2:
        xs = as_tensor(curve[0], f"curves[{name!r}][0]").numpy().astype(np.float64)
        ys = as_tensor(curve[1], f"curves[{name!r}][1]").numpy().astype(np.float64)
        metric = None
    else:
        raise TypeError(f"curves[{name!r}] must be a PerturbationCurve or an (x, y) pair, got {type(curve).__name__}")
    if ys.ndim == 1:
        ys = ys[None]
    if xs.ndim != 1 or ys.ndim != 2 or ys.shape[1] != xs.shape[0] or xs.shape[0] < 2:
        raise ValueError(f"curves[{name!r}]: x must be [K] (K >= 2) and y [K] or [N, K]; "
                         f"got x {xs.shape}, y {ys.shape}")
    mean = ys.mean(axis=0)
    sem = ys.std(axis=0, ddof=1) / np.sqrt(ys.shape[0]) if ys.shape[0] > 1 else None
    auc = float(np.trapezoid(mean, xs)) if hasattr(np, "trapezoid") else float(np.trapz(mean, xs))
    return xs, mean, sem, auc, metric


def curves(curves: Mapping[str, Any], *, title: str | None = None, xlabel: str | None = None,
           ylabel: str = "score", size: Any = (360, 520), band: bool = True, dpi: int = 100) -> Picture:
    """A plot of perturbation curves, one line per entry, with the AUC in the legend.

    Args:
        curves: ``{label: PerturbationCurve}`` (``propex.evaluate.deletion`` etc.; the mean over
            samples is drawn, with a band of ± one standard error when ``band`` and N > 1) or
            ``{label: (x, y)}`` arrays (``y`` ``[K]`` or ``[N, K]``).
        title: the plot title (default: the curves' metric name when they share one).
        xlabel / ylabel: axis labels (x default: from the metric, e.g. "fraction of features removed").
        size: ``(height, width)`` in pixels.

    Returns:
        a ``Picture``; ``.info["auc"]`` is ``{label: AUC}`` (mean over samples), ``.info["legend"]``
        the legend entries.
    """
    if not isinstance(curves, Mapping) or not curves:
        raise TypeError("curves must be a non-empty mapping {label: PerturbationCurve or (x, y)}")
    h, w = check_size(size)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError("propex.visualize.curves needs matplotlib: pip install 'propex[viz]'") from err
    points = {str(k): curve_points(v, str(k)) for k, v in curves.items()}
    metrics = {p[4] for p in points.values()}
    metric = metrics.pop() if len(metrics) == 1 else None
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    aucs, legend = {}, []
    for label, (xs, mean, sem, auc, _) in points.items():
        aucs[label] = auc
        legend.append(f"{label} (AUC {auc:.3g})")
        (line,) = ax.plot(xs, mean, label=legend[-1], linewidth=1.6)
        if band and sem is not None:
            ax.fill_between(xs, mean - sem, mean + sem, color=line.get_color(), alpha=0.15, linewidth=0)
    xlabel = xlabel or _REMOVED.get(metric or "", "fraction perturbed")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title or metric:
        ax.set_title(title or metric.replace("_", " "))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    return Picture(rgb, {"auc": aucs, "legend": legend, "metric": metric, "xlabel": xlabel})

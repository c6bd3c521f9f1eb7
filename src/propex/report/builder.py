"""``build_report``: one self-contained HTML file for a run (inputs, predictions, heatmaps of
every method, metrics with the best value per row marked, faithfulness curves, metadata)."""
from __future__ import annotations

import math
import os
import threading
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from ..visualize.colors import MODES, colorbar
from ..visualize.compose import enlarged, to_picture
from ..visualize.heatmap import (REDUCTIONS, as_tensor, drawn_values, heatmap, percentile_scale, reduce_channels,
                                 upsample)
from ..visualize.picture import Picture
from ..visualize.plots import curves as plot_curves
from ..visualize.tokens import text as text_picture
from .meta import metadata
from .page import document, esc, img, table

SCALES = ("shared", "method", "raw")
_HEATMAP_OPTIONS = ("reduce", "mode", "clip_percentile", "cmap", "interpolation")
_DISPLAY = 128          # small inputs (e.g. 16×16 digits) are enlarged to at least this many pixels

_SCALE_TEXT = {
    "shared": "one scale per input, shared by all methods: each map is divided by its total absolute "
              "relevance Σ|R| (so a colour means the same share of the method's relevance), and full colour is "
              "the {p:g}th percentile of these shares over all methods of the input",
    "method": "each map on its own scale: full colour is the {p:g}th percentile of the map's |R| "
              "(colours do not compare across methods)",
    "raw": "one scale per input, shared by all methods, in the attributions' own units: full colour is the "
           "{p:g}th percentile of |R| over all methods of the input",
}


# --------------------------------------------------------------------------- validation
def _check_inputs(inputs: Any) -> Tensor:
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a tensor [N, ...], got {type(inputs).__name__}")
    if inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be a non-empty batch [N, ...], got shape {tuple(inputs.shape)}")
    return inputs.detach()


def _check_explanations(explanations: Any, n: int) -> dict[str, Tensor]:
    if not isinstance(explanations, Mapping) or not explanations:
        raise TypeError("explanations must be a non-empty mapping {method label: Explanation or attributions tensor}")
    out = {}
    for name, value in explanations.items():
        a = as_tensor(value, f"explanations[{name!r}]")
        if a.dim() == 0 or a.shape[0] != n:
            raise ValueError(f"explanations[{name!r}] has shape {tuple(a.shape)}; expected one map per input "
                             f"({n} inputs)")
        out[str(name)] = a
    return out


def _check_tokens(tokens: Any, n: int) -> list[list[str]] | None:
    if tokens is None:
        return None
    if (not isinstance(tokens, Sequence) or len(tokens) != n
            or not all(isinstance(t, Sequence) and not isinstance(t, str) and all(isinstance(s, str) for s in t)
                       for t in tokens)):
        raise ValueError(f"tokens must be a list of {n} token lists (one per input), got {type(tokens).__name__}"
                         f"{'' if not isinstance(tokens, Sequence) else f' of length {len(tokens)}'}")
    return [list(t) for t in tokens]


def _check_heatmap_options(options: Any) -> dict[str, Any]:
    options = dict(options or {})
    unknown = sorted(set(options) - set(_HEATMAP_OPTIONS))
    if unknown:
        raise TypeError(f"heatmap_options: unknown option(s) {unknown}; options are {', '.join(_HEATMAP_OPTIONS)}")
    if options.get("reduce", "sum") not in REDUCTIONS:
        raise ValueError(f"heatmap_options['reduce'] must be one of {REDUCTIONS}, got {options['reduce']!r}")
    if options.get("mode", "signed") not in MODES:
        raise ValueError(f"heatmap_options['mode'] must be one of {MODES}, got {options['mode']!r}")
    return options


# --------------------------------------------------------------------------- predictions
def _outputs(model: Any, inputs: Tensor, explanations: Mapping[str, Any]) -> Tensor | None:
    """The model outputs on the inputs: from an Explanation if one carries them, else one forward pass."""
    for value in explanations.values():
        out = getattr(value, "outputs", None)
        if isinstance(out, Tensor) and out.dim() >= 1 and out.shape[0] == inputs.shape[0]:
            return out.detach().float().cpu()
    if model is None:
        return None
    from ..model_call import model_guard

    with model_guard(model), torch.no_grad():
        out = model(inputs)
    if hasattr(out, "logits"):
        out = out.logits
    elif isinstance(out, Mapping) and "logits" in out:
        out = out["logits"]
    return out.detach().float().cpu() if isinstance(out, Tensor) else None


def _targets(explanations: Mapping[str, Any], comparison: Any, n: int) -> list[int | None]:
    for value in [*explanations.values(), comparison]:
        t = getattr(value, "target", None)
        if isinstance(t, Tensor) and t.dim() == 1 and t.shape[0] == n:
            return [int(v) for v in t.tolist()]
    return [None] * n


def _class_name(c: int, labels: Sequence[str] | None) -> str:
    if labels is not None and 0 <= c < len(labels):
        return str(labels[c])
    return f"class {c}"


def _topk_html(out: Tensor | None, target: int | None, labels: Sequence[str] | None, k: int) -> str:
    if out is None or out.dim() != 1 or out.numel() < 1:
        return '<p class="px-note">No class scores (the model\'s outputs are not [N, classes]).</p>'
    if out.numel() == 1:
        return f'<ol class="px-topk"><li>output {float(out[0]):.4g}</li></ol>'
    probs = torch.softmax(out.double(), dim=0)
    top = torch.topk(probs, min(k, probs.numel()))
    items = []
    for p, c in zip(top.values.tolist(), top.indices.tolist()):
        cls = ' class="px-target"' if c == target else ""
        mark = " (explained)" if c == target else ""
        items.append(f'<li{cls} data-class="{c}">{esc(_class_name(c, labels))}{mark}: {100 * p:.1f}%'
                     f'<span class="px-bar" style="width:{max(1, round(60 * p))}px"></span></li>')
    extra = ""
    if target is not None and target not in top.indices.tolist() and 0 <= target < probs.numel():
        extra = (f'<p class="px-note">explained: {esc(_class_name(target, labels))} '
                 f'({100 * float(probs[target]):.2f}%)</p>')
    return (f'<div><h4 style="margin:0 0 .2em">top-{len(items)} (softmax)</h4>'
            f'<ol class="px-topk">{"".join(items)}</ol>{extra}</div>')


# --------------------------------------------------------------------------- heatmaps
def _maps(attrs: Mapping[str, Tensor], i: int, reduce: str, image_hw: tuple[int, int] | None,
          interpolation: str) -> dict[str, Tensor]:
    """Each method's 2-D map ``[H, W]`` for input i (channels reduced)."""
    out = {}
    for name, a in attrs.items():
        m = a[i]
        if m.dim() == 3:
            m = reduce_channels(m, reduce)
        if m.dim() != 2:
            raise ValueError(f"explanations[{name!r}][{i}] has shape {tuple(a[i].shape)}; image heatmaps need "
                             f"[C, H, W] or [H, W] per input (pass tokens= for text inputs)")
        if image_hw is not None and tuple(m.shape) != image_hw:     # e.g. a 7×7 layer map: to the input's size
            m = upsample(m[None], image_hw, interpolation)[0]
        out[name] = m
    return out


def _scales(maps: Mapping[str, Tensor], scale: str, mode: str, p: float) -> tuple[dict[str, Tensor], float | None]:
    """The maps to draw and the common vmax (None: each map its own scale)."""
    if scale == "method":
        return dict(maps), None
    if scale == "shared":
        maps = {k: (m / m.abs().sum()) if m.abs().sum() > 0 else m for k, m in maps.items()}
    pooled = torch.cat([drawn_values(m, mode).abs().reshape(-1) for m in maps.values()])
    vmax = percentile_scale(pooled, p)
    return dict(maps), (vmax if vmax > 0 else None)


def _scale_legend(mode: str, cmap: Any, vmax: float | None, scale: str) -> str:
    bar = Picture(colorbar(mode, cmap, width=180, height=12))
    lo = "0" if mode != "signed" else ("−1" if vmax is None else f"−{vmax:.3g}")
    hi = "+1" if vmax is None else f"+{vmax:.3g}"
    unit = {"shared": " (share of Σ|R|)", "raw": "", "method": " (relative to each map)"}[scale]
    return (f'<div class="px-scale">{lo}{img(bar.data_uri(), "px-colorbar", "colour scale")}{hi}{esc(unit)}'
            f"</div>")


def _image_section(i: int, x: Tensor, attrs: Mapping[str, Tensor], scale: str, options: Mapping[str, Any]) -> str:
    mode = options.get("mode", "signed")
    p = float(options.get("clip_percentile", 99.5))
    picture_opts = {k: v for k, v in options.items() if k not in ("reduce",)}
    image = None
    if x.dim() == 2 or (x.dim() == 3 and x.shape[0] in (1, 3)):
        image = to_picture(x, f"inputs[{i}]")
    hw = (image.size[1], image.size[0]) if image is not None else None
    maps, vmax = _scales(_maps(attrs, i, options.get("reduce", "sum"), hw, options.get("interpolation", "bilinear")),
                         scale, mode, p)
    figures = []
    if image is not None:
        figures.append(f'<figure class="px-original">{img(enlarged(image, _DISPLAY).data_uri(), "px-image", "input")}'
                       f"<figcaption>input</figcaption></figure>")
    maps_html = []
    for name, m in maps.items():
        pic = heatmap(m, vmax=vmax, **picture_opts)
        full = f"full colour at {pic.vmax:.3g}" if vmax is None else ""
        tag = img(enlarged(pic, _DISPLAY).data_uri(), "px-heatmap", name, method=name)
        maps_html.append(f'<figure class="px-map">{tag}'
                         f"<figcaption>{esc(name)}{'<br>' + esc(full) if full else ''}</figcaption></figure>")
    legend = _scale_legend(mode, options.get("cmap"), vmax, scale)
    return legend, "".join(figures), "".join(maps_html)


def _text_section(i: int, tokens: list[str], attrs: Mapping[str, Tensor], scale: str,
                  options: Mapping[str, Any]) -> tuple[str, str]:
    mode = options.get("mode", "signed")
    p = float(options.get("clip_percentile", 100.0))
    scores = {}
    for name, a in attrs.items():
        s = a[i]
        if s.dim() == 2:
            s = s.sum(-1)
        if s.dim() != 1 or s.shape[0] != len(tokens):
            raise ValueError(f"explanations[{name!r}][{i}] has shape {tuple(a[i].shape)}; with tokens= each input "
                             f"needs [T] or [T, D] scores for its {len(tokens)} tokens")
        scores[name] = s
    scores, vmax = _scales(scores, scale, mode, p)
    shown = text_picture(tokens, torch.zeros(len(tokens)))
    original = f'<div class="px-tokens px-original">{shown.fragment}</div>'
    parts = []
    for name, s in scores.items():
        tp = text_picture(tokens, s, mode=mode, vmax=vmax, clip_percentile=p, cmap=options.get("cmap"))
        parts.append(f'<div class="px-text-map" data-method="{esc(name)}"><h4>{esc(name)}</h4>{tp.fragment}</div>')
    return original, _scale_legend(mode, options.get("cmap"), vmax, scale) + "".join(parts)


# --------------------------------------------------------------------------- metrics and curves
def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.4g}"


def metrics_table(comparison: Any) -> str:
    """Metrics (rows) × methods (columns), mean ± std; the best finite mean of each row whose
    direction is known (``better`` = "higher" / "lower") has class ``px-best``."""
    records = list(comparison.records)
    methods = list(dict.fromkeys(r["method"] for r in records))
    metrics = list(dict.fromkeys(r["metric"] for r in records))
    cell = {(r["method"], r["metric"]): r for r in records}
    head = "".join(f"<th>{esc(m)}</th>" for m in methods)
    rows = []
    for metric in metrics:
        recs = [cell.get((m, metric)) for m in methods]
        better = next((r["better"] for r in recs if r is not None and r.get("better")), None)
        summary = next((r["summary"] for r in recs if r is not None and r.get("summary")), None)
        finite = [r["mean"] for r in recs if r is not None and r["error"] is None and r["mean"] is not None
                  and math.isfinite(r["mean"])]
        best = None
        if better in ("higher", "lower") and finite:
            best = max(finite) if better == "higher" else min(finite)
        tds = []
        for method, r in zip(methods, recs):
            if r is None:
                tds.append("<td></td>")
                continue
            if r["error"] is not None:
                tds.append(f'<td class="px-error" data-method="{esc(method)}" title="{esc(r["error"])}">error</td>')
                continue
            std = "" if r["std"] is None or math.isnan(r["std"]) else f" ± {r['std']:.3g}"
            is_best = best is not None and r["mean"] == best
            cls = "px-num px-best" if is_best else "px-num"
            title = f"n = {r['n']}" + (f", {r['seconds']:.3g} s" if r.get("seconds") is not None else "")
            if is_best:
                title += f", best ({better} is better)"
            tds.append(f'<td class="{cls}" data-method="{esc(method)}" data-value="{r["mean"]!r}" '
                       f'title="{esc(title)}">{_fmt(r["mean"])}{std}</td>')
        arrow = {"higher": "↑ higher", "lower": "↓ lower"}.get(better or "", "?")
        name = f"{metric}.{summary}" if summary else metric
        rows.append(f'<tr data-metric="{esc(metric)}"><th>{esc(name)}</th><td>{arrow}</td>{"".join(tds)}</tr>')
    return (f'<table class="px-metrics"><thead><tr><th>metric</th><th>better</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _curve_groups(curves: Any, methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{curve name: {method: curve}}`` from ``{method: curve}``, ``{curve name: {method: curve}}``
    or ``{method: {curve name: curve}}``."""
    if not isinstance(curves, Mapping) or not curves:
        raise TypeError("curves must be a non-empty mapping {method: PerturbationCurve} or "
                        "{curve name: {method: PerturbationCurve}}")
    values = list(curves.values())
    if not any(isinstance(v, Mapping) for v in values):
        names = {getattr(v, "metric", None) for v in values}
        name = names.pop() if len(names) == 1 and None not in names else "curves"
        return {str(name): {str(k): v for k, v in curves.items()}}
    if not all(isinstance(v, Mapping) for v in values):
        raise TypeError("curves: mix of curves and mappings; give {method: curve} or {name: {method: curve}}")
    if set(map(str, curves)) <= set(methods) and not any(set(map(str, v)) <= set(methods) for v in values):
        groups: dict[str, dict[str, Any]] = {}
        for method, per_name in curves.items():
            for name, c in per_name.items():
                groups.setdefault(str(name), {})[str(method)] = c
        return groups
    return {str(name): {str(k): c for k, c in group.items()} for name, group in curves.items()}


def _curves_section(curves: Any, methods: Sequence[str]) -> str:
    parts = []
    for name, group in _curve_groups(curves, methods).items():
        pic = plot_curves(group, title=name.replace("_", " "))
        parts.append(img(pic.data_uri(), "px-curves", f"{name} curves", curve=name))
    return (f'<section class="px-curves-section"><h2>Faithfulness curves</h2><p class="px-note">Mean over the '
            f'inputs (band: ± one standard error); AUC in the legend (deletion: lower is better; '
            f'insertion: higher is better).</p><div class="px-curve-list">{"".join(parts)}</div></section>')


def _store_section(store: Any, labels: Sequence[str] | None) -> str:
    """``propex.batch.store_summary_html(store)``, which is a ``<section class="px-store">`` itself
    (a fragment that is not gets wrapped in one)."""
    try:
        from ..batch import store_summary_html
    except ImportError as err:
        raise ImportError("build_report(store=...) needs propex.batch: pip install 'propex[batch]'") from err
    fragment = store_summary_html(store) if labels is None else store_summary_html(store, labels=list(labels))
    if fragment.lstrip().startswith('<section class="px-store"'):
        return f"<h2>Dataset store</h2>{fragment}"
    return f'<h2>Dataset store</h2><section class="px-store">{fragment}</section>'


# --------------------------------------------------------------------------- the report
def build_report(path: str | os.PathLike, *, model: Any = None, inputs: Tensor, explanations: Mapping[str, Any],
                 labels: Sequence[str] | None = None, comparison: Any = None, curves: Any = None,
                 timings: Mapping[str, float] | None = None, settings: Mapping[str, Any] | None = None,
                 store: Any = None, tokens: Sequence[Sequence[str]] | None = None, title: str = "propex report",
                 top_k: int = 5, heatmap_scale: str = "shared", heatmap_options: Mapping[str, Any] | None = None,
                 captions: Sequence[str] | None = None, notes: Sequence[str] | None = None,
                 figures: Mapping[str, Any] | None = None) -> str:
    """Write one self-contained HTML report (images as PNG data URIs, inline CSS, no scripts, no
    external resources: it opens from disk with no server and no network).

    Args:
        path: the ``.html`` file to write (folders are created).
        model: the model (for the top-k predictions when no Explanation carries ``outputs``).
        inputs: ``[N, ...]`` the explained inputs (images ``[N, C, H, W]`` with C = 1 or 3 are shown).
        explanations: ``{method label: Explanation or attributions [N, ...]}``.
        labels: class names (index → name) for the top-k list.
        comparison: a ``propex.evaluate.Comparison``: the metrics table (metrics × methods; the
            best value of each row is marked, respecting whether higher or lower is better).
        curves: ``{method: PerturbationCurve}``, ``{curve name: {method: curve}}`` or
            ``{method: {curve name: curve}}``: one plot per curve name, AUC in the legend.
        timings: seconds per method (default: the comparison's ``explain_seconds``).
        settings: anything worth recording (shown in the metadata table).
        store: a ``propex.batch`` store: its summary (``propex.batch.store_summary_html``) is embedded.
        tokens: for text inputs, one token list per input: token colours instead of image heatmaps.
        top_k: how many predictions to list per input (softmax of the outputs).
        heatmap_scale: ``"shared"`` (default: per input one scale for all methods, each map divided
            by its Σ|R|), ``"raw"`` (per input one scale in the attributions' units) or
            ``"method"`` (each map its own scale). The page states which.
        heatmap_options: ``reduce``, ``mode``, ``clip_percentile``, ``cmap``, ``interpolation``
            (see ``propex.visualize.heatmap``).
        captions: one line of text per input (e.g. the true label).
        notes: lines shown at the top (e.g. methods that failed).
        figures: ``{title: Picture}`` further pictures shown in their own section, e.g. BiLRP pair
            plots (``propex.pair_relevance.draw_pairs``) or GNN walk drawings (``propex.gnn.draw_walks``).

    Returns:
        the path written.

    HTML hooks: ``section.px-input`` per input, ``img.px-heatmap[data-method]``,
    ``table.px-metrics`` (best cells ``td.px-best``), ``img.px-curves``, ``table.px-meta``,
    ``ol.px-topk``, ``section.px-store``, ``img.px-figure[data-title]`` in ``section.px-figures``.
    """
    x = _check_inputs(inputs)
    n = x.shape[0]
    attrs = _check_explanations(explanations, n)
    toks = _check_tokens(tokens, n)
    if heatmap_scale not in SCALES:
        raise ValueError(f"heatmap_scale must be one of {', '.join(map(repr, SCALES))}; got {heatmap_scale!r}")
    options = _check_heatmap_options(heatmap_options)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
    if labels is not None and (isinstance(labels, str) or not isinstance(labels, Sequence)):
        raise TypeError(f"labels must be a list of class names, got {type(labels).__name__}")
    if captions is not None and (isinstance(captions, str) or len(captions) != n):
        raise ValueError(f"captions must be a list of {n} strings (one per input)")
    methods = list(attrs)

    outputs = _outputs(model, x, explanations)
    targets = _targets(explanations, comparison, n)
    p = float(options.get("clip_percentile", 100.0 if toks is not None else 99.5))
    scale_text = _SCALE_TEXT[heatmap_scale].format(p=p)

    sections = []
    for i in range(n):
        if toks is not None:
            original, maps = _text_section(i, toks[i], attrs, heatmap_scale, options)
        else:       # one row: the input, the heatmaps, the predictions; the colour scale above
            legend, original, maps = _image_section(i, x[i].cpu(), attrs, heatmap_scale, options)
        target = targets[i]
        head = f"Input {i}" + (f" — explained: {_class_name(target, labels)}" if target is not None else "")
        caption = f'<p class="px-note">{esc(captions[i])}</p>' if captions is not None else ""
        top = _topk_html(None if outputs is None else outputs[i].reshape(-1), target, labels, top_k)
        if toks is not None:
            body_html = f'<div class="px-row">{original}{top}</div>{maps}'
        else:
            body_html = f'{legend}<div class="px-row px-maps">{original}{maps}{top}</div>'
        sections.append(f'<section class="px-input" data-index="{i}"><h3>{esc(head)}</h3>{caption}{body_html}'
                        "</section>")

    body = []
    if notes:
        body.append('<ul class="px-notes">' + "".join(f"<li>{esc(t)}</li>" for t in notes) + "</ul>")
    body.append(f'<h2>Inputs and heatmaps</h2><p class="px-note">Red: positive relevance, blue: negative, '
                f"white: zero. Colour scale: {esc(scale_text)}.</p>{''.join(sections)}")
    if comparison is not None:
        body.append(f'<section class="px-metrics-section"><h2>Metrics</h2><p class="px-note">Mean ± standard '
                    f"deviation over the inputs; the best value of each row is highlighted where the metric's "
                    f"direction is known (↑ higher is better, ↓ lower is better).</p>{metrics_table(comparison)}"
                    "</section>")
    if curves is not None:
        body.append(_curves_section(curves, methods))
    if store is not None:
        body.append(_store_section(store, labels))
    if figures:
        cells = "".join(f"<figure>{img(to_picture(p, f'figures[{t!r}]').data_uri(), 'px-figure', str(t), title=str(t))}"
                        f"<figcaption>{esc(t)}</figcaption></figure>" for t, p in figures.items())
        body.append(f'<section class="px-figures"><h2>Higher-order explanations</h2>{cells}</section>')
    times = dict(timings or {})
    if comparison is not None and not times:
        for r in comparison.records:
            if r.get("explain_seconds") is not None:
                times.setdefault(r["method"], r["explain_seconds"])
    meta = metadata(model, x, methods, times, settings, scale_text)
    body.append(f'<section class="px-meta-section"><h2>Run</h2>{table(meta, "px-meta")}</section>')
    subtitle = esc(f"{n} input{'s' if n != 1 else ''} × {len(methods)} method{'s' if len(methods) != 1 else ''}")
    page = document(title, subtitle, "".join(body))
    return _write(path, page)


def _write(path: str | os.PathLike, page: str) -> str:
    """Write ``page`` to ``path`` via a temporary file in the same folder (a reader never sees half a page)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(page)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path

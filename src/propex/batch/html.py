"""``store_summary_html``: a batch store as an HTML fragment for the report (images as data URIs)."""
from __future__ import annotations

import base64
import html
import io
from typing import Any, Sequence

import numpy as np

from .reader import BatchStore, open_store


def _picture_uri(values: np.ndarray, mode: str) -> str | None:
    """A heatmap data URI of a per-sample attribution shape ([H, W] or [C, H, W]); None if not image-like."""
    if values.ndim == 3:
        values = values.sum(axis=0)
    if values.ndim != 2 or min(values.shape) < 2:
        return None
    try:
        import torch

        from ..visualize import heatmap
        pic = heatmap(torch.from_numpy(np.ascontiguousarray(values)), mode=mode,
                      size=_display_size(values.shape))
        return pic.data_uri()
    except ImportError:
        return _matplotlib_uri(values, mode)


def _display_size(shape: tuple[int, ...]) -> tuple[int, int] | None:
    h, w = shape
    scale = max(1, 96 // max(h, w))
    return (h * scale, w * scale) if scale > 1 else None


def _matplotlib_uri(values: np.ndarray, mode: str) -> str | None:
    try:
        from matplotlib import cm
        from PIL import Image
    except ImportError:
        return None
    vmax = float(np.nanpercentile(np.abs(values), 99.5)) or 1.0
    if mode == "signed":
        rgb = cm.get_cmap("bwr")(np.clip(values / vmax, -1, 1) * 0.5 + 0.5)
    else:
        rgb = cm.get_cmap("Reds")(np.clip(np.abs(values) / vmax, 0, 1))
    buf = io.BytesIO()
    Image.fromarray((rgb[..., :3] * 255).astype(np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _name(cls: int, labels: Sequence[str] | None) -> str:
    return labels[cls] if labels is not None and 0 <= cls < len(labels) else f"class {cls}"


def _figure(uri: str | None, method: str, caption: str, cls: Any) -> str:
    if uri is None:
        return ""
    cls_attr = "all" if cls is None else str(cls)
    return (f'<figure class="px-store-figure" style="margin:0;font-size:0.85em"><img class="px-global" data-method="{html.escape(method)}" '
            f'data-class="{cls_attr}" src="{uri}" alt="{html.escape(caption)}">'
            f'<figcaption>{html.escape(caption)}</figcaption></figure>')


def store_summary_html(store: Any, *, labels: Sequence[str] | None = None, max_classes: int = 10, top_k: int = 5,
                       stat: str = "mean", title: str = "Dataset explanations") -> str:
    """An HTML fragment ``<section class="px-store">`` describing a batch store.

    Shows the job (samples, completeness, methods and options, weights fingerprint, versions), per
    method the global explanation over all samples (mean |a|) and per explained class (``stat``,
    the ``max_classes`` most frequent classes), the ``top_k`` most relevant features per class, and
    the per-sample metric summaries (mean ± std). Images are PNG data URIs; no external resources.
    """
    st: BatchStore = open_store(store)
    meta = st.metadata
    esc = html.escape
    done = len(st.done_chunks)
    n_chunks = -(-st.n_samples // st.chunk_size)
    parts = [f'<section class="px-store"><h2>{esc(title)}</h2>']
    state = "complete" if done == n_chunks else f"incomplete: {done} of {n_chunks} chunks written"
    parts.append(f"<p>{st.n_samples} samples, {len(st.methods)} method(s) — {esc(state)}.</p>")
    rows = [("store", st.path), ("samples", st.n_samples), ("chunk size", meta.get("chunk_size")),
            ("dtype", meta.get("dtype")), ("model", meta.get("model_class")),
            ("weights fingerprint", str(meta.get("model_fingerprint", ""))[:16]),
            ("target", meta.get("target") if meta.get("target") is not None else "top class"),
            ("created", meta.get("created"))]
    rows += [(f"{k} version", v) for k, v in meta.get("versions", {}).items()]
    rows += [(f"method {k}", f"{m.get('method')} {m.get('options')}") for k, m in meta.get("methods", {}).items()]
    parts.append('<table class="px-meta px-store-meta">' +
                 "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in rows) + "</table>")
    if done == 0:
        parts.append("<p>No chunk written yet.</p></section>")
        return "".join(parts)
    targets = st.targets[st.done]
    classes, counts = np.unique(targets, return_counts=True)
    shown = [int(c) for c in classes[np.argsort(-counts, kind="stable")][:max_classes]]
    count_of = dict(zip(classes.tolist(), counts.tolist()))
    for key in st.methods:
        parts.append(f'<div class="px-store-method" data-method="{esc(key)}"><h3>{esc(key)}</h3>')
        overall = st.global_explanation(key, by=None, stat="mean_abs")
        per_class = st.global_explanation(key, by="class", stat=stat)
        figs = [_figure(_picture_uri(overall, "absolute"), key, f"all samples, mean |a| (n={int(st.done.sum())})", None)]
        figs += [_figure(_picture_uri(per_class[c], "signed" if stat == "mean" else "absolute"), key,
                         f"{_name(c, labels)}, {stat} (n={count_of[c]})", c) for c in shown if c in per_class]
        figs = [f for f in figs if f]
        if figs:
            parts.append('<div class="px-store-maps" style="display:flex;flex-wrap:wrap;gap:10px">' + "".join(figs) + "</div>")
        top = st.top_features(key, k=top_k, by="class", stat="mean_abs")
        items = []
        for c in shown:
            feats = ", ".join(f"{idx} ({val:.3g})" for idx, val in top.get(c, []))
            items.append(f"<li><b>{esc(_name(c, labels))}</b>: {esc(feats)}</li>")
        parts.append(f'<p>Top {top_k} features by mean |a| per class (index in the attribution shape):</p>'
                     f'<ol class="px-store-topk">{"".join(items)}</ol></div>')
    summary = st.metric_summary()
    metric_names = sorted({m for per in summary.values() for m in per})
    if metric_names:
        head = "".join(f"<th>{esc(m)}</th>" for m in metric_names)
        body = ""
        for key in st.methods:
            cells = ""
            for m in metric_names:
                s = summary.get(key, {}).get(m)
                cells += (f"<td>{s['mean']:.4g} ± {s['std']:.2g}</td>" if s and s.get("n") else "<td>–</td>")
            body += f"<tr><th>{esc(key)}</th>{cells}</tr>"
        parts.append(f'<table class="px-store-metrics"><tr><th>method</th>{head}</tr>{body}</table>')
    parts.append("</section>")
    return "".join(parts)

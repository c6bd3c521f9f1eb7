"""``propex.evaluate.compare``: benchmark several explanation methods on several metrics in one call.

::

    table = propex.evaluate.compare(model, x,
                                    methods=["saliency", ("lrp", {"composite": "epsilon_plus"}), my_fn],
                                    metrics=["pixel_flipping", "sparseness", ("infidelity", {"n_perturbations": 32})])
    table.records          # [{"method", "metric", "summary", "mean", "std", "n", "seconds", ...}, ...]
    print(table)           # methods × metrics, mean ± std
    table.to_dataframe()   # pandas, if installed

Each method explains x once (its time is ``explain_seconds``); each metric then scores those
attributions (its own time is ``seconds``). Metrics that recompute explanations (their signature
has a ``method`` parameter: ``max_sensitivity``, ``avg_sensitivity``, ``local_lipschitz``,
``map_stability``) get the method itself (name with its options, or the callable) and, where
they accept it, the attributions already computed. The target is resolved once on x (``None``:
the top class on x), so every method and metric explains the same class.

A metric's per-sample result is reduced to one number per sample: a tensor ``[N]`` as it is;
a ``PerturbationCurve`` by its ``aopc`` (pixel flipping, region perturbation, ROAD) or ``auc``
(insertion, deletion); ``MapStability`` and the dicts of the randomisation checks by their ``spearman`` (for
``randomization_check``, whose entries are ``[L, N]``, the last row: after the last
randomisation step, i.e. all layers for the cascading order). A metric spec
``(metric, options, summary)`` picks another attribute (e.g. ``("pixel_flipping", {}, "auc")``).
The rows give the mean over samples, the sample standard deviation (``ddof=1``; NaN for one
sample), both ignoring NaN (e.g. the pointing game on an empty mask), and ``better``
(``"higher"``/``"lower"``/None) for the metrics whose direction is known.
"""
from __future__ import annotations

import difflib
import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor

from ..model_call import model_guard
from ._common import check_inputs, fixed_target, prepare, resolve_explainer

# names in propex.evaluate that take (model, x, ...) but are not per-sample metrics
_NOT_METRICS = frozenset({"compare", "axioms"})

# the direction of improvement of the metrics whose direction does not depend on options
_BETTER = {
    "infidelity": "lower", "faithfulness_correlation": "higher", "sensitivity_n": "higher",
    "max_sensitivity": "lower", "avg_sensitivity": "lower", "local_lipschitz": "lower",
    "map_stability": "higher", "pointing_game": "higher", "energy_pointing_game": "higher",
    "relevance_mass": "higher", "relevance_rank": "higher", "bbox_iou": "higher",
    "sparseness": "higher", "complexity": "lower", "compressed_size": "lower",
    "deletion": "lower", "insertion": "higher", "random_target_check": "lower", "randomization_check": "lower",
}
# the default summary of curve results, by the curve's metric name
_CURVE_SUMMARY = {"pixel_flipping": "aopc", "region_perturbation": "aopc", "road": "aopc",
                  "deletion": "auc", "insertion": "auc"}


# --------------------------------------------------------------------------- the result
@dataclass
class Comparison:
    """The result of ``compare``: a tidy table, one record per (method, metric).

    Attributes:
        records: list of dicts with keys ``method``, ``metric``, ``summary`` (the attribute of
            a structured result that was averaged, else None), ``mean``, ``std``, ``n`` (samples
            with a finite value), ``seconds`` (the metric's wall time), ``explain_seconds`` (the
            method's wall time on x, the same on every row of the method), ``better``
            (``"higher"``, ``"lower"`` or None) and ``error`` (None, or the message when the
            pair failed with ``on_error="record"``).
        values: ``{(method, metric): Tensor [N]}`` the per-sample values behind each record.
        attributions: ``{method: Tensor}`` each method's attributions on x.
        target: the class indices ``[N]`` explained (None for a callable target).
    """

    records: list[dict[str, Any]]
    values: dict[tuple[str, str], Tensor] = field(default_factory=dict, repr=False)
    attributions: dict[str, Tensor] = field(default_factory=dict, repr=False)
    target: Any = None

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(r["method"] for r in self.records))

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys(r["metric"] for r in self.records))

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)

    def to_records(self, per_sample: bool = False) -> list[dict[str, Any]]:
        """The records (copies); with ``per_sample=True`` one record per (method, metric, sample)
        with keys ``method``, ``metric``, ``sample``, ``value``."""
        if not per_sample:
            return [dict(r) for r in self.records]
        return [{"method": m, "metric": k, "sample": i, "value": float(v)}
                for (m, k), vals in self.values.items() for i, v in enumerate(vals.tolist())]

    def to_dataframe(self, per_sample: bool = False) -> Any:
        """The records as a ``pandas.DataFrame`` (pandas is imported only here)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("Comparison.to_dataframe() needs pandas (pip install pandas); "
                              "Comparison.records / to_records() give the same table without it") from exc
        return pd.DataFrame.from_records(self.to_records(per_sample=per_sample))

    def _cell(self, method: str, metric: str, digits: int) -> str:
        for r in self.records:
            if r["method"] == method and r["metric"] == metric:
                if r["error"] is not None:
                    return "error"
                mean, std = r["mean"], r["std"]
                return f"{mean:.{digits}g}" + ("" if math.isnan(std) else f" ± {std:.{digits - 1 if digits > 1 else 1}g}")
        return ""

    def _header(self, metric: str) -> str:
        rec = next(r for r in self.records if r["metric"] == metric)
        arrow = {"higher": " ↑", "lower": " ↓"}.get(rec["better"] or "", "")
        summary = f".{rec['summary']}" if rec["summary"] else ""
        return f"{metric}{summary}{arrow}"

    def _explain_time(self, method: str) -> str:
        rec = next(r for r in self.records if r["method"] == method)
        return "" if rec["explain_seconds"] is None else f"{rec['explain_seconds']:.3g}"

    def to_markdown(self, digits: int = 4, wide: bool = True) -> str:
        """A markdown table: methods × metrics with ``mean ± std`` (``wide=True``; ↑/↓ mark the
        direction of improvement where known, and the last column is each method's time to
        explain x in seconds), or the tidy records one per line (``wide=False``)."""
        if not wide:
            keys = ["method", "metric", "summary", "mean", "std", "n", "seconds", "explain_seconds", "better", "error"]
            lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            for r in self.records:
                lines.append("| " + " | ".join(_fmt(r[k], digits) for k in keys) + " |")
            return "\n".join(lines)
        metrics = self.metrics
        lines = ["| method | " + " | ".join(self._header(m) for m in metrics) + " | explain s |",
                 "|---|" + "---|" * (len(metrics) + 1)]
        for method in self.methods:
            cells = [self._cell(method, m, digits) for m in metrics]
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {self._explain_time(method)} |")
        return "\n".join(lines)

    def to_text(self, digits: int = 4) -> str:
        """A plain-text table: methods × metrics with ``mean ± std``."""
        metrics = self.metrics
        header = ["method", *(self._header(m) for m in metrics), "explain s"]
        rows = [[method, *(self._cell(method, m, digits) for m in metrics), self._explain_time(method)]
                for method in self.methods]
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
        out = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
        out.append("  ".join("-" * w for w in widths))
        out += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
        errors = [r for r in self.records if r["error"] is not None]
        out += [f"error: {r['method']} / {r['metric']}: {r['error']}" for r in errors]
        return "\n".join(out)

    def __repr__(self) -> str:
        return f"Comparison({len(self.methods)} methods × {len(self.metrics)} metrics)\n" + self.to_text()

    __str__ = __repr__


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value).replace("|", "\\|")


# --------------------------------------------------------------------------- specs
@dataclass
class _MethodSpec:
    label: str
    method: Any                  # the name / class / callable as given
    options: dict[str, Any]
    explainer: Callable[[Any, Tensor, Any], Any]


@dataclass
class _MetricSpec:
    label: str
    name: str
    fn: Callable[..., Any]
    options: dict[str, Any]
    summary: str | Callable[[Any], Any] | None
    wants_method: bool           # a ``method`` parameter: recomputes explanations
    accepts: Callable[[str], bool]


def available_metrics() -> list[str]:
    """Names of the metrics in ``propex.evaluate`` that ``compare`` can run by name (the public
    functions taking ``(model, x, ...)``), sorted."""
    from .. import evaluate

    names = []
    for name, obj in vars(evaluate).items():
        if name.startswith("_") or name in _NOT_METRICS or not inspect.isfunction(obj):
            continue
        params = _parameters(obj)
        if params is not None and [p.name for p in params[:2]] == ["model", "x"]:
            names.append(name)
    return sorted(names)


def _parameters(fn: Callable[..., Any]) -> list[inspect.Parameter] | None:
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None


def _accepts(fn: Callable[..., Any]) -> Callable[[str], bool]:
    params = _parameters(fn)
    if params is None:
        return lambda name: True
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return lambda name: True
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return lambda name: name in names


def _split_spec(spec: Any, what: str) -> tuple[Any, dict[str, Any], Any]:
    """``spec`` → (thing, options, summary): a bare thing, ``(thing, options)`` or, for metrics,
    ``(thing, options, summary)``."""
    if isinstance(spec, tuple):
        if not 1 <= len(spec) <= (3 if what == "metric" else 2):
            form = "(metric, options) or (metric, options, summary)" if what == "metric" else "(method, options)"
            raise ValueError(f"{what}s: {spec!r} must be a {what} or a tuple {form}")
        thing = spec[0]
        options = spec[1] if len(spec) > 1 else {}
        summary = spec[2] if len(spec) > 2 else None
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise TypeError(f"{what}s: the options of {thing!r} must be a dict, got {type(options).__name__} "
                            f"{options!r}")
        return thing, dict(options), summary
    return spec, {}, None


def _as_items(specs: Any, what: str) -> list[tuple[str | None, Any]]:
    if isinstance(specs, Mapping):
        items = [(str(k), v) for k, v in specs.items()]
    elif isinstance(specs, str) or callable(specs) or (
            isinstance(specs, tuple) and len(specs) in (2, 3) and isinstance(specs[1], (Mapping, type(None)))):
        items = [(None, specs)]          # one method / metric
    elif isinstance(specs, Sequence):
        items = [(None, s) for s in specs]
    else:
        raise TypeError(f"{what}s must be a list of {what}s (names, (name, options) tuples or callables), "
                        f"got {type(specs).__name__}")
    if not items:
        raise ValueError(f"{what}s is empty; pass at least one {what}")
    return items


def _base_label(thing: Any) -> str:
    if isinstance(thing, str):
        return thing
    return getattr(thing, "name", None) or getattr(thing, "__name__", None) or type(thing).__name__


def _labels(bases: list[str], options: list[dict[str, Any]], given: list[str | None]) -> list[str]:
    """Unique labels: the given ones, else the base name, with the options when the base repeats."""
    counts: dict[str, int] = {}
    for b in bases:
        counts[b] = counts.get(b, 0) + 1
    labels = []
    for base, opts, label in zip(bases, options, given):
        if label is None:
            label = base
            if counts[base] > 1 and opts:
                label = f"{base}(" + ", ".join(f"{k}={_short(v)}" for k, v in opts.items()) + ")"
        labels.append(label)
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out


def _short(v: Any) -> str:
    if isinstance(v, Tensor):
        return f"Tensor{tuple(v.shape)}"
    text = repr(v)
    return text if len(text) <= 24 else text[:21] + "..."


def _resolve_methods(model: Any, methods: Any, seed: int) -> list[_MethodSpec]:
    from ..api import get_method
    from ..base import Method, _accepted_options

    items = _as_items(methods, "method")
    things, options, given, user_options = [], [], [], []
    for label, spec in items:
        thing, opts, _ = _split_spec(spec, "method")
        user_options.append(dict(opts))
        if isinstance(thing, str) or (isinstance(thing, type) and issubclass(thing, Method)):
            cls = get_method(thing)              # ValueError with close matches for an unknown name
            if "seed" in _accepted_options(cls) and "seed" not in opts:
                opts["seed"] = seed
            thing = cls.name if isinstance(thing, str) else thing
        elif not (callable(thing) or isinstance(thing, Method)):
            raise TypeError(f"methods: {thing!r} is not a method name, a propex Method or a callable "
                            f"(model, inputs, target) -> attributions")
        things.append(thing)
        options.append(opts)
        given.append(label)
    labels = _labels([_base_label(t) for t in things], user_options, given)
    out = []
    for label, thing, opts in zip(labels, things, options):
        if isinstance(thing, str) or (isinstance(thing, type) and issubclass(thing, Method)):
            cls = get_method(thing)
            try:
                cls(model, **opts)           # option names and values checked now, before any work
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"methods: {label}: {exc}") from None
        out.append(_MethodSpec(label, thing, opts, resolve_explainer(thing, **opts)))
    return out


def _resolve_metrics(metrics: Any, seed: int) -> list[_MetricSpec]:
    from .. import evaluate

    items = _as_items(metrics, "metric")
    resolved = []
    for label, spec in items:
        thing, opts, summary = _split_spec(spec, "metric")
        if isinstance(thing, str):
            key = thing.strip().lower().replace("-", "_").replace(" ", "_")
            available = available_metrics()
            if key not in available:
                close = difflib.get_close_matches(key, available, n=3, cutoff=0.5)
                hint = f" Did you mean: {', '.join(close)}?" if close else ""
                raise ValueError(f"metrics: {thing!r} is not a metric of propex.evaluate.{hint} "
                                 f"Available: {', '.join(available)}")
            fn, name = getattr(evaluate, key), key
        elif callable(thing):
            fn, name = thing, _base_label(thing)
        else:
            raise TypeError(f"metrics: {thing!r} is not a metric name or a callable "
                            f"(model, x, attributions, target=...) -> values")
        if summary is not None and not (isinstance(summary, str) or callable(summary)):
            raise TypeError(f"metrics: the summary of {name!r} must be an attribute name or a callable, "
                            f"got {type(summary).__name__}")
        params = _parameters(fn) or []
        names = [p.name for p in params]
        wants_method = "method" in names and "attributions" not in names[:3]
        accepts = _accepts(fn)
        reserved = {"model", "x", "target", "method" if wants_method else "attributions"}
        clash = sorted(reserved & set(opts))
        if clash:
            raise ValueError(f"metrics: {name}: {', '.join(clash)} cannot be given as options; compare passes them")
        unknown = [k for k in opts if not accepts(k)]
        if unknown:
            accepted = [n for n in names[2:] if n not in reserved and n != "self"]
            raise TypeError(f"metrics: {name} got unknown option(s) {', '.join(map(repr, unknown))}. "
                            f"Its options are: {', '.join(accepted)}")
        if "seed" in names and "seed" not in opts:
            opts["seed"] = seed
        resolved.append((label, name, fn, opts, summary, wants_method, accepts))
    labels = _labels([r[1] for r in resolved], [{k: v for k, v in r[3].items() if k != "seed"} for r in resolved],
                     [r[0] for r in resolved])
    return [_MetricSpec(label, *rest) for label, (_, *rest) in zip(labels, resolved)]


# --------------------------------------------------------------------------- compare
def compare(model: Any, x: Tensor, methods: Any, metrics: Any, target: Any = None, *, seed: int = 0,
            on_error: str = "raise") -> Comparison:
    """Benchmark explanation methods on evaluation metrics: one tidy table.

    Args:
        model: the model (left as found).
        x: inputs ``[N, ...]`` (one tensor).
        methods: a list of methods, each a name of ``propex.methods()``, a ``(name, options)``
            tuple such as ``("lrp", {"composite": "epsilon_plus"})``, a propex Method class, or a
            callable ``(model, inputs, target) -> attributions`` (e.g. wrapping another library);
            or a dict ``{label: method}`` to choose the row labels. Labels default to the names
            (with the options when a name repeats).
        metrics: a list of metrics, each a name of a metric in ``propex.evaluate`` (looked up
            when ``compare`` runs, see ``available_metrics()``), a ``(name, options)`` tuple such
            as ``("pixel_flipping", {"n_steps": 16})``, a ``(name, options, summary)`` tuple, or a
            callable ``(model, x, attributions, target=None, **options) -> [N] values``; or a dict
            ``{label: metric}``.
        target: the explained output (``propex.targets``); resolved once on x, so that every
            method and metric uses the same classes (None: the top class on x).
        seed: passed as ``seed`` to every method and metric that takes one and was not given one.
        on_error: ``"raise"`` (default) stops at the first method or metric that fails at run
            time; ``"record"`` records the error in the row(s) and goes on (names and options are
            always checked before any work).

    Returns:
        a ``Comparison``: ``.records`` (one dict per method × metric: ``method``, ``metric``,
        ``summary``, ``mean``, ``std``, ``n``, ``seconds``, ``explain_seconds``, ``better``,
        ``error``), ``.values``, ``.attributions``, ``to_dataframe()``, ``to_markdown()``,
        ``to_text()``.
    """
    x = check_inputs(x)
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    method_specs = _resolve_methods(model, methods, seed)
    metric_specs = _resolve_metrics(metrics, seed)

    with model_guard(model):
        # one forward pass to resolve the target (batch_size given: no memory measurement needed)
        _, prep = prepare(model, x, target, batch_size=x.shape[0])
        tgt = fixed_target(prep, target)
        records: list[dict[str, Any]] = []
        values: dict[tuple[str, str], Tensor] = {}
        attributions: dict[str, Tensor] = {}
        for m in method_specs:
            try:
                start = _now(x)
                a = m.explainer(model, x, tgt)
                a = _single_tensor(a, m.label)
                explain_seconds = _now(x) - start
            except Exception as exc:  # noqa: BLE001 - reported or re-raised with context
                if on_error == "raise":
                    raise RuntimeError(f"compare: method {m.label!r} failed on x of shape {tuple(x.shape)}: "
                                       f"{type(exc).__name__}: {exc}") from exc
                for k in metric_specs:
                    records.append(_record(m.label, k, None, None, None, None, f"method failed: {type(exc).__name__}: {exc}"))
                continue
            attributions[m.label] = a
            for k in metric_specs:
                try:
                    start = _now(x)
                    result = _call_metric(k, m, model, x, a, tgt)
                    per_sample, summary = _per_sample(result, k, x.shape[0])
                    seconds = _now(x) - start
                except Exception as exc:  # noqa: BLE001
                    if on_error == "raise":
                        raise RuntimeError(f"compare: metric {k.label!r} failed on the attributions of "
                                           f"{m.label!r}: {type(exc).__name__}: {exc}") from exc
                    records.append(_record(m.label, k, None, None, explain_seconds, None,
                                           f"{type(exc).__name__}: {exc}"))
                    continue
                values[(m.label, k.label)] = per_sample
                records.append(_record(m.label, k, per_sample, seconds, explain_seconds, summary, None))
    public = prep.target.public()
    return Comparison(records, values, attributions, public)


def _now(x: Tensor) -> float:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    return time.perf_counter()


def _single_tensor(a: Any, label: str) -> Tensor:
    from ..base import Explanation

    if isinstance(a, Explanation):
        a = a.attributions
    if isinstance(a, tuple):
        if len(a) != 1:
            raise TypeError(f"method {label!r} returned a tuple of {len(a)} attribution tensors; compare judges "
                            f"one input tensor")
        a = a[0]
    if not isinstance(a, Tensor):
        raise TypeError(f"method {label!r} returned {type(a).__name__}, expected a tensor of attributions")
    return a.detach()


def _call_metric(k: _MetricSpec, m: _MethodSpec, model: Any, x: Tensor, a: Tensor, tgt: Any) -> Any:
    opts = dict(k.options)
    if k.wants_method:
        if isinstance(m.method, str) and k.accepts("method_options"):
            opts["method_options"] = dict(m.options)
            method = m.method
        else:
            method = m.explainer
        if k.accepts("attributions"):
            opts.setdefault("attributions", a)
        return k.fn(model, x, method=method, target=tgt, **opts)
    if k.accepts("target"):
        return k.fn(model, x, a, target=tgt, **opts)
    return k.fn(model, x, a, **opts)


def _per_sample(result: Any, k: _MetricSpec, n: int) -> tuple[Tensor, str | None]:
    """The per-sample values ``[N]`` of a metric's result, and the summary attribute used."""
    summary = k.summary
    if callable(summary):
        value, label = summary(result), getattr(summary, "__name__", "summary")
    elif isinstance(summary, str) and isinstance(result, Mapping):
        if summary not in result:
            raise KeyError(f"the result of {k.name} has no entry {summary!r}; entries: {', '.join(map(str, result))}")
        value, label = result[summary], summary
    elif isinstance(summary, str):
        if not hasattr(result, summary):
            raise AttributeError(f"the result of {k.name} ({type(result).__name__}) has no attribute {summary!r}")
        value, label = getattr(result, summary), summary
    elif isinstance(result, Tensor):
        value, label = result, None
    elif hasattr(result, "scores") and hasattr(result, "fractions") and hasattr(result, "aopc"):
        label = _CURVE_SUMMARY.get(getattr(result, "metric", ""), "aopc")
        value = getattr(result, label)
    elif hasattr(result, "spearman") and hasattr(result, "topk_intersection"):
        value, label = result.spearman, "spearman"
    elif isinstance(result, Mapping) and "spearman" in result:
        value, label = result["spearman"], "spearman"
    elif isinstance(result, (int, float)):
        value, label = torch.tensor([float(result)]), None
    else:
        raise TypeError(f"{k.name} returned {type(result).__name__}; compare needs per-sample values [N] "
                        f"(pass a (metric, options, summary) tuple to pick an attribute, or wrap the metric "
                        f"in a callable returning a tensor [N])")
    if not isinstance(value, Tensor):
        value = torch.as_tensor(value)
    if value.dim() == 2 and value.shape[1] == n and value.shape[0] > 1:
        # per-layer rows [L, N] (randomization_check): the last row, after the last randomisation step
        value, label = value[-1], f"{label}[-1]"
    value = value.detach().reshape(-1)
    if value.numel() not in (1, n):
        raise ValueError(f"{k.name} returned {value.numel()} values for {n} samples; expected [N] per-sample values")
    return value.to(torch.float64).cpu(), label


def _better(k: _MetricSpec, summary: str | None) -> str | None:
    """``"higher"`` / ``"lower"`` where the direction of improvement is known, else None."""
    order = str(k.options.get("order", "morf")).lower()
    if k.name == "aopc" or summary == "aopc":
        return {"morf": "higher", "lerf": "lower"}.get(order)
    if summary == "auc" and k.name in ("pixel_flipping", "region_perturbation", "road"):
        return {"morf": "lower", "lerf": "higher"}.get(order)
    if k.summary is None:       # the default summary of a known metric
        return _BETTER.get(k.name)
    return None


def _record(method: str, k: _MetricSpec, values: Tensor | None, seconds: float | None, explain_seconds: float | None,
            summary: str | None, error: str | None) -> dict[str, Any]:
    if values is None:
        mean = std = math.nan
        count = 0
    else:
        finite = values[torch.isfinite(values)]
        count = int(finite.numel())
        mean = float(finite.mean()) if count else math.nan
        std = float(finite.std(unbiased=True)) if count > 1 else math.nan
    return {"method": method, "metric": k.label, "summary": summary, "mean": mean, "std": std, "n": count,
            "seconds": seconds, "explain_seconds": explain_seconds,
            "better": _better(k, summary) if error is None else None, "error": error}

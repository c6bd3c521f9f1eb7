"""``run_report``: explain, evaluate and write the HTML report in one call (used by the CLI and the web app)."""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from .builder import build_report

CURVES = ("deletion", "insertion", "pixel_flipping", "region_perturbation")
Progress = Callable[[int, int, str], None]


def _now(x: Tensor) -> float:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    return time.perf_counter()


def _cached(explainer: Callable[..., Any], model: Any, x: Tensor, attributions: Tensor) -> Callable[..., Any]:
    """The explainer, answering from ``attributions`` when asked about the same model and x
    (so ``compare`` does not explain x twice); anything else (perturbed inputs, randomised
    model copies) is explained afresh."""
    def explainer_with_cache(model_: Any, inputs: Tensor, target: Any) -> Any:
        if model_ is model and (inputs is x or (inputs.shape == x.shape and torch.equal(inputs, x))):
            return attributions
        return explainer(model_, inputs, target)
    return explainer_with_cache


def run_report(model: Any, x: Tensor, methods: Any, *, path: str | os.PathLike, metrics: Any = None,
               target: Any = None, labels: Sequence[str] | None = None,
               curves: Sequence[str] | None = ("deletion", "insertion"),
               curve_options: Mapping[str, Mapping[str, Any]] | None = None, settings: Mapping[str, Any] | None = None,
               title: str = "propex report", top_k: int = 5, store: Any = None, seed: int = 0,
               heatmap_scale: str = "shared", heatmap_options: Mapping[str, Any] | None = None,
               captions: Sequence[str] | None = None, on_error: str = "record",
               progress: Progress | None = None) -> str:
    """Explain ``x`` with every method (timing each), evaluate (``metrics`` via
    ``propex.evaluate.compare``, plus the faithfulness ``curves``) and write the report.

    Args:
        model, x: the model and image inputs ``[N, C, H, W]`` (floating point).
        methods: as for ``compare``: names, ``(name, options)`` tuples, Method classes or callables
            ``(model, inputs, target) -> attributions``, or a dict ``{label: method}``.
        path: the ``.html`` file to write.
        metrics: as for ``compare`` (None: no metrics table).
        target: the explained outputs (None: the top class), resolved once on x.
        labels: class names for the top-k predictions.
        curves: curve metrics of ``propex.evaluate`` to plot (any of ``deletion``, ``insertion``,
            ``pixel_flipping``, ``region_perturbation``); None or () for none. Options per curve in
            ``curve_options``, e.g. ``{"deletion": {"n_steps": 32}}``.
        on_error: ``"record"`` (default: a method, metric or curve that fails is listed in the report
            and the rest goes on) or ``"raise"``.
        progress: called as ``progress(done, total, message)`` before each step (for progress bars).
        settings, title, top_k, store, heatmap_scale, heatmap_options, captions: see ``build_report``.

    Returns:
        the path written.
    """
    from .. import evaluate
    from ..base import Explanation
    from ..evaluate._common import check_inputs, fixed_target, prepare
    from ..evaluate.compare import _resolve_methods, _single_tensor
    from ..model_call import model_guard

    x = check_inputs(x)
    if on_error not in ("record", "raise"):
        raise ValueError(f"on_error must be 'record' or 'raise', got {on_error!r}")
    curves = tuple(curves or ())
    for name in curves:
        if name not in CURVES:
            raise ValueError(f"curves: {name!r} is not a curve; choose from {', '.join(CURVES)}")
    curve_options = {k: dict(v) for k, v in (curve_options or {}).items()}
    unknown = sorted(set(curve_options) - set(curves))
    if unknown:
        raise ValueError(f"curve_options has options for {unknown}, which are not in curves={list(curves)}")
    specs = _resolve_methods(model, methods, seed)
    total = len(specs) * (1 + len(curves)) + (1 if metrics is not None else 0) + 1
    done = 0

    def step(message: str) -> None:
        nonlocal done
        if progress is not None:
            progress(done, total, message)
        done += 1

    with model_guard(model):
        _, prep = prepare(model, x, target, batch_size=x.shape[0])
    tgt = fixed_target(prep, target)
    outputs = prep.outputs.detach()
    public = prep.target.public()
    notes: list[str] = []
    explanations: dict[str, Explanation] = {}
    timings: dict[str, float] = {}
    for spec in specs:
        step(f"explaining with {spec.label}")
        try:
            start = _now(x)
            a = _single_tensor(spec.explainer(model, x, tgt), spec.label)
            timings[spec.label] = _now(x) - start
        except Exception as exc:  # noqa: BLE001 - recorded in the report or re-raised
            if on_error == "raise":
                raise
            notes.append(f"{spec.label} failed: {type(exc).__name__}: {exc}")
            continue
        explanations[spec.label] = Explanation(a, public, outputs, None, spec.label, dict(spec.options))
    if not explanations:
        raise RuntimeError("run_report: every method failed: " + "; ".join(notes))

    comparison = None
    if metrics is not None:
        step("computing metrics")
        cached = {label: _cached(next(s.explainer for s in specs if s.label == label), model, x, e.attributions)
                  for label, e in explanations.items()}
        comparison = evaluate.compare(model, x, cached, metrics, target=tgt, seed=seed, on_error=on_error)

    curve_results: dict[str, dict[str, Any]] = {}
    for name in curves:
        fn = getattr(evaluate, name)
        for label, e in explanations.items():
            step(f"{name} curve of {label}")
            try:
                curve = fn(model, x, e.attributions, target=tgt, **curve_options.get(name, {}))
            except Exception as exc:  # noqa: BLE001
                if on_error == "raise":
                    raise
                notes.append(f"{name} curve of {label} failed: {type(exc).__name__}: {exc}")
                continue
            curve_results.setdefault(name, {})[label] = curve

    step("writing the report")
    run_settings: dict[str, Any] = {"target": "top class" if target is None else target, "seed": seed}
    for label, e in explanations.items():
        if e.options:
            run_settings[f"options of {label}"] = e.options
    if curves:
        run_settings["curves"] = ", ".join(curves) + "".join(f"; {k}: {v}" for k, v in curve_options.items())
    run_settings.update(settings or {})
    out = build_report(path, model=model, inputs=x, explanations=explanations, labels=labels,
                       comparison=comparison, curves=curve_results or None, timings=timings, settings=run_settings,
                       store=store, title=title, top_k=top_k, heatmap_scale=heatmap_scale,
                       heatmap_options=heatmap_options, captions=captions, notes=notes)
    if progress is not None:
        progress(total, total, "done")
    return out

"""``propex report``: one self-contained HTML report (propex.report) for images and methods."""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, Sequence

import click
import torch

from .common import EXIT_FAILED, InputError, Progress, echo, model_options, one_line, run_options
from .evaluate import comparison_table, explain_for_metrics, metric_options, metric_specs, run_compare
from .explain import ExplainRun, explain_options, print_table, report_status

REPORT_CURVES = ("deletion", "insertion")


def open_store(path: str | None) -> Any:
    if path is None:
        return None
    try:
        from ..batch import open_store as open_batch_store
    except ImportError as err:
        raise InputError(f"--store needs propex.batch ({one_line(err)}): pip install 'propex[batch]'") from None
    if not Path(path).exists():
        raise InputError(f"--store {path!r} does not exist: give the folder written by propex batch / "
                         "propex.batch.explain_dataset")
    try:
        return open_batch_store(path)
    except Exception as err:  # noqa: BLE001 - not a store, a damaged one, ...
        raise InputError(f"--store {path!r} cannot be opened as a propex.batch store: {one_line(err)[:200]}") from None


def write_report(run: ExplainRun, comparison: Any, path: str | Path, *, store: Any = None,
                 curves: Sequence[str] = REPORT_CURVES, curve_steps: int = 16, title: str = "propex report",
                 settings: dict[str, Any] | None = None, progress: Progress | None = None) -> str:
    """``propex.report.build_report`` for an explain run: heatmaps, top-k, the metrics table, the
    deletion/insertion curves of every method, the run's settings, time per method, notes."""
    from .. import evaluate
    from ..report import build_report

    curve_results: dict[str, dict[str, Any]] = {}
    notes = [f"{name} skipped: {why}" for name, why in run.skipped.items()]
    notes += [f"{name} failed: {err}" for name, err in run.failed.items()]
    progress = progress or Progress(False)
    with progress.task("curves", len(curves) * len(run.explanations)) as advance:
        for curve in curves:
            for name, exp in run.explanations.items():
                advance(f"{curve} curve of {name}", 0)
                try:
                    curve_results.setdefault(curve, {})[name] = getattr(evaluate, curve)(
                        run.loaded.model, run.x, exp.attributions, target=run.target, n_steps=curve_steps)
                except Exception as err:  # noqa: BLE001 - listed in the report's notes
                    notes.append(f"{curve} curve of {name} failed: {type(err).__name__}: {one_line(err)[:200]}")
                advance(None, 1)
    meta = {"model": f"{run.loaded.name} ({run.loaded.kind})", "device": run.loaded.device,
            "inputs": ", ".join(Path(p).name for p in run.paths), "torch": torch.__version__,
            "python": platform.python_version(), **(settings or {})}
    for note in run.loaded.notes:
        notes.append(note)
    return build_report(path, model=run.loaded.model, inputs=run.loaded.unnormalize(run.x), explanations=run.explanations,
                        labels=run.loaded.labels, comparison=comparison, curves=curve_results or None,
                        timings=run.seconds, settings=meta, store=store, title=title,
                        captions=[Path(p).name for p in run.paths], notes=notes)


@click.command("report")
@model_options
@explain_options
@metric_options
@click.option("--store", default=None, metavar="PATH", help="A propex.batch store to summarise in the report.")
@click.option("--title", default="propex report", show_default=True, help="The report's title.")
@click.option("--out", default="propex-report", show_default=True, type=click.Path(file_okay=False),
              help="Output folder (report.html).")
@run_options
@click.pass_context
def report_cmd(ctx: click.Context, model_spec: str, weights: str | None, preprocess: tuple[str, ...],
               inputs: tuple[str, ...], methods: tuple[str, ...], options: tuple[str, ...], target: str | None,
               layer: str | None, metrics: tuple[str, ...], store: str | None, title: str, out: str,
               device: str | None, batch_size: int | None, seed: int | None) -> int:
    """Write a self-contained HTML report: heatmaps, top-k, metrics, curves, metadata.

    \b
    propex report --model demo --input digits/ --method saliency --method lrp --out report/
    propex report --model demo --input digits/ --method ig --store explained.zarr --out report/
    """
    metric_specs(metrics, options)               # bad metric names fail before the store is opened
    batch_store = open_store(store)
    specs, cfg, run, progress = explain_for_metrics(
        ctx, metrics, model_spec=model_spec, weights=weights, preprocess=preprocess, inputs=inputs, methods=methods,
        options=options, target=target, layer=layer, device=device, batch_size=batch_size, seed=seed)
    if not run.explanations:
        report_status(run)
        raise InputError("no method could run on these inputs, nothing to report (see the messages above)")
    comparison = run_compare(run, specs, cfg.seed, progress)
    print_table(comparison_table(comparison))
    path = write_report(run, comparison, Path(out) / "report.html", store=batch_store, title=title,
                        settings={"seed": cfg.seed, "batch size": cfg.batch_size or "auto"}, progress=progress)
    echo(f"wrote {path} (open it in a browser; it needs no server or network)")
    failed = [r for r in comparison.records if r["error"] is not None]
    return EXIT_FAILED if failed else report_status(run)

"""``propex evaluate``: the metrics × methods table of ``propex.evaluate.compare`` (text, CSV, JSON)."""
from __future__ import annotations

import csv
import difflib
import json
import math
from pathlib import Path
from typing import Any, Sequence

import click
import torch
from torch import Tensor

from .common import (EXIT_FAILED, InputError, Progress, echo, model_options, one_line, parse_options,
                     run_options)
from .explain import ExplainRun, compute, explain_options, prepare_run, print_table, report_status

# cheap defaults: two deletion/insertion curves (16 steps) and two complexity measures
DEFAULT_METRICS = ("deletion", "insertion", "sparseness", "complexity")
DEFAULT_METRIC_OPTIONS = {"deletion": {"n_steps": 16}, "insertion": {"n_steps": 16}}


class CachedExplainer:
    """``(model, inputs, target) -> attributions`` for ``compare``: the attributions already computed
    on ``x``, and a fresh ``propex.explain`` on any other inputs (metrics that re-explain perturbed x)."""

    def __init__(self, name: str, options: dict[str, Any], x: Tensor, attributions: Tensor):
        self.name, self.__name__ = name, name
        self.options, self.x, self.attributions = options, x, attributions

    def __call__(self, model: Any, inputs: Tensor, target: Any = None) -> Tensor:
        if isinstance(inputs, Tensor) and inputs.shape == self.x.shape and torch.equal(inputs, self.x):
            return self.attributions
        from ..api import explain
        return explain(model, inputs, self.name, target, **self.options).attributions


def metric_specs(metrics: Sequence[str], option_items: Sequence[str]) -> tuple[list[tuple[str, dict]], list[str]]:
    """(``[(metric, options)]``, the metric names) from ``--metric`` and ``--option metric.key=value``."""
    from ..evaluate.compare import available_metrics

    available = available_metrics()
    names: list[str] = []
    for m in metrics or DEFAULT_METRICS:
        key = m.strip().lower().replace("-", "_")
        if key not in available:
            close = difflib.get_close_matches(key, available, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise InputError(f"--metric {m!r} is not a metric of propex.evaluate.{hint} Available: "
                             f"{', '.join(available)}")
        if key not in names:
            names.append(key)
    parsed = parse_options(option_items)
    specs = []
    for name in names:
        opts = dict(DEFAULT_METRIC_OPTIONS.get(name, {})) if not metrics else {}
        opts.update(parsed.get(name, {}))
        specs.append((name, opts))
    return specs, names


def run_compare(run: ExplainRun, specs: list[tuple[str, dict]], seed: int, progress: Progress | None = None) -> Any:
    """``propex.evaluate.compare`` on the methods of ``run`` (reusing its attributions)."""
    from ..evaluate import compare

    if not run.explanations:
        return None
    methods = {name: CachedExplainer(name, dict(exp.options), run.x, exp.attributions)
               for name, exp in run.explanations.items()}
    progress = progress or Progress(False)
    with progress.task("evaluating", 1) as advance:
        advance(f"evaluating {len(methods)} method(s) × {len(specs)} metric(s)", 0)
        try:
            result = compare(run.loaded.model, run.x, methods, specs, target=run.target, seed=seed,
                             on_error="record")
        except (ValueError, TypeError) as err:     # metric options checked before any work
            raise InputError(one_line(err)) from None
        advance(None, 1)
    for record in result.records:      # the cached explainers took ~0 s: report the real explain time
        record["explain_seconds"] = run.seconds.get(record["method"], record["explain_seconds"])
    return result


def comparison_table(result: Any) -> Any:
    """A rich table: methods × metrics, mean ± std, the best value per metric in bold with '*'."""
    from rich.table import Table

    table = Table(title="metrics (mean ± std over inputs; * best where the direction is known)", title_justify="left")
    table.add_column("method")
    best = _best(result)
    for metric in result.metrics:
        table.add_column(result._header(metric), justify="right")
    table.add_column("explain s", justify="right")
    for method in result.methods:
        cells = []
        for metric in result.metrics:
            text = result._cell(method, metric, 4)
            cells.append(f"[bold green]{text} *[/bold green]" if best.get(metric) == method else text)
        table.add_row(method, *cells, result._explain_time(method))
    return table


def _best(result: Any) -> dict[str, str]:
    best: dict[str, str] = {}
    for metric in result.metrics:
        rows = [r for r in result.records if r["metric"] == metric and r["error"] is None and r["better"]
                and not math.isnan(r["mean"])]
        if rows:
            pick = max if rows[0]["better"] == "higher" else min
            best[metric] = pick(rows, key=lambda r: r["mean"])["method"]
    return best


def write_comparison(result: Any, run: ExplainRun, out: str | Path) -> tuple[str, str]:
    """compare.csv (one row per method × metric) and compare.json (records, per-sample values, best)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keys = ["method", "metric", "summary", "mean", "std", "n", "seconds", "explain_seconds", "better", "error"]
    with open(out / "compare.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        for r in result.records:
            writer.writerow({k: r.get(k) for k in keys})
    doc = {"model": run.loaded.name, "inputs": run.paths, "targets": run.target.tolist(),
           "records": [_clean(r) for r in result.records], "best": _best(result),
           "per_sample": [_clean(r) for r in result.to_records(per_sample=True)],
           "skipped": run.skipped, "failed": run.failed}
    (out / "compare.json").write_text(json.dumps(doc, indent=2))
    return str(out / "compare.csv"), str(out / "compare.json")


def _clean(record: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


def metric_options(f: Any) -> Any:
    return click.option("--metric", "metrics", multiple=True, metavar="NAME",
                        help=f"Metric of propex.evaluate (repeatable; default: {', '.join(DEFAULT_METRICS)}). "
                             "Options: --option deletion.n_steps=32.")(f)


def explain_for_metrics(ctx: click.Context, metrics: tuple[str, ...], **run_args: Any) -> tuple[Any, Any, Any, Any]:
    """The shared start of ``evaluate`` and ``report``: metric specs, then the models, inputs and
    explanations (notes printed). Returns ``(specs, config, run, progress)``."""
    specs, metric_names = metric_specs(metrics, run_args["options"])
    cfg, loaded, paths, x, plan, tgt = prepare_run(ctx, extra_option_keys=metric_names, **run_args)
    for note in [*loaded.notes, *plan.notes]:
        echo(f"note: {note}", err=True)
    progress = Progress(cfg.progress)
    return specs, cfg, compute(loaded, paths, x, plan, tgt, progress), progress


@click.command("evaluate")
@model_options
@explain_options
@metric_options
@click.option("--out", default="propex-evaluate", show_default=True, type=click.Path(file_okay=False),
              help="Output folder (compare.csv, compare.json).")
@run_options
@click.pass_context
def evaluate_cmd(ctx: click.Context, model_spec: str, weights: str | None, preprocess: tuple[str, ...],
                 inputs: tuple[str, ...], methods: tuple[str, ...], options: tuple[str, ...], target: str | None,
                 layer: str | None, metrics: tuple[str, ...], out: str, device: str | None,
                 batch_size: int | None, seed: int | None) -> int:
    """Compare methods on metrics: a table (methods × metrics), compare.csv and compare.json.

    \b
    propex evaluate --model demo --input digits/ --method saliency --method ig --metric deletion --metric sparseness
    """
    specs, cfg, run, progress = explain_for_metrics(
        ctx, metrics, model_spec=model_spec, weights=weights, preprocess=preprocess, inputs=inputs, methods=methods,
        options=options, target=target, layer=layer, device=device, batch_size=batch_size, seed=seed)
    result = run_compare(run, specs, cfg.seed, progress)
    if result is None:
        report_status(run)
        raise InputError("no method could run on these inputs, nothing to evaluate (see the messages above)")
    print_table(comparison_table(result))
    csv_path, json_path = write_comparison(result, run, out)
    echo(f"wrote {csv_path} and {json_path}")
    errors = [r for r in result.records if r["error"] is not None]
    for r in errors:
        echo(f"error: {r['method']} / {r['metric']}: {one_line(r['error'])[:200]}", err=True)
    status = report_status(run)
    return EXIT_FAILED if errors else status

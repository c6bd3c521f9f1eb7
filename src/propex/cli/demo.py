"""``propex demo``: the embedded digits model end to end (explain, evaluate, report)."""
from __future__ import annotations

import time

import click

from .common import EXIT_FAILED, EXIT_OK, InputError, Progress, echo, one_line, resolve_method, settings


@click.command("demo", context_settings={"allow_extra_args": True})
@click.option("--out", default="propex-demo", show_default=True, type=click.Path(file_okay=False),
              help="Output folder.")
@click.option("--n-samples", type=int, default=8, show_default=True, help="Number of test digits (one per class first).")
@click.option("--method", "method", multiple=True, metavar="NAME", help="Only these methods (repeatable; default: all).")
@click.option("--methods", "legacy_methods", is_flag=True, default=False,
              help="Method names follow as separate words: --methods saliency ig (same as repeating --method).")
@click.option("--no-metrics", is_flag=True, help="Skip the metrics table.")
@click.option("--no-report", is_flag=True, help="Skip the HTML report.")
@click.pass_context
def demo_cmd(ctx: click.Context, out: str, n_samples: int, method: tuple[str, ...], legacy_methods: bool,
             no_metrics: bool, no_report: bool) -> int:
    """Explain test digits of the embedded model with every method, evaluate, report.

    \b
    Writes OUT/grid.png (digits × methods), OUT/heatmaps/, OUT/attributions.npz, OUT/table.md,
    OUT/compare.csv/json, OUT/report.html and the digits as PNGs in OUT/inputs/.
    propex demo --out demo/ --n-samples 4 --method saliency --method ig
    """
    from ..demo import demo, format_table

    if ctx.args and not legacy_methods:
        raise InputError(f"unexpected argument(s) {' '.join(ctx.args)}: give methods with --method NAME")
    if n_samples < 1:
        raise InputError(f"--n-samples must be >= 1, got {n_samples}")
    names = [resolve_method(m) for m in (*method, *ctx.args)] or None
    cfg = settings(ctx)
    if cfg.device != "cpu":
        echo("note: propex demo runs on the CPU (the digits model is tiny)", err=True)
    start = time.perf_counter()
    echo(f"propex demo: explaining {n_samples} test digits of the embedded model")
    try:
        result = demo(out, n_samples, names, log=echo, metrics=not no_metrics, report=not no_report,
                      progress=Progress(cfg.progress))
    except ImportError as err:
        raise InputError(f"propex demo needs scikit-learn (the digits), Pillow and matplotlib: {one_line(err)}; "
                         "pip install 'propex[cli,viz,demo]'") from None
    echo()
    echo(format_table(result.rows))
    if result.comparison is not None:
        from .evaluate import comparison_table
        from .explain import print_table
        echo()
        print_table(comparison_table(result.comparison))
    echo()
    files = result.files
    written = ", ".join(f"{files[k]}" for k in ("grid", "npz", "table", "compare_csv", "report") if k in files)
    echo(f"wrote {written}, heatmaps in {files['heatmap_dir']}/ and the input digits in {files['inputs']}/ "
         f"in {time.perf_counter() - start:.1f} s")
    echo(f"try: propex explain --model demo --input {files['inputs']} --method lrp --out {out}/lrp")
    failed = [r.method for r in result.rows if r.error]
    if failed:
        echo(f"error: {len(failed)} method(s) failed: {', '.join(failed)}", err=True)
        return EXIT_FAILED
    return EXIT_OK

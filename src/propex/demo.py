"""``propex demo``: the embedded digits model end to end — explain test digits with every method,
evaluate a few cheap metrics, write the grid, the heatmaps, the NPZ, the metrics table and the HTML report.

Needs the ``cli`` extra (click, rich), scikit-learn (the digits) and the ``viz`` extra.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

# cheap metrics for the demo's table (digits: each well under a second for all methods)
DEMO_METRICS = (("deletion", {"n_steps": 16}), ("insertion", {"n_steps": 16}), ("sparseness", {}))


def demo_options(model: Any, train_x: Tensor, names: list[str]) -> dict[str, dict[str, Any]]:
    """Options that make each method's demo run meaningful and reproducible (others: defaults)."""
    references = train_x[torch.randperm(train_x.shape[0], generator=torch.Generator().manual_seed(0))[:64]]
    options: dict[str, dict[str, Any]] = {}
    if "pattern_attribution" in names:
        from .propagation import fit_patterns
        options["pattern_attribution"] = {"patterns": fit_patterns(model, train_x)}
    return options | {
        "smoothgrad": {"seed": 0},
        "vargrad": {"seed": 0},
        "integrated_gradients": {"n_steps": 64},
        "expected_gradients": {"baseline": references, "n_samples": 64, "seed": 0},
        "blur_ig": {"n_steps": 64, "max_sigma": 8.0},
        "guided_ig": {"n_steps": 64},
        "occlusion": {"window": (4, 4), "stride": (2, 2)},
        "rise": {"seed": 0, "n_masks": 2000, "center": True},
        "meaningful_perturbation": {"seed": 0, "baseline": 0.0},
        "lime": {"seed": 0},
        "kernel_shap": {"seed": 0},
    }


@dataclass
class DemoRow:
    method: str
    seconds: float
    completeness_error: float | None   # max over samples of |delta| / |f(x) - f(baseline)|
    error: str | None = None           # the method failed (a bug)
    not_applicable: str | None = None  # the method is not defined for this model (e.g. deconvnet on SiLU)


@dataclass
class DemoResult:
    rows: list[DemoRow]
    files: dict[str, str] = field(default_factory=dict)   # grid, npz, heatmaps, table, compare_csv, report, inputs
    comparison: Any = None


def run_demo(out_dir: str = "propex-demo", n_samples: int = 8, method_names: list[str] | None = None,
             log: Callable[[str], None] = print, *, metrics: bool = True, report: bool = True,
             progress: Any = None) -> tuple[list[DemoRow], str]:
    """Explain ``n_samples`` test digits (one per class first) with every input-attribution method (families
    gradient, propagation, cam, perturbation) or ``method_names``;
    write ``grid.png``, ``heatmaps/``, ``attributions.npz``, ``table.md``, the input digits as PNGs
    (``inputs/``, for ``propex explain --model demo``) and, unless disabled, ``compare.csv/json`` and
    ``report.html``. Returns ``(rows, grid path)``; :func:`demo` returns everything."""
    result = demo(out_dir, n_samples, method_names, log, metrics=metrics, report=report, progress=progress)
    return result.rows, result.files["grid"]


def demo(out_dir: str = "propex-demo", n_samples: int = 8, method_names: list[str] | None = None,
         log: Callable[[str], None] = print, *, metrics: bool = True, report: bool = True,
         progress: Any = None) -> DemoResult:
    """:func:`run_demo` returning a :class:`DemoResult` (rows, files written, the comparison)."""
    from .api import get_method, methods
    from .cli.common import IMAGE_FAMILIES, MethodPlan
    from .cli.explain import compute, write_outputs
    from .loading import load_model
    from .models import load_digits_data

    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}")
    torch.manual_seed(0)
    loaded = load_model("demo")
    x_test, y_test = load_digits_data("test")
    x_train, _ = load_digits_data("train")
    order = _one_per_class(y_test)[:n_samples]
    x, y = x_test[order], y_test[order]
    try:
        names = list(dict.fromkeys(get_method(m).name for m in method_names)) if method_names else [
            m for m in methods() if get_method(m).family in IMAGE_FAMILIES]   # input-attribution methods
    except ValueError as err:
        raise ValueError(f"methods: unknown method name: {err}") from None
    out = Path(out_dir)
    paths = _write_digits(out / "inputs", x_test, y_test, order)
    options = demo_options(loaded.model, x_train, names)
    plan = MethodPlan(names, {n: options.get(n, {}) for n in names})
    with torch.no_grad():
        predicted = loaded.model(x).argmax(1)
    run = compute(loaded, paths, x, plan, None, progress, log=log)
    captions = [f"label {int(t)} / pred {int(p)}" for t, p in zip(y, predicted)]
    files = write_outputs(run, out, row_labels=captions)
    rows = []
    for name in names:
        if name in run.explanations:
            rows.append(DemoRow(name, run.seconds[name], _relative_delta(run.explanations[name])))
        elif name in run.failed:
            rows.append(DemoRow(name, 0.0, None, error=run.failed[name]))
        else:
            rows.append(DemoRow(name, 0.0, None, not_applicable=run.skipped[name].removeprefix("not applicable: ")))
    files["table"] = str(out / "table.md")
    (out / "table.md").write_text(format_table(rows) + "\n")
    files["inputs"] = str(out / "inputs")
    result = DemoResult(rows, files)
    if metrics and run.explanations:
        from .cli.evaluate import run_compare, write_comparison
        start = time.perf_counter()
        result.comparison = run_compare(run, list(DEMO_METRICS), 0, progress)
        files["compare_csv"], files["compare_json"] = write_comparison(result.comparison, run, out)
        log(f"  metrics ({', '.join(m for m, _ in DEMO_METRICS)}) in {time.perf_counter() - start:.1f} s")
    if report and run.explanations:
        from .cli.report import write_report
        start = time.perf_counter()
        files["report"] = write_report(run, result.comparison, out / "report.html", title="propex demo: digits",
                                       settings={"samples": ", ".join(captions)}, progress=progress)
        log(f"  report in {time.perf_counter() - start:.1f} s")
    return result


def _write_digits(folder: Path, x: Tensor, y: Tensor, order: list[int]) -> list[str]:
    """The chosen test digits as 8×8 grey PNGs (round(v/16·255), the raw sklearn resolution)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    _, raw, _, _ = train_test_split(digits.images, digits.target, test_size=0.25, random_state=0,
                                    stratify=digits.target)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for rank, i in enumerate(order):
        path = folder / f"digit_{rank:02d}_label{int(y[i])}.png"
        Image.fromarray(np.round(raw[i] * 255.0 / 16.0).astype(np.uint8), "L").save(path)
        paths.append(str(path))
    return paths


def _relative_delta(exp: Any) -> float | None:
    if exp.delta is None:
        return None
    attr = exp.attributions if isinstance(exp.attributions, tuple) else (exp.attributions,)
    total = sum(a.reshape(a.shape[0], -1).sum(1) for a in attr)
    explained = total - exp.delta                      # = f(x) - f(baseline)
    return float((exp.delta.abs() / explained.abs().clamp_min(1e-12)).max())


def _one_per_class(y: Tensor) -> list[int]:
    first: dict[int, int] = {}
    for i, label in enumerate(y.tolist()):
        first.setdefault(label, i)
    rest = [i for i in range(len(y)) if i not in first.values()]
    return [first[c] for c in sorted(first)] + rest


def format_table(rows: list[DemoRow]) -> str:
    lines = ["| method | time (s) | completeness error |", "|---|---:|---:|"]
    for r in rows:
        err = "n/a" if r.completeness_error is None else f"{r.completeness_error:.2e}"
        if r.not_applicable:
            err = f"not applicable: {r.not_applicable}"
        if r.error:
            err = f"failed: {r.error}"
        lines.append(f"| {r.method} | {r.seconds:.2f} | {err} |")
    return "\n".join(lines)


__all__ = ["run_demo", "demo", "DemoRow", "DemoResult", "format_table", "demo_options", "DEMO_METRICS"]

"""``propex demo``: explain test digits of the embedded model with every available method."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from .api import explain, get_method, methods
from .propagation import UnsupportedOpError

# Options that make each method's demo run meaningful and reproducible; methods not
# listed run with their defaults.
def _demo_options(model: Any, train_x: Tensor, names: list[str]) -> dict[str, dict[str, Any]]:
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


def run_demo(out_dir: str = "propex-demo", n_samples: int = 8, method_names: list[str] | None = None,
             log: Callable[[str], None] = print) -> tuple[list[DemoRow], str]:
    """Explain ``n_samples`` test digits (one per class first) and write ``grid.png`` + ``table.md``."""
    from .models import load_digits_data, load_digits_model
    from .visualize import attribution_grid

    torch.manual_seed(0)
    model = load_digits_model()
    x_test, y_test = load_digits_data("test")
    x_train, _ = load_digits_data("train")
    order = _one_per_class(y_test)[:n_samples]
    x, y = x_test[order], y_test[order]
    try:
        names = [get_method(m).name for m in method_names] if method_names else methods()
    except ValueError as err:
        raise ValueError(f"methods: unknown method name: {err}") from None
    options = _demo_options(model, x_train, names)
    rows, maps = [], {}
    with torch.no_grad():
        predicted = model(x).argmax(1)
    for name in names:
        start = time.perf_counter()
        try:
            exp = explain(model, x, name, target=predicted, **options.get(name, {}))
        except UnsupportedOpError as err:
            rows.append(DemoRow(name, time.perf_counter() - start, None, not_applicable=str(err).split(" (use")[0]))
            log(f"  {name:<22} not applicable: {err}")
            continue
        except Exception as err:  # keep the demo going; report the failure in the table
            rows.append(DemoRow(name, time.perf_counter() - start, None, f"{type(err).__name__}: {err}"))
            log(f"  {name:<22} failed: {err}")
            continue
        seconds = time.perf_counter() - start
        maps[name] = exp.attributions
        rows.append(DemoRow(name, seconds, _relative_delta(exp)))
        log(f"  {name:<22} {seconds:7.2f} s")
    os.makedirs(out_dir, exist_ok=True)
    labels = [f"label {int(t)} / pred {int(p)}" for t, p in zip(y, predicted)]
    grid = attribution_grid(x, maps, os.path.join(out_dir, "grid.png"), row_labels=labels)
    with open(os.path.join(out_dir, "table.md"), "w") as fh:
        fh.write(format_table(rows) + "\n")
    return rows, grid


def _relative_delta(exp) -> float | None:
    if exp.delta is None:
        return None
    attr = exp.attributions if isinstance(exp.attributions, tuple) else (exp.attributions,)
    total = sum(a.reshape(a.shape[0], -1).sum(1) for a in attr)
    explained = total - exp.delta                      # = f(x) - f(baseline)
    return float((exp.delta.abs() / explained.abs().clamp_min(1e-12)).max())


def _one_per_class(y: Tensor) -> list[int]:
    first = {}
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

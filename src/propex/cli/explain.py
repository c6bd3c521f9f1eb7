"""``propex explain``: heatmaps, an overview grid and the raw attributions (NPZ) for images."""
from __future__ import annotations

import difflib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import click
import torch
from torch import Tensor

from .common import (EXIT_FAILED, EXIT_OK, InputError, MethodPlan, Progress, Settings, echo, model_options,
                     one_line, plan_methods, run_options, settings)


@dataclass
class ExplainRun:
    """Everything one ``explain`` run computed (reused by ``evaluate``, ``report`` and ``demo``)."""

    loaded: Any                                  # propex.loading.LoadedModel
    paths: list[str]
    x: Tensor                                    # preprocessed inputs [N, C, H, W]
    outputs: Tensor                              # model outputs [N, K]
    target: Tensor                               # explained classes [N]
    explanations: dict[str, Any] = field(default_factory=dict)   # method -> Explanation
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)        # not run: why (not applicable, needs an option)
    failed: dict[str, str] = field(default_factory=dict)         # raised on these inputs: the error

    @property
    def attributions(self) -> dict[str, Tensor]:
        return {name: exp.attributions for name, exp in self.explanations.items()}

    def label(self, index: int) -> str:
        labels = self.loaded.labels
        return labels[index] if labels and 0 <= index < len(labels) else str(index)


# --------------------------------------------------------------------------- loading (exit 2 on bad input)

def load(model_spec: str, weights: str | None, preprocess: Sequence[str], inputs: Sequence[str], device: str):
    """The model and the preprocessed images, or an InputError (one line)."""
    from ..loading import load_images, load_model
    try:
        loaded = load_model(model_spec, weights=weights, device=device, preprocess=list(preprocess) or None)
        if not inputs:
            raise InputError("no --input given: pass image files or folders (--input a.png --input images/)")
        images = load_images(list(inputs))
        x = loaded.inputs([img for _, img in images])
    except ValueError as err:
        raise InputError(one_line(err)) from None
    return loaded, [p for p, _ in images], x


def check_layer(model: Any, layer: str | None) -> None:
    if layer is None:
        return
    from ..layers import resolve_layer
    try:
        resolve_layer(model, layer, "--layer")
    except (ValueError, TypeError) as err:
        raise InputError(one_line(err) + ": pick a name from print(model) / model.named_modules()") from None


def resolve_target(target: str | None, labels: list[str] | None, n_classes: int) -> int | None:
    """``--target``: a class index or a class name of the model's labels (None: each input's top class)."""
    if target is None:
        return None
    text = target.strip()
    if re.fullmatch(r"-?\d+", text):
        index = int(text)
        if not 0 <= index < n_classes:
            raise InputError(f"--target {index} is not a class of the model (it has {n_classes} outputs: "
                             f"0..{n_classes - 1})")
        return index
    if labels:
        lowered = [str(lab).lower() for lab in labels]
        if text.lower() in lowered:
            return lowered.index(text.lower())
        close = difflib.get_close_matches(text.lower(), lowered, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(labels[lowered.index(c)]) for c in close)}?" if close else ""
        raise InputError(f"--target {text!r} is not a class name of the model.{hint} Give a name or an index")
    raise InputError(f"--target {text!r}: the model has no class names; give a class index 0..{n_classes - 1}")


# --------------------------------------------------------------------------- computing

def compute(loaded: Any, paths: list[str], x: Tensor, plan: MethodPlan, target: int | None,
            progress: Progress | None = None, log: Any = None) -> ExplainRun:
    """Run every planned method on x (all explaining the same class per input)."""
    from ..api import explain
    from ..propagation import UnsupportedOpError

    log = log or (lambda s: None)
    with torch.no_grad():
        outputs = loaded.model(x)
    if not isinstance(outputs, Tensor) or outputs.dim() != 2:
        raise InputError(f"the model returned {getattr(outputs, 'shape', type(outputs).__name__)}, not class scores "
                         "[N, K]: propex explain needs a classifier")
    tgt = outputs.argmax(1) if target is None else torch.full((x.shape[0],), target, dtype=torch.long,
                                                              device=outputs.device)
    run = ExplainRun(loaded, paths, x, outputs.detach(), tgt, skipped=dict(plan.skipped))
    progress = progress or Progress(False)
    with progress.task("explaining", len(plan.names)) as advance:
        for name in plan.names:
            advance(f"{name}", 0)
            start = time.perf_counter()
            try:
                exp = explain(loaded.model, x, name, target=tgt, **_with_inputs(plan.options[name], x))
                a = exp.attributions
                if isinstance(a, Tensor) and not torch.isfinite(a).all():
                    raise ValueError("the attributions contain NaN or infinite values")
            except UnsupportedOpError as err:
                if name in plan.explicit:      # asked for by name: a failure on these inputs
                    run.failed[name] = f"not applicable to this model: {one_line(err)}"
                    log(f"  {name:<24} FAILED: {run.failed[name][:200]}")
                    advance(None, 1)
                    continue
                run.skipped[name] = "not applicable: " + one_line(err).split(" (use")[0]
                log(f"  {name:<24} not applicable: {one_line(err)[:160]}")
            except Exception as err:  # noqa: BLE001 - reported, the other methods go on (exit code 1)
                run.failed[name] = f"{type(err).__name__}: {one_line(err)}"
                log(f"  {name:<24} FAILED: {run.failed[name][:200]}")
            else:
                run.seconds[name] = time.perf_counter() - start
                run.explanations[name] = exp
                log(f"  {name:<24} {run.seconds[name]:7.2f} s")
            advance(None, 1)
    return run


def _with_inputs(options: dict[str, Any], x: Tensor) -> dict[str, Any]:
    """``baseline="inputs"``: the explained inputs themselves as the reference samples."""
    return {k: (x if k == "baseline" and isinstance(v, str) and v == "inputs" else v) for k, v in options.items()}


# --------------------------------------------------------------------------- writing

def _stems(paths: list[str]) -> list[str]:
    stems = [re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(p).stem) or "input" for p in paths]
    if len(set(stems)) < len(stems):
        stems = [f"{i:03d}_{s}" for i, s in enumerate(stems)]
    return stems


def _drawable(a: Tensor) -> bool:
    return isinstance(a, Tensor) and a.dim() in (3, 4)


def write_outputs(run: ExplainRun, out: str | os.PathLike[str], *, grid_name: str = "grid.png",
                  row_labels: Sequence[str] | None = None) -> dict[str, Any]:
    """heatmaps/<input>_<method>.png, grid.png (inputs × methods), attributions.npz, explain.json."""
    import numpy as np

    from ..visualize import grid, heatmap
    from ..visualize.compose import enlarged

    out = Path(out)
    heat_dir = out / "heatmaps"
    heat_dir.mkdir(parents=True, exist_ok=True)
    size = tuple(run.x.shape[-2:])
    stems = _stems(run.paths)
    pictures: dict[str, list[Any]] = {}
    written: list[str] = []
    for name, exp in run.explanations.items():
        a = exp.attributions
        if not _drawable(a):
            continue
        a = a.detach().float().cpu()
        pics = heatmap(a if a.dim() == 4 else a[:, None], size=size if tuple(a.shape[-2:]) != size else None)
        pictures[name] = pics
        for stem, pic in zip(stems, pics):
            written.append(enlarged(pic, 128).save(heat_dir / f"{stem}_{name}.png"))
    display = run.loaded.unnormalize(run.x.detach().cpu())
    rows = [[display[i], *(pictures[m][i] for m in pictures)] for i in range(len(run.paths))]
    if row_labels is None:
        row_labels = [f"{Path(p).name}: {run.label(int(t))}" for p, t in zip(run.paths, run.target.tolist())]
    grid_path = grid(rows, row_labels=row_labels, col_labels=["input", *(m.replace("_", " ") for m in pictures)],
                     title=f"{run.loaded.name}: explained class per input").save(out / grid_name)
    arrays = {name: _numpy(exp.attributions) for name, exp in run.explanations.items()}
    arrays |= {"targets": run.target.cpu().numpy(), "outputs": run.outputs.float().cpu().numpy(),
               "inputs": run.x.detach().float().cpu().numpy(), "paths": np.array(run.paths, dtype=str)}
    npz = out / "attributions.npz"
    np.savez_compressed(npz, **arrays)
    manifest = {
        "model": run.loaded.name, "kind": run.loaded.kind, "device": run.loaded.device, "inputs": run.paths,
        "targets": run.target.tolist(), "target_labels": [run.label(int(t)) for t in run.target.tolist()],
        "methods": {name: {"seconds": round(run.seconds[name], 4), "options": _jsonable(exp.options)}
                    for name, exp in run.explanations.items()},
        "skipped": run.skipped, "failed": run.failed, "notes": list(run.loaded.notes),
        "files": {"grid": str(grid_path), "attributions": str(npz), "heatmaps": str(heat_dir)},
    }
    (out / "explain.json").write_text(json.dumps(manifest, indent=2))
    return {"grid": str(grid_path), "npz": str(npz), "heatmaps": written, "heatmap_dir": str(heat_dir),
            "manifest": str(out / "explain.json")}


def _numpy(a: Any) -> Any:
    if isinstance(a, tuple):
        a = a[0]
    return a.detach().float().cpu().numpy()


def _jsonable(options: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in options.items():
        if isinstance(v, (int, float, str, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(i, (int, float, str, bool)) for i in v):
            out[k] = list(v)
        else:
            out[k] = type(v).__name__ if not isinstance(v, Tensor) else f"Tensor{list(v.shape)}"
    return out


def summary_table(run: ExplainRun) -> Any:
    from rich.table import Table
    table = Table(title=f"{run.loaded.name} — {len(run.paths)} input(s)", title_justify="left")
    table.add_column("method")
    table.add_column("time (s)", justify="right")
    table.add_column("status")
    for name, s in run.seconds.items():
        delta = run.explanations[name].delta
        status = "ok" if delta is None else f"ok, max |completeness error| {float(delta.abs().max()):.2e}"
        table.add_row(name, f"{s:.2f}", status)
    for name, why in run.skipped.items():
        table.add_row(name, "", f"skipped: {why}")
    for name, err in run.failed.items():
        table.add_row(name, "", f"[red]FAILED[/red]: {err[:160]}")
    return table


def print_table(renderable: Any) -> None:
    from rich.console import Console
    Console(soft_wrap=False, width=max(100, min(200, os.get_terminal_size().columns if _isatty() else 160))).print(
        renderable)


def _isatty() -> bool:
    try:
        return os.isatty(1)
    except (ValueError, OSError):  # pragma: no cover
        return False


def prepare_run(ctx: click.Context, *, model_spec: str, weights: str | None, preprocess: Sequence[str],
                inputs: Sequence[str], methods: Sequence[str], options: Sequence[str], target: str | None,
                layer: str | None, device: str | None, batch_size: int | None, seed: int | None,
                extra_option_keys: Sequence[str] = ()) -> tuple[Settings, Any, list[str], Tensor, MethodPlan,
                                                                int | None]:
    """Everything that can fail as a usage/input error, checked before any method runs."""
    cfg = settings(ctx, device, batch_size, seed)
    torch.manual_seed(cfg.seed)
    plan = plan_methods(methods, options, layer=layer, seed=cfg.seed, batch_size=cfg.batch_size,
                        extra_keys=extra_option_keys)
    loaded, paths, x = load(model_spec, weights, preprocess, inputs, cfg.device)
    check_layer(loaded.model, layer)
    with torch.no_grad():
        n_classes = int(loaded.model(x[:1]).shape[-1])
    return cfg, loaded, paths, x, plan, resolve_target(target, loaded.labels, n_classes)


def explain_options(f: Any) -> Any:
    f = click.option("--layer", default=None, help="Layer (dotted module name) for the methods that take one, "
                                                   "e.g. layer4 or features.6.")(f)
    f = click.option("--target", default=None, help="Class to explain (index or class name; default: each input's "
                                                    "top class).")(f)
    f = click.option("--option", "options", multiple=True, metavar="METHOD.KEY=VALUE",
                     help="A method option, value parsed as JSON: --option ig.n_steps=32.")(f)
    f = click.option("--method", "methods", multiple=True, metavar="NAME",
                     help="Method name (repeatable); 'all' = every method that can run with defaults.")(f)
    f = click.option("--input", "inputs", multiple=True, metavar="PATH",
                     help="Image file or folder of images (repeatable).")(f)
    return f


@click.command("explain")
@model_options
@explain_options
@click.option("--out", default="propex-explain", show_default=True, type=click.Path(file_okay=False),
              help="Output folder.")
@run_options
@click.pass_context
def explain_cmd(ctx: click.Context, model_spec: str, weights: str | None, preprocess: tuple[str, ...],
                inputs: tuple[str, ...], methods: tuple[str, ...], options: tuple[str, ...], target: str | None,
                layer: str | None, out: str, device: str | None, batch_size: int | None, seed: int | None) -> int:
    """Explain images: one PNG heatmap per input and method, grid.png and attributions.npz.

    \b
    propex explain --model demo --input digits/ --method saliency --method ig --out out/
    propex explain --model resnet18 --weights r18.pth --input cat.jpg --method all --out out/
    """
    cfg, loaded, paths, x, plan, tgt = prepare_run(
        ctx, model_spec=model_spec, weights=weights, preprocess=preprocess, inputs=inputs, methods=methods,
        options=options, target=target, layer=layer, device=device, batch_size=batch_size, seed=seed)
    for note in [*loaded.notes, *plan.notes]:
        echo(f"note: {note}", err=True)
    echo(f"explaining {len(paths)} input(s) with {len(plan.names)} method(s) on {loaded.name} ({loaded.device})")
    run = compute(loaded, paths, x, plan, tgt, Progress(cfg.progress))
    files = write_outputs(run, out)
    print_table(summary_table(run))
    echo(f"wrote {len(files['heatmaps'])} heatmaps to {files['heatmap_dir']}/, the grid {files['grid']}, "
         f"attributions {files['npz']} and {files['manifest']}")
    return report_status(run)


def report_status(run: ExplainRun) -> int:
    if run.skipped:
        echo(f"skipped: {', '.join(run.skipped)} (see the table)")
    if run.failed:
        echo(f"error: {len(run.failed)} method(s) failed: {', '.join(run.failed)} (see the table; the others were "
             "written)", err=True)
        return EXIT_FAILED
    return EXIT_OK

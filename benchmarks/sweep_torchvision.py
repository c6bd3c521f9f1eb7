"""Sweep DeepLIFT and LRP over every classification architecture in ``torchvision.models``.

Run from the repository root (results and discussion: ``docs/zoo.md``)::

    python benchmarks/sweep_torchvision.py                       # every architecture up to 60M parameters
    python benchmarks/sweep_torchvision.py --only resnet18 swin_t
    python benchmarks/sweep_torchvision.py --max-params 1e12 --json sweep.json   # all of them
    python benchmarks/sweep_torchvision.py --with-references     # also Captum DeepLift/LRP and Zennit (slower)

Every architecture of ``torchvision.models.list_models(module=torchvision.models)`` (the
classification models; detection, segmentation, video and optical-flow models live in
submodules) is built with random weights (``weights=None``, ``torch.manual_seed(0)``;
``inception_v3``/``googlenet`` with ``aux_logits=False, init_weights=False``) in eval mode, and
with random BatchNorm statistics (``--bn random``, the default, as the test suite does; a fresh
BatchNorm is the identity, which hides canonization and reference bugs). Nothing is
downloaded. Its input is the smallest square size from ``CANDIDATE_SIZES`` (plus the minimum
size torchvision's weight metadata declares) for which a plain forward pass succeeds; batch 1,
a standard-normal image with a fixed seed; the explained output is the top class of that image.

Each method is classified as

* ``exact``   -- DeepLIFT: summation-to-delta, ``|delta| / |f(x) - f(0)| < 1e-3``;
                 LRP (``composite="epsilon_plus", ignore_bias=True``): conservation,
                 ``|delta| / |f(x)| < 1e-3``;
* ``refused`` -- ``propex.propagation.UnsupportedOpError``, naming the op and its module (for a
                 refused architecture one more pass with ``unknown_ops="warn"`` lists every op
                 without a rule);
* ``error``   -- any other exception: a crash, i.e. a propex bug (counted separately);
* ``wrong``   -- it returned, but the error is >= 1e-3 (or not finite), also in float64: a propex bug;
* ``precision-limited`` -- >= 1e-3 in float32, but in float64 exact or within float64 rounding
                 of the output (``|delta| <= 1e-12 max(|f(x)|, |f(0)|)``): the network's output hardly
                 depends on its input (``Δf/f`` is printed), so float rounding, not a rule, is at fault.

``--with-references`` classifies Captum's ``DeepLift`` and ``LRP`` (default rules;
``return_convergence_delta=True``) and Zennit's ``EpsilonPlus`` composite
(``zero_params="bias"``, no canonizers, ``zennit.attribution.Gradient`` seeded with
``f_y(x)`` at the target) the same way, with ``raised`` for any exception.

Architectures above ``--max-params`` (default 60e6, the size of the reference measurement)
are skipped before being built (the count comes from torchvision's weight metadata, which
needs no download) and listed at the end; so is anything that fails to build, accepts none
of the sizes, or runs past ``--model-timeout``. The sha256 of ``src/propex`` is printed (and
stored with ``--json``) so that a table can be tied to the code it measured.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import re
import signal
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

import propex
from propex.models.random_init import randomize_batch_norm
from propex.propagation import UnsupportedOpError

CANDIDATE_SIZES = (32, 64, 96, 128, 160, 224, 256, 299, 384, 518)
TOLERANCE = 1e-3
METHODS = ("deeplift", "lrp")
REFERENCES = ("captum_deeplift", "captum_lrp", "zennit_lrp")
#: |delta| below this times max(|f(x)|, |f(0)|) is rounding of the output itself in float64
FLOAT64_FLOOR = 1e-12
# precision-limited: not exact in the run's dtype, but in float64 either exact or off by no more than
# the rounding of the output (the input's effect |f(x) - f(0)| is itself at the rounding floor)
CATEGORIES = ("exact", "precision-limited", "refused", "wrong", "error", "raised")


# --------------------------------------------------------------------------- results
@dataclass
class Outcome:
    """How one method did on one architecture."""

    category: str                # one of CATEGORIES (references: raised instead of refused/error)
    error: float | None = None   # relative summation-to-delta / conservation error
    error64: float | None = None  # the same in float64, for a float32 result that was not exact
    delta: float | None = None    # the completeness delta itself (absolute)
    signal: float | None = None   # |f(x) - f(0)| / max(|f(x)|, |f(0)|) (DeepLIFT) or 1 (LRP), in float64 if rechecked
    floor: bool = False           # |delta| <= FLOAT64_FLOOR * max(|f(x)|, |f(0)|) in float64
    message: str = ""            # first line of the exception (refused/error)
    op: str = ""                 # refused: the op (and reason) that was refused, for grouping
    module: str = ""             # refused: the module it ran in
    also: list[str] = field(default_factory=list)  # refused: every op without a rule in one pass (unknown_ops="warn")
    seconds: float = 0.0

    def cell(self) -> str:
        if self.category in ("exact", "wrong", "precision-limited"):
            extra = f"; float64: {_fmt(self.error64)}" if self.error64 is not None else ""
            if self.category == "precision-limited" and self.signal is not None and self.signal < 1e-3:
                extra += f"; Δf/f = {_fmt(self.signal)}"
            return f"{self.category} ({_fmt(self.error)}{extra})"
        if self.category == "refused":
            return f"refused: `{self.op}`" + (f" in `{self.module}`" if self.module else "")
        message = re.sub(r"<class '(?:[\w.]*\.)?(\w+)'>", r"\1", self.message)   # "<class 'torch...SiLU'>" -> SiLU
        return f"{self.category}: {_short(message, 100)}"


@dataclass
class Row:
    """One architecture."""

    name: str
    params_m: float | None = None
    size: int | None = None
    status: str = "run"          # run | skipped
    reason: str = ""             # why it was skipped
    target: int | None = None
    fx: float | None = None      # f_target(x)
    f0: float | None = None      # f_target(0), DeepLIFT's reference
    results: dict[str, Outcome] = field(default_factory=dict)
    seconds: float = 0.0


def _fmt(err: float | None) -> str:
    if err is None:
        return "-"
    if not math.isfinite(err):
        return str(err)
    return f"{err:.1e}"


def _short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


_NO_RULE = re.compile(r"has no rule for op (?P<op>\S+)(?: in module '(?P<module>[^']*)' \((?P<type>[^)]*)\))?")
_LRP_OP = re.compile(r"^(?P<who>\w+): (?P<op>\S+)(?: in module '(?P<module>[^']*)' \((?P<type>[^)]*)\))? (?P<why>.*)")


def refusal(exc: UnsupportedOpError) -> tuple[str, str]:
    """(op, module) named by an UnsupportedOpError; the op carries the reason when it is not 'no rule'."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    m = _NO_RULE.search(text)
    if m:
        module = m["module"] or ""
        return m["op"], f"{module} ({m['type']})" if module else ""
    m = _LRP_OP.match(text)
    if m:
        why = m["why"]
        if "weights that depend on the input" in why:
            op = f"{m['op']} with input-dependent weights"
        elif "divides by a tensor" in why:
            op = f"{m['op']} dividing by an input-dependent tensor"
        elif "training mode" in why:
            op = f"{m['op']} in training mode"
        else:
            op = f"{m['op']} ({_short(why, 60)})"
        module = m["module"] or ""
        return op, f"{module} ({m['type']})" if module else ""
    return _short(text, 80), ""


# --------------------------------------------------------------------------- architectures
def classification_models() -> list[str]:
    import torchvision
    return list(torchvision.models.list_models(module=torchvision.models))


def build_kwargs(name: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"weights": None}
    if name in ("inception_v3", "googlenet"):
        kwargs.update(aux_logits=False, init_weights=False)
    return kwargs


def build(name: str, dtype: torch.dtype, bn: str = "random") -> torch.nn.Module:
    import torchvision
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, **build_kwargs(name)).to(dtype).eval()
    if bn == "random":
        randomize_batch_norm(model, seed=1)
    return model




def metadata(name: str) -> tuple[float | None, int | None]:
    """(parameter count, minimum input size) from torchvision's weight metadata (nothing downloaded)."""
    import torchvision
    try:
        weights = list(torchvision.models.get_model_weights(name))
    except Exception:  # noqa: BLE001 - no weights enum: decide after building
        return None, None
    if not weights:
        return None, None
    meta = weights[0].meta
    params = meta.get("num_params")
    min_size = meta.get("min_size")
    return (float(params) if params is not None else None,
            int(max(min_size)) if min_size is not None else None)


def smallest_size(model: torch.nn.Module, dtype: torch.dtype, min_size: int | None) -> tuple[int | None, str]:
    """The smallest candidate size a plain forward pass accepts (and the last error if none does)."""
    sizes = sorted(set(CANDIDATE_SIZES) | ({min_size} if min_size and min_size >= CANDIDATE_SIZES[0] else set()))
    last = ""
    for s in sizes:
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = model(torch.zeros(1, 3, s, s, dtype=dtype))
            if isinstance(out, torch.Tensor) and out.dim() == 2:
                return s, ""
            last = f"output of type {type(out).__name__}"
        except Exception as exc:  # noqa: BLE001 - any failure means: not this size
            last = first_line(exc)
    return None, last


def make_input(size: int, dtype: torch.dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(1, 3, size, size, generator=gen).to(dtype)


# --------------------------------------------------------------------------- timeouts
class ModelTimeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise ModelTimeout("ran past --model-timeout")


# --------------------------------------------------------------------------- the methods
def relative(delta: float, scale: float) -> float:
    return abs(delta) / max(abs(scale), 1e-30)


def forward_values(model: torch.nn.Module, x: torch.Tensor, target: int) -> tuple[float, float]:
    """f_target(x) and f_target(0) by a plain forward pass."""
    with torch.no_grad():
        return float(model(x)[0, target]), float(model(torch.zeros_like(x))[0, target])


def measure(key: str, model: torch.nn.Module, x: torch.Tensor, target: int) -> Outcome:
    """Run one method (propex or a reference) on ``model`` and classify it."""
    fx, f0 = forward_values(model, x, target)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            delta, scale, attr = _attribute(key, model, x, target, fx)
        finite = bool(torch.isfinite(attr).all()) and math.isfinite(delta)
        del attr
    except UnsupportedOpError as exc:
        op, module = refusal(exc)
        return Outcome("refused", message=first_line(exc), op=op, module=module,
                       seconds=time.perf_counter() - t0)
    except ModelTimeout:
        raise
    except Exception as exc:  # noqa: BLE001 - a crash is a finding
        category = "error" if key in METHODS else "raised"
        message = (f"{_where(exc)}: " if key in METHODS else "") + first_line(exc)
        return Outcome(category, message=message, seconds=time.perf_counter() - t0)
    err = relative(delta, fx - f0 if scale == "delta" else fx)
    exact = finite and err < TOLERANCE
    big = max(abs(fx), abs(f0)) if scale == "delta" else abs(fx)
    signal = abs(fx - f0) / max(big, 1e-300) if scale == "delta" else 1.0
    floor = finite and x.dtype == torch.float64 and abs(delta) <= FLOAT64_FLOOR * big
    category = "exact" if exact else ("precision-limited" if floor else "wrong")
    return Outcome(category, error=err if finite else float("nan"), delta=delta, signal=signal, floor=floor,
                   seconds=time.perf_counter() - t0)


def _attribute(key: str, model: torch.nn.Module, x: torch.Tensor, target: int,
               fx: float) -> tuple[float, str, torch.Tensor]:
    """(completeness delta, what it is relative to: 'delta' = f(x) - f(0) or 'value' = f(x), attributions)."""
    if key == "deeplift":
        exp = propex.explain(model, x, "deeplift", target=target)
        return float(exp.delta.reshape(-1)[0]), "delta", exp.attributions
    if key == "lrp":
        exp = propex.explain(model, x, "lrp", target=target, composite="epsilon_plus", ignore_bias=True)
        return float(exp.delta.reshape(-1)[0]), "value", exp.attributions
    if key == "captum_deeplift":
        from captum.attr import DeepLift as CaptumDeepLift
        attr, delta = CaptumDeepLift(model).attribute(x.clone(), baselines=torch.zeros_like(x), target=target,
                                                      return_convergence_delta=True)
        return float(delta.reshape(-1)[0]), "delta", attr
    if key == "captum_lrp":
        from captum.attr import LRP as CaptumLRP
        attr, delta = CaptumLRP(model).attribute(x.clone(), target=target, return_convergence_delta=True)
        return float(delta.reshape(-1)[0]), "value", attr
    if key == "zennit_lrp":
        from zennit.attribution import Gradient as ZennitGradient
        from zennit.composites import EpsilonPlus
        with ZennitGradient(model=model, composite=EpsilonPlus(zero_params="bias")) as attributor:
            seed = torch.zeros(1, int(model(x).shape[1]), dtype=x.dtype)
            seed[0, target] = fx                      # relevance at the output = its value, as propex
            _, attr = attributor(x.clone(), seed)
        return float(attr.sum()) - fx, "value", attr
    raise ValueError(key)


def unsupported_ops(key: str, model: torch.nn.Module, x: torch.Tensor, target: int) -> list[str]:
    """Every op the method has no rule for, in order: one pass with ``unknown_ops="warn"`` (the plain
    gradient stands in for each), stopping at an op that is refused even then."""
    found: list[str] = []

    def add(op: str) -> None:
        if op not in found:
            found.append(op)
    options = {"composite": "epsilon_plus", "ignore_bias": True} if key == "lrp" else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            propex.explain(model, x, key, target=target, unknown_ops="warn", **options)
        except UnsupportedOpError as exc:
            add(refusal(exc)[0] + " (refused even with unknown_ops='warn')")
        except Exception as exc:  # noqa: BLE001 - the gradient fallback may not get further
            add(f"then {type(exc).__name__}: {_short(str(exc), 80)}")
    for w in caught:
        m = _NO_RULE.search(str(w.message))
        if m:
            add(m["op"])
    ordered = [op for op in found if not op.startswith("then ")] + [op for op in found if op.startswith("then ")]
    return ordered


def _where(exc: BaseException) -> str:
    """The innermost propex frame of a traceback (file:line), for the crash report."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "propex" in f.filename]
    frame = frames[-1] if frames else (traceback.extract_tb(exc.__traceback__) or [None])[-1]
    if frame is None:
        return "?"
    return f"{os.path.basename(frame.filename)}:{frame.lineno} ({frame.name})"


def fresh(name: str, dtype: torch.dtype, bn: str) -> torch.nn.Module:
    """A new copy of the model (the references attach state to modules), parameters frozen."""
    model = build(name, dtype, bn)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def recheck_float64(key: str, outcome: Outcome, name: str, bn: str, x: torch.Tensor, target: int) -> Outcome:
    """A float32 'wrong' that is exact in float64, or off by no more than float64 rounding of the
    output, is a matter of precision, not of a rule: say so."""
    model = fresh(name, torch.float64, bn)
    try:
        again = measure(key, model, x.double(), target)
    finally:
        del model
    outcome.error64, outcome.signal, outcome.floor = again.error, again.signal, again.floor
    if again.category in ("exact", "precision-limited"):
        outcome.category = "precision-limited"
    return outcome


# --------------------------------------------------------------------------- the sweep
def sweep_one(name: str, args: argparse.Namespace, dtype: torch.dtype, keys: list[str]) -> Row:
    row = Row(name)
    params, min_size = metadata(name)
    if params is not None and params > args.max_params:
        row.params_m, row.status, row.reason = params / 1e6, "skipped", f"{params / 1e6:.1f}M parameters > --max-params"
        return row
    t0 = time.perf_counter()
    model = None
    try:
        if args.model_timeout:
            signal.alarm(int(args.model_timeout))
        try:
            model = build(name, dtype, args.bn)
        except Exception as exc:  # noqa: BLE001
            row.status, row.reason = "skipped", f"build failed: {first_line(exc)}"
            return row
        row.params_m = sum(p.numel() for p in model.parameters()) / 1e6
        if row.params_m * 1e6 > args.max_params:
            row.status, row.reason = "skipped", f"{row.params_m:.1f}M parameters > --max-params"
            return row
        size, why = smallest_size(model, dtype, min_size)
        if size is None:
            row.status, row.reason = "skipped", f"no candidate input size accepted ({why})"
            return row
        row.size = size
        x = make_input(size, dtype)
        with torch.no_grad():
            row.target = int(model(x).argmax(dim=1)[0])
        row.fx, row.f0 = forward_values(model, x, row.target)
        for key in keys:
            if key in METHODS:
                outcome = measure(key, model, x, row.target)
            else:
                ref_model = fresh(name, dtype, args.bn)
                outcome = measure(key, ref_model, x, row.target)
                del ref_model
            if outcome.category == "wrong" and dtype == torch.float32 and args.recheck:
                outcome = recheck_float64(key, outcome, name, args.bn, x, row.target)
            if outcome.category == "refused" and key in METHODS:
                outcome.also = unsupported_ops(key, model, x, row.target)
            row.results[key] = outcome
    except ModelTimeout:
        row.status, row.reason = "skipped", f"ran past --model-timeout={args.model_timeout:g}s"
    finally:
        signal.alarm(0)
        row.seconds = time.perf_counter() - t0
        del model
        gc.collect()
    return row


def progress_line(row: Row, i: int, n: int) -> str:
    head = f"[{i}/{n}] {row.name:<20}"
    if row.status == "skipped":
        return f"{head} skipped: {row.reason}"
    cells = "  ".join(f"{k}={v.cell()}" for k, v in row.results.items())
    return f"{head} {row.params_m:6.1f}M  {row.size}px  {cells}  ({row.seconds:.1f}s)"


def totals(rows: list[Row], key: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        if row.status == "run" and key in row.results:
            cat = row.results[key].category
            counts[cat] = counts.get(cat, 0) + 1
    return counts


LABELS = {"deeplift": "propex DeepLIFT", "lrp": "propex LRP (epsilon_plus, no bias)",
          "captum_deeplift": "Captum DeepLift", "captum_lrp": "Captum LRP",
          "zennit_lrp": "Zennit EpsilonPlus (no canonizers)"}


def markdown_table(rows: list[Row], keys: list[str]) -> str:
    head = ["architecture", "params (M)", "input"] + [LABELS[k] for k in keys] + ["propex time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        if row.status != "run":
            continue
        cells = [f"`{row.name}`", f"{row.params_m:.1f}", f"{row.size}"]
        cells += [row.results[k].cell() if k in row.results else "-" for k in keys]
        cells.append(f"{sum(row.results[k].seconds for k in METHODS if k in row.results):.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(rows: list[Row], keys: list[str]) -> str:
    ran = [r for r in rows if r.status == "run"]
    out = [f"{len(ran)} architectures run"]
    for key in keys:
        c = totals(rows, key)
        parts = [f"{c[cat]} {cat}" for cat in CATEGORIES if c.get(cat)]
        line = f"  {LABELS[key]}: " + ", ".join(parts)
        if c.get("precision-limited"):
            raw = c.get("wrong", 0) + c["precision-limited"]
            line += f"  (float32 alone: {c.get('exact', 0)} exact, {raw} wrong)"
        out.append(line)
    return "\n".join(out)


def refusals(rows: list[Row], keys: list[str], every: bool = False) -> str:
    """Refusals grouped by the op refused first (``every``: by every op without a rule)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        for key in keys:
            o = row.results.get(key)
            if o is not None and o.category == "refused":
                for op in (o.also or [o.op]) if every else [o.op]:
                    groups.setdefault((key, op), []).append(row.name)
    lines = []
    for (key, op), names in sorted(groups.items(), key=lambda kv: (kv[0][0], -len(kv[1]), kv[0][1])):
        lines.append(f"  {LABELS[key]}: {op}: {', '.join(names)}")
    return "\n".join(lines)


def source_fingerprint() -> str:
    """sha256 over propex's source files (path and content): which version of the code was measured."""
    import hashlib
    root = os.path.dirname(os.path.abspath(propex.__file__))
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for fn in sorted(filenames):
            if fn.endswith(".py"):
                path = os.path.join(dirpath, fn)
                h.update(os.path.relpath(path, root).encode())
                with open(path, "rb") as fh:
                    h.update(fh.read())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-params", type=float, default=60e6,
                        help="skip architectures with more parameters (default 60e6)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these architectures")
    parser.add_argument("--json", metavar="PATH", help="write every result to this JSON file")
    parser.add_argument("--markdown", metavar="PATH", help="write the table, totals and refusals as Markdown")
    parser.add_argument("--with-references", action="store_true",
                        help="also run Captum DeepLift/LRP and Zennit EpsilonPlus (slow)")
    parser.add_argument("--bn", choices=("random", "init"), default="random",
                        help="BatchNorm statistics: random (default, as the test suite) or torchvision's initial identity")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--no-recheck", dest="recheck", action="store_false",
                        help="float32: do not re-run results that are not exact in float64")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: small tensors on a shared machine)")
    parser.add_argument("--model-timeout", type=float, default=900,
                        help="seconds per architecture before it is skipped as too slow (0: no limit)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    names = classification_models()
    if args.only:
        unknown = [n for n in args.only if n not in names]
        if unknown:
            parser.error(f"--only: not torchvision classification models: {', '.join(unknown)}")
        names = [n for n in names if n in args.only]
    keys = list(METHODS) + (list(REFERENCES) if args.with_references else [])
    import torchvision
    fingerprint = source_fingerprint()
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, propex {propex.__version__} "
          f"(src/propex sha256 {fingerprint[:12]}), {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.threads} thread(s), {args.dtype}, BatchNorm {args.bn}; {len(names)} architectures; "
          f"max params {args.max_params / 1e6:g}M", flush=True)
    if args.model_timeout:
        signal.signal(signal.SIGALRM, _alarm)

    rows: list[Row] = []
    t_start = time.perf_counter()
    for i, name in enumerate(names, 1):
        row = sweep_one(name, args, dtype, keys)
        rows.append(row)
        print(progress_line(row, i, len(names)), flush=True)
    elapsed = time.perf_counter() - t_start

    table = markdown_table(rows, keys)
    skipped = [r for r in rows if r.status == "skipped"]
    skipped_text = "\n".join(f"  {r.name}: {r.reason}" for r in skipped) or "  (none)"
    print()
    print(table)
    print()
    print(summary(rows, keys))
    print(f"skipped {len(skipped)}:\n{skipped_text}")
    print(f"refusals by the op refused first:\n{refusals(rows, keys) or '  (none)'}")
    print(f"every op without a rule in the refused architectures (one pass with unknown_ops='warn'):\n"
          f"{refusals(rows, keys, every=True) or '  (none)'}")
    bugs = [(r.name, k, o) for r in rows for k, o in r.results.items()
            if k in METHODS and o.category in ("wrong", "error")]
    print(f"propex wrong/error (bugs): {len(bugs)}")
    for name, key, o in bugs:
        print(f"  {name} {key}: {o.cell()}")
    print(f"total time {elapsed / 60:.1f} min")

    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(table + "\n\n```\n" + summary(rows, keys) + f"\nskipped {len(skipped)}:\n{skipped_text}\n"
                     f"refusals by the op refused first:\n{refusals(rows, keys) or '  (none)'}\n"
                     f"every op without a rule:\n{refusals(rows, keys, every=True) or '  (none)'}\n```\n")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"torch": torch.__version__, "torchvision": torchvision.__version__, "dtype": args.dtype, "bn": args.bn,
                       "threads": args.threads, "propex_src_sha256": fingerprint, "max_params": args.max_params, "tolerance": TOLERANCE,
                       "seconds": elapsed, "rows": [asdict(r) for r in rows]}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

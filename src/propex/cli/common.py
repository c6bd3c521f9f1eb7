"""What the commands share: exit codes, the one-line error, option parsing, method selection, progress."""
from __future__ import annotations

import contextlib
import difflib
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import click

EXIT_OK = 0
EXIT_FAILED = 1       # a method or metric failed on some input (the other results are still written)
EXIT_USAGE = 2        # a usage or input error: nothing was computed
EXIT_INTERRUPTED = 130

# methods that need an option no default can stand in for: (option, how to give it)
NEEDS_OPTION = {
    "pattern_attribution": ("patterns", "fit them with propex.propagation.fit_patterns(model, data).save(FILE) and "
                                        "pass --option pattern_attribution.patterns=FILE"),
    "expected_gradients": ("baseline", "reference samples: use 'inputs' for the given images, "
                                       "--option expected_gradients.baseline=inputs"),
}
# the families whose methods give one input-shaped map per sample: what '--method all' runs
IMAGE_FAMILIES = ("gradient", "propagation", "cam", "perturbation")


class InputError(click.ClickException):
    """A usage or input error (exit 2): one line, what was wrong and what to do."""

    exit_code = EXIT_USAGE


@dataclass
class Settings:
    """The global options (``propex --device cuda --seed 1 COMMAND``), overridable per command."""

    debug: bool = False
    device: str = "cpu"
    batch_size: int | None = None
    seed: int = 0
    progress: bool | None = None          # None: only on a terminal

    def merged(self, device: str | None, batch_size: int | None, seed: int | None) -> "Settings":
        return Settings(self.debug, device or self.device, batch_size if batch_size is not None else self.batch_size,
                        seed if seed is not None else self.seed, self.progress)


def settings(ctx: click.Context, device: str | None = None, batch_size: int | None = None,
             seed: int | None = None) -> Settings:
    base = ctx.find_object(Settings) or Settings()
    return base.merged(device, batch_size, seed)


def run_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--device``, ``--batch-size``, ``--seed`` on a command (each overrides the global option)."""
    f = click.option("--seed", type=int, default=None, help="Random seed of the methods (default: global --seed, 0).")(f)
    f = click.option("--batch-size", type=click.IntRange(min=1), default=None,
                     help="Rows per model call inside the methods (default: chosen from a memory budget).")(f)
    f = click.option("--device", default=None, help="torch device: cpu, cuda, cuda:1, mps (default: global --device).")(f)
    return f


def model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--model``, ``--weights``, ``--preprocess`` (repeatable key=value)."""
    f = click.option("--preprocess", "preprocess", multiple=True, metavar="KEY=VALUE",
                     help="Override the preprocessing: size=H[,W], resize=N, mean=..., std=..., grayscale=true.")(f)
    f = click.option("--weights", default=None, metavar="FILE",
                     help="State dict for demo / a torchvision name / module:factory (never downloaded).")(f)
    f = click.option("--model", "model_spec", default="demo", show_default=True, metavar="SPEC",
                     help="demo | a torchvision name (resnet18) | a TorchScript .pt or torch.export .pt2 file | "
                          "module:factory.")(f)
    return f


def one_line(text: Any) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- --option parsing

def parse_value(text: str) -> Any:
    """A JSON value (numbers, true/false, null, lists, objects); anything else stays a string."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return tuple(value) if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value) else value


def parse_options(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["ig.n_steps=32", "occlusion.window=[4,4]"]`` -> ``{"ig": {"n_steps": 32}, "occlusion": {...}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        head, sep, value = item.partition("=")
        name, dot, key = head.partition(".")
        if not sep or not dot or not name.strip() or not key.strip():
            raise InputError(f"--option {item!r} is not NAME.KEY=VALUE: use e.g. --option ig.n_steps=32 "
                             "or --option occlusion.window=[4,4]")
        out.setdefault(name.strip(), {})[key.strip()] = parse_value(value.strip())
    return out


# --------------------------------------------------------------------------- methods

@dataclass
class MethodPlan:
    """The methods to run with their options, and those skipped (name -> why)."""

    names: list[str]
    options: dict[str, dict[str, Any]]
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    explicit: set[str] = field(default_factory=set)     # named by the user (not only via 'all')


def accepted_options(name: str) -> frozenset[str]:
    from ..api import get_method
    from ..base import _accepted_options
    return _accepted_options(get_method(name))


def resolve_method(name: str) -> str:
    """The canonical name of ``name``, or an InputError with the close matches (``propex.get_method``'s)."""
    from ..api import get_method
    try:
        return get_method(name).name
    except (ValueError, TypeError) as err:
        text = one_line(err).replace("method=", "--method ")
        raise InputError(text.split(" Available:")[0] + " Run 'propex methods' for the list.") from None


def plan_methods(requested: Sequence[str], option_items: Sequence[str], *, layer: str | None, seed: int,
                 batch_size: int | None, extra_keys: Sequence[str] = ()) -> MethodPlan:
    """Validate ``--method`` (``all`` = every method whose options can be defaulted) and ``--option``
    (keys checked against each method's options; ``extra_keys`` are other namespaces, e.g. metrics)."""
    from ..api import methods

    if not requested:
        raise InputError("no --method given: add e.g. --method saliency (or --method all; see 'propex methods')")
    names: list[str] = []
    explicit: set[str] = set()
    use_all = any(m.strip().lower() == "all" for m in requested)
    for m in requested:
        if m.strip().lower() == "all":
            continue
        canonical = resolve_method(m)
        explicit.add(canonical)
        if canonical not in names:
            names.append(canonical)
    all_skipped: dict[str, str] = {}
    if use_all:
        from ..api import get_method
        for n in methods():
            family = get_method(n).family
            if n in names:
                continue
            if family in IMAGE_FAMILIES:
                names.append(n)
            else:
                all_skipped[n] = f"not an input-attribution method (family {family}); name it to run it"
    parsed = parse_options(option_items)
    options: dict[str, dict[str, Any]] = {}
    for key, opts in parsed.items():
        if key in extra_keys:
            continue
        canonical = resolve_method(key)
        if canonical not in names:
            raise InputError(f"--option {key}.…: method {canonical!r} is not among the --method values; "
                             f"add --method {canonical} or drop the option")
        accepted = accepted_options(canonical)
        for k in opts:
            if k not in accepted:
                close = difflib.get_close_matches(k, sorted(accepted), n=2, cutoff=0.6)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                raise InputError(f"--option {key}.{k}: {canonical} has no option {k!r}.{hint} "
                                 f"Its options: {', '.join(sorted(accepted))}")
        options.setdefault(canonical, {}).update(opts)
    plan = MethodPlan([], {}, skipped=all_skipped, explicit=explicit)
    for name in names:
        opts = dict(options.get(name, {}))
        need = NEEDS_OPTION.get(name)
        if need and need[0] not in opts:
            if name in explicit:
                raise InputError(f"--method {name} needs --option {name}.{need[0]}=…: {need[1]}")
            plan.skipped[name] = f"needs --option {name}.{need[0]}=… ({need[1]})"
            continue
        accepted = accepted_options(name)
        if layer is not None:
            if "layer" in accepted:
                opts.setdefault("layer", layer)
            elif name in explicit:
                plan.notes.append(f"{name} takes no layer: --layer ignored for it")
        if "seed" in accepted:
            opts.setdefault("seed", seed)
        if batch_size is not None and "batch_size" in accepted:
            opts.setdefault("batch_size", batch_size)
        plan.names.append(name)
        plan.options[name] = opts
    return plan


# --------------------------------------------------------------------------- progress

class Progress:
    """A rich progress bar on stderr (only on a terminal, or when forced); a no-op otherwise."""

    def __init__(self, enabled: bool | None = None):
        self._bar: Any = None
        if enabled is None:
            enabled = sys.stderr.isatty()
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress
            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), console=Console(stderr=True), transient=True)

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        """Yields ``advance(description=None, n=1)``: name the running step and/or count steps done."""
        if self._bar is None:
            yield lambda desc=None, n=1: None
            return
        with self._bar:
            tid = self._bar.add_task(description, total=total)

            def advance(desc: str | None = None, n: int = 1) -> None:
                self._bar.update(tid, advance=n, **({"description": desc} if desc else {}))
            yield advance


def echo(message: str = "", err: bool = False) -> None:
    click.echo(message, err=err)

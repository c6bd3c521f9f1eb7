"""What the web app offers: the methods with their main options, and the metrics.

The page builds its form from :func:`method_catalog` (served as JSON by ``/api/info``), and
the server checks what comes back with :func:`parse_method_options` before anything runs:
an unknown method or option, or a value out of range, is a 400 with a one-line message.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

from ..api import get_method, methods


@dataclass(frozen=True)
class Option:
    """One form field of a method: ``kind`` is ``"int"``, ``"float"`` or ``"choice"``."""

    name: str
    kind: str
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""


def _window(size: tuple[int, int]) -> int:
    """Default occlusion window: about 1/8 of the larger side of the input."""
    return max(1, -(-max(size) // 8))


def _options(name: str, size: tuple[int, int]) -> list[Option]:
    factory = _OPTIONS.get(name)
    return factory(tuple(size)) if factory is not None else []


def _lrp_presets() -> tuple[str, ...]:
    from ..propagation.composites import PRESETS
    return tuple(PRESETS)


# the main options of the methods whose result depends most on them; the other methods run
# with their defaults (plus a fixed seed where they draw random numbers)
_OPTIONS: dict[str, Callable[[tuple[int, int]], list[Option]]] = {
    "smoothgrad": lambda size: [Option("n_samples", "int", 25, 1, 1000, help="noisy copies averaged"),
                           Option("noise_level", "float", 0.15, 0.0, 1.0, help="σ / (max − min) of x")],
    "vargrad": lambda size: [Option("n_samples", "int", 25, 1, 1000, help="noisy copies"),
                        Option("noise_level", "float", 0.15, 0.0, 1.0, help="σ / (max − min) of x")],
    "integrated_gradients": lambda size: [Option("n_steps", "int", 32, 1, 1024, help="quadrature points on the path")],
    "expected_gradients": lambda size: [Option("n_samples", "int", 32, 1, 1024, help="reference × α draws")],
    "blur_ig": lambda size: [Option("n_steps", "int", 32, 1, 1024, help="points on the blur path"),
                        Option("max_sigma", "float", 8.0, 0.1, 100.0, help="largest blur σ (pixels)")],
    "guided_ig": lambda size: [Option("n_steps", "int", 32, 1, 1024, help="steps of the guided path")],
    "lrp": lambda size: [Option("composite", "choice", "epsilon_plus_flat", choices=_lrp_presets(),
                           help="rules per layer")],
    "occlusion": lambda size: [Option("window", "int", _window(size), 1, 4096, help="square occluded patch (pixels)"),
                               Option("stride", "int", max(1, _window(size) // 2), 1, 4096,
                                      help="step between patches (pixels)")],
    "rise": lambda size: [Option("n_masks", "int", 1000, 1, 20000, help="random masks")],
    "lime": lambda size: [Option("n_samples", "int", 500, 10, 20000, help="perturbed samples")],
    "kernel_shap": lambda size: [Option("n_samples", "int", 500, 10, 20000, help="coalitions")],
}

# methods that draw random numbers: a fixed seed keeps the app's results reproducible
_SEEDED = frozenset({"smoothgrad", "vargrad", "expected_gradients", "rise", "lime", "kernel_shap",
                     "meaningful_perturbation", "guided_ig", "integrated_gradients", "occlusion",
                     "feature_ablation"})
# methods pre-selected in the page
DEFAULT_METHODS = ("saliency", "integrated_gradients", "lrp", "gradcam")


@dataclass(frozen=True)
class Metric:
    """A metric the app can score each heatmap with (one number per method)."""

    name: str
    label: str
    better: str          # "higher" or "lower"
    help: str
    options: Mapping[str, Any] = field(default_factory=dict)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("deletion", "deletion AUC", "lower", "class probability as the most relevant pixels are removed",
           {"n_steps": 32}),
    Metric("insertion", "insertion AUC", "higher", "class probability as the most relevant pixels are inserted "
           "into a blurred copy", {"n_steps": 32}),
    Metric("sparseness", "sparseness", "higher", "Gini index of |attribution|"),
    Metric("complexity", "complexity", "lower", "entropy of the relevance distribution"),
)}
DEFAULT_METRICS = ("deletion", "insertion", "sparseness")


def method_catalog(input_size: tuple[int, int] = (224, 224)) -> list[dict[str, Any]]:
    """Every available method as ``{"name", "family", "summary", "options": [...], "default"}``;
    option defaults that depend on the image (the occlusion window) follow ``input_size`` (H, W)."""
    out = []
    for name in methods():
        cls = get_method(name)
        doc = (cls.__doc__ or "").strip().splitlines()
        options = [asdict(o) for o in _options(name, input_size)]
        out.append({"name": name, "family": cls.family, "summary": doc[0] if doc else "",
                    "options": options, "default": name in DEFAULT_METHODS})
    return out


def metric_catalog() -> list[dict[str, Any]]:
    """The metrics as ``{"name", "label", "better", "help", "default"}``."""
    return [{"name": m.name, "label": m.label, "better": m.better, "help": m.help,
             "default": m.name in DEFAULT_METRICS} for m in METRICS.values()]


def parse_metrics(names: list[str]) -> list[str]:
    """The requested metric names, checked (duplicates dropped, order kept)."""
    out = []
    for name in names:
        if name not in METRICS:
            raise ValueError(f"metric {name!r} is not offered; choose from {', '.join(METRICS)}")
        if name not in out:
            out.append(name)
    return out


def parse_method_options(selected: list[str], given: Mapping[str, Any],
                         input_size: tuple[int, int] = (224, 224)) -> dict[str, dict[str, Any]]:
    """``{canonical method name: explain options}`` for the selected methods.

    ``given`` maps method names to ``{option: value}`` as the form sent them (strings or
    numbers); values are converted to the option's type and checked against its range.
    """
    if not selected:
        raise ValueError("choose at least one method")
    if not isinstance(given, Mapping):
        raise ValueError(f"options must be a JSON object {{method: {{option: value}}}}, got {type(given).__name__}")
    out: dict[str, dict[str, Any]] = {}
    for raw in selected:
        name = get_method(raw).name          # ValueError with close matches for unknown names
        if name in out:
            continue
        spec = {o.name: o for o in _options(name, input_size)}
        values = given.get(raw, given.get(name, {})) or {}
        if not isinstance(values, Mapping):
            raise ValueError(f"options for {name} must be an object, got {values!r}")
        unknown = sorted(set(values) - set(spec))
        if unknown:
            raise ValueError(f"{name} has no option {unknown[0]!r} in the app; its options are: "
                             f"{', '.join(spec) or 'none'}")
        opts = {key: _convert(name, spec[key], values.get(key, spec[key].default)) for key in spec}
        if name == "occlusion" and opts["stride"] > opts["window"]:
            raise ValueError(f"occlusion.stride={opts['stride']} is larger than occlusion.window={opts['window']}; "
                             "use a stride <= the window")
        if name in _SEEDED:
            opts["seed"] = 0
        out[name] = opts
    return out


def _convert(method: str, option: Option, value: Any) -> Any:
    label = f"{method}.{option.name}"
    if option.kind == "choice":
        if value not in option.choices:
            raise ValueError(f"{label}={value!r} is not one of {', '.join(option.choices)}")
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{label} must be a number, got {value!r}") from None
    if option.kind == "int":
        if number != int(number):
            raise ValueError(f"{label} must be a whole number, got {value!r}")
        number = int(number)
    if (option.minimum is not None and number < option.minimum) or \
            (option.maximum is not None and number > option.maximum):
        raise ValueError(f"{label}={value!r} is out of range [{option.minimum}, {option.maximum}]")
    return number

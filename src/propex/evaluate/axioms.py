r"""The axiom checker: run an explanation method on small synthetic networks and check the axioms.

``propex.evaluate.axioms(method, **options)`` explains a fixed suite of tiny networks built in
code (weights set by hand, float64, one sample each, output ``[1, 1]``, target 0, reference
x' = 0) and reports for each axiom whether it held on every case of the suite, the measured
number, and a counterexample when it did not. The suite contains the seeds' examples
(1 − ReLU(1 − x) at x = 2; the pair N1(x) = ReLU(x1 − 1 − x2), N2(x) = ReLU(ReLU(x1 − 1) − x2)
at x = (3, 1); logistic regression on x1 + x2) and further pairs of functionally equivalent
networks (x vs ReLU(x) − ReLU(−x); a unit vs the same unit duplicated with output weights
2 and −1; a linear layer vs the same map split into two linear layers).

The axioms (Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017;
Shrikumar et al., "Learning Important Features Through Propagating Activation Differences",
ICML 2017). ``a = A(f, x, x')`` are the attributions of the method for network f at input x
(baseline x' = 0 wherever a method takes one; methods without a baseline are judged against
the zero input too). Each case compares an error ``err`` with a scale ``s``: "zero" and
"equal" mean ``err <= atol + rtol · s``, and the case's measured number is the relative error
``err / s``; an axiom holds when it holds on every case, and its ``value`` is the worst case's.

* **completeness**: :math:`\sum_i a_i = f(x) - f(x')`, on every network of the suite.
  ``err = |Σ_i a_i − (f(x) − f(x'))|``, ``s = |f(x) − f(x')|``.
* **sensitivity** (Sundararajan et al.'s sensitivity (a)): if x and x' differ in exactly one
  feature i and :math:`f(x) \ne f(x')`, then :math:`a_i \ne 0`. ``err = |a_i|``,
  ``s = |f(x) − f(x')|``; here the axiom needs ``err > atol + rtol · s`` (an attribution within
  the tolerance of 0 counts as 0) and ``value`` is the smallest ``|a_i| / s``.
* **implementation_invariance**: functionally equivalent networks f ≡ g (equal outputs for
  all inputs) get identical attributions, :math:`A(f, x, x') = A(g, x, x')`.
  ``err = max_i |a^f_i − a^g_i|``, ``s = max_i max(|a^f_i|, |a^g_i|)``. The points are away
  from the networks' kinks (where autograd's choice ReLU'(0) = 0 would differ between
  implementations for any method).
* **dummy** (sensitivity (b)): a feature i the function does not depend on mathematically
  gets :math:`a_i = 0`. ``err = |a_i|``, ``s = max_j |a_j|`` (the case's largest attribution).
* **linearity**: for h = α f + β g (the two networks side by side, combined by a final linear
  layer; α = 2, β = −0.5), :math:`A(h) = α A(f) + β A(g)`.
  ``err = max_i |a^h_i − (α a^f_i + β a^g_i)|``, ``s = max_i max(|a^h_i|, |α a^f_i + β a^g_i|)``.
* **symmetry** (symmetry preservation): if swapping x_i and x_j leaves f unchanged and
  :math:`x_i = x_j`, :math:`x'_i = x'_j`, then :math:`a_i = a_j`.
  ``err = |a_i − a_j|``, ``s = max(|a_i|, |a_j|)``.

Default tolerances ``rtol = 0.05`` and ``atol = 1e-6``. 5 % is Sundararajan et al.'s own
criterion for an integrated-gradients approximation (their section 5: 20 to 300 steps are
enough to approximate the integral within 5 %, checked by completeness); it absorbs the quadrature error of path methods
at a kink of a piecewise-linear network (integrated gradients with its default 50
Gauss–Legendre nodes is off by 4.1 % on ``relu_sum``, whose path crosses its kink at α = 2/3)
while every violation by a deterministic method on the suite is 20 % of the scale or more
(Monte-Carlo methods are judged by their estimate: expected gradients with 32 draws misses
completeness by 15.6 %). 1e-6 is far above float64 rounding and LRP's ε = 1e-6 stabiliser.
Methods with a ``seed`` option run with ``seed=0`` unless one is given; a
method's ``baseline`` option is set to the suite's zero reference (passing one is an error).

A case on which the method raises (e.g. Deconvnet on the sigmoid network, or a method that
needs spatial dimensions) is reported as skipped with the error; an axiom none of whose cases
ran has ``held=None``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from ._common import resolve_explainer

AXIOMS = ("completeness", "sensitivity", "implementation_invariance", "dummy", "linearity", "symmetry")
LINEARITY_ALPHA, LINEARITY_BETA = 2.0, -0.5


# --------------------------------------------------------------------------- the networks
def _linear(weight: Sequence[Sequence[float]], bias: Sequence[float] | None = None) -> nn.Linear:
    w = torch.tensor(weight, dtype=torch.float64)
    layer = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(w)
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias, dtype=torch.float64))
    return layer


def _seq(*layers: nn.Module) -> nn.Module:
    return nn.Sequential(*layers).eval()


class _N2(nn.Module):
    """N2(x) = ReLU(ReLU(x1 − 1) − x2): x2 skips the first ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = _linear([[1.0, 0.0]], [-1.0])
        self.relu1 = nn.ReLU()
        self.outer = _linear([[1.0, -1.0]])
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu1(self.inner(x))
        return self.relu2(self.outer(torch.cat([h, x[:, 1:2]], dim=1)))


@dataclass(frozen=True)
class _Net:
    name: str
    formula: str
    build: Callable[[], nn.Module]
    x: tuple[float, ...]


def _nets() -> dict[str, _Net]:
    relu = nn.ReLU
    a, b = LINEARITY_ALPHA, LINEARITY_BETA
    nets = [
        # sensitivity
        _Net("one_minus_relu", "1 - ReLU(1 - x)", lambda: _seq(_linear([[-1.0]], [1.0]), relu(),
                                                                _linear([[-1.0]], [1.0])), (2.0,)),
        _Net("saturated_sum", "1 - ReLU(1 - x1 - x2)", lambda: _seq(_linear([[-1.0, -1.0]], [1.0]), relu(),
                                                                     _linear([[-1.0]], [1.0])), (2.0, 0.0)),
        _Net("switched_off", "ReLU(1 - x)", lambda: _seq(_linear([[-1.0]], [1.0]), relu()), (2.0,)),
        # implementation invariance pairs
        _Net("n1", "ReLU(x1 - 1 - x2)", lambda: _seq(_linear([[1.0, -1.0]], [-1.0]), relu()), (3.0, 1.0)),
        _Net("n2", "ReLU(ReLU(x1 - 1) - x2)", _N2, (3.0, 1.0)),
        _Net("identity", "x", lambda: _seq(_linear([[1.0]])), (-2.0,)),
        _Net("relu_split", "ReLU(x) - ReLU(-x)", lambda: _seq(_linear([[1.0], [-1.0]]), relu(),
                                                               _linear([[1.0, -1.0]])), (-2.0,)),
        _Net("single_unit", "ReLU(x1 + x2)", lambda: _seq(_linear([[1.0, 1.0]]), relu(), _linear([[1.0]])),
             (1.0, 2.0)),
        _Net("duplicated_unit", "2 ReLU(x1 + x2) - ReLU(x1 + x2)",
             lambda: _seq(_linear([[1.0, 1.0], [1.0, 1.0]]), relu(), _linear([[2.0, -1.0]])), (1.0, 2.0)),
        _Net("split_layer", "ReLU((1, -2) . (x1 + x2, x2) - 1)",
             lambda: _seq(_linear([[1.0, 1.0], [0.0, 1.0]]), _linear([[1.0, -2.0]], [-1.0]), relu()), (3.0, 1.0)),
        _Net("relu_sum", "ReLU(x1 + x2 - 1)", lambda: _seq(_linear([[1.0, 1.0]], [-1.0]), relu()), (2.0, -0.5)),
        _Net("stacked_relu", "ReLU(ReLU(x1 + x2) - 1)", lambda: _seq(_linear([[1.0, 1.0]]), relu(),
                                                                       _linear([[1.0]], [-1.0]), relu()), (2.0, -0.5)),
        # dummy
        _Net("zero_weight", "ReLU(x1 + 2 x2 + 0 x3 - 1)", lambda: _seq(_linear([[1.0, 2.0, 0.0]], [-1.0]), relu()),
             (1.0, 1.0, 2.0)),
        _Net("cancelling_branches", "ReLU(x1 - 1) + ReLU(x2) - ReLU(x2)",
             lambda: _seq(_linear([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], [-1.0, 0.0, 0.0]), relu(),
                          _linear([[1.0, 1.0, -1.0]])), (3.0, 2.0)),
        # linearity: f, g and h = a f + b g
        _Net("lin_f", "ReLU(x1 - x2 - 1)", lambda: _seq(_linear([[1.0, -1.0]], [-1.0]), relu(), _linear([[1.0]])),
             (3.0, 1.0)),
        _Net("lin_g", "ReLU(x1 + x2 - 2)", lambda: _seq(_linear([[1.0, 1.0]], [-2.0]), relu(), _linear([[1.0]])),
             (3.0, 1.0)),
        _Net("lin_h", f"{a:g} ReLU(x1 - x2 - 1) {b:+g} ReLU(x1 + x2 - 2)",
             lambda: _seq(_linear([[1.0, -1.0], [1.0, 1.0]], [-1.0, -2.0]), relu(), _linear([[a, b]])), (3.0, 1.0)),
        # symmetry
        _Net("logistic_sum", "sigmoid(x1 + x2)", lambda: _seq(_linear([[1.0, 1.0]]), nn.Sigmoid()), (1.0, 1.0)),
        _Net("symmetric_units", "ReLU(2 x1 + x2 + x3 - 1) + ReLU(x1 + 2 x2 + x3 - 1)",
             lambda: _seq(_linear([[2.0, 1.0, 1.0], [1.0, 2.0, 1.0]], [-1.0, -1.0]), relu(), _linear([[1.0, 1.0]])),
             (1.0, 1.0, 3.0)),
    ]
    return {n.name: n for n in nets}


# which networks each axiom looks at (completeness: every network of the suite)
_SENSITIVITY = (("one_minus_relu", 0), ("saturated_sum", 0), ("switched_off", 0))
_PAIRS = (("n1", "n2"), ("identity", "relu_split"), ("single_unit", "duplicated_unit"), ("n1", "split_layer"),
          ("relu_sum", "stacked_relu"))
_DUMMY = (("zero_weight", 2), ("cancelling_branches", 1))
_LINEARITY = (("lin_h", "lin_f", "lin_g"),)
_SYMMETRY = (("logistic_sum", 0, 1), ("symmetric_units", 0, 1))


# --------------------------------------------------------------------------- results
@dataclass
class AxiomResult:
    """The verdict on one axiom.

    Attributes:
        axiom: the axiom's name.
        held: True if it held on every case that ran, False if some case violated it, None if
            no case could run.
        value: the measured number (see ``measure``): the worst relative error over the cases
            that ran (for sensitivity the smallest relative attribution).
        measure: what ``value`` is, e.g. ``"max |sum(a) - (f(x) - f(x'))| / |f(x) - f(x')|"``.
        counterexample: for a violation, the worst case: ``case``, ``function``, ``x``,
            ``baseline``, the attributions and a sentence saying what went wrong.
        cases: one dict per case: ``case``, ``value``, ``held`` (or ``error`` when skipped).
    """

    axiom: str
    held: bool | None
    value: float | None
    measure: str
    counterexample: dict[str, Any] | None = None
    cases: list[dict[str, Any]] = field(default_factory=list)

    def __repr__(self) -> str:
        value = "n/a" if self.value is None else f"{self.value:.4g}"
        text = f"AxiomResult({self.axiom}: held={self.held}, {self.measure} = {value}"
        if self.counterexample is not None:
            text += f"; counterexample: {self.counterexample['detail']}"
        return text + ")"


@dataclass
class AxiomReport:
    """The axiom checker's result: one ``AxiomResult`` per axiom (``report["sensitivity"]``)."""

    method: str
    options: dict[str, Any]
    results: dict[str, AxiomResult]
    rtol: float
    atol: float

    def __getitem__(self, axiom: str) -> AxiomResult:
        try:
            return self.results[axiom]
        except KeyError:
            raise KeyError(f"{axiom!r} is not an axiom of the report; axioms: {', '.join(self.results)}") from None

    def __iter__(self) -> Iterator[AxiomResult]:
        return iter(self.results.values())

    @property
    def held(self) -> dict[str, bool | None]:
        """``{axiom: held}``."""
        return {name: r.held for name, r in self.results.items()}

    def to_records(self) -> list[dict[str, Any]]:
        """One flat dict per axiom: method, axiom, held, value, measure, counterexample (text or None)."""
        return [{"method": self.method, "axiom": r.axiom, "held": r.held, "value": r.value, "measure": r.measure,
                 "counterexample": None if r.counterexample is None else r.counterexample["detail"],
                 "rtol": self.rtol, "atol": self.atol}
                for r in self.results.values()]

    def to_markdown(self) -> str:
        """The report as a markdown table."""
        lines = [f"Axioms of `{self.method}`" + (f" ({_format_options(self.options)})" if self.options else "")
                 + f", rtol={self.rtol:g}, atol={self.atol:g}", "",
                 "| axiom | held | value | measure | counterexample |", "|---|---|---|---|---|"]
        for r in self.results.values():
            value = "n/a" if r.value is None else f"{r.value:.4g}"
            ce = "" if r.counterexample is None else _md_escape(r.counterexample["detail"])
            lines.append(f"| {r.axiom} | {_held_word(r.held)} | {value} | {_md_escape(r.measure)} | {ce} |")
        return "\n".join(lines)

    def __repr__(self) -> str:
        head = f"AxiomReport(method={self.method!r}" + (f", {_format_options(self.options)}" if self.options else "") + ")"
        width = max(len(a) for a in self.results) if self.results else 10
        rows = [head]
        for r in self.results.values():
            value = "n/a" if r.value is None else f"{r.value:.4g}"
            line = f"  {r.axiom:<{width}}  {_held_word(r.held):<8}  {r.measure} = {value}"
            if r.counterexample is not None:
                line += f"\n  {'':<{width}}  {'':<8}  counterexample: {r.counterexample['detail']}"
            rows.append(line)
        return "\n".join(rows)

    __str__ = __repr__


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _held_word(held: bool | None) -> str:
    return {True: "held", False: "violated", None: "not run"}[held]


def _format_options(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items())


# --------------------------------------------------------------------------- the checker
@dataclass
class _Run:
    net: _Net
    x: Tensor
    attributions: Tensor | None    # [F] float64, or None if the method raised
    fx: float
    f0: float
    error: str | None = None


def axioms(method: Any, *, rtol: float = 5e-2, atol: float = 1e-6, **options: Any) -> AxiomReport:
    """Check ``method`` against the attribution axioms on a suite of small synthetic networks.

    Args:
        method: a name from ``propex.methods()`` (with ``options``), a ``propex`` Method class,
            or any callable ``(model, inputs, target) -> attributions`` (``options`` are passed
            to it as keyword arguments). Inputs are float64 tensors ``[1, F]``, the target is 0
            and the reference is the zero input.
        rtol, atol: the tolerance ``atol + rtol · scale`` within which numbers count as zero or
            equal (the scale of each axiom is given in the module docstring).
        **options: the method's options (e.g. ``composite="epsilon"``, ``n_steps=64``).

    Returns:
        An ``AxiomReport``: ``report["sensitivity"].held``, ``.value``, ``.counterexample``;
        ``report.held`` (a dict), ``report.to_records()``, ``report.to_markdown()``.

    The axioms, their measured numbers and the suite are defined in the docstring of
    ``propex.evaluate.axioms`` (the module).
    """
    rtol = _check_tol(rtol, "rtol")
    atol = _check_tol(atol, "atol")
    explainer, name, options = _explainer(method, options)

    runs: dict[str, _Run] = {}
    for net in _nets().values():
        runs[net.name] = _run(explainer, name, net)
    errors = [r.error for r in runs.values() if r.error is not None]
    if len(errors) == len(runs):
        raise ValueError(f"axioms: {name} raised on every network of the suite (float64 inputs [1, F], "
                         f"target 0), e.g.: {errors[0]}")

    results = {
        "completeness": _completeness(runs, rtol, atol),
        "sensitivity": _sensitivity(runs, rtol, atol),
        "implementation_invariance": _invariance(runs, rtol, atol),
        "dummy": _dummy(runs, rtol, atol),
        "linearity": _linearity(runs, rtol, atol),
        "symmetry": _symmetry(runs, rtol, atol),
    }
    return AxiomReport(method=name, options=dict(options), results=results, rtol=rtol, atol=atol)


def _check_tol(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _explainer(method: Any, options: dict[str, Any]) -> tuple[Callable[..., Any], str, dict[str, Any]]:
    """The explainer callable, the method's display name and the options it runs with; a method
    taking a ``baseline`` gets the suite's zero reference, one taking a ``seed`` gets 0."""
    from ..api import get_method
    from ..base import Method, _accepted_options

    if isinstance(method, str) or (isinstance(method, type) and issubclass(method, Method)):
        cls = get_method(method)
        accepted = _accepted_options(cls)
        if "baseline" in options:
            raise ValueError(f"axioms: baseline={options['baseline']!r} cannot be chosen; the suite sets each "
                             f"network's reference (the zero input) and checks the axioms against it")
        options = dict(options)
        if "seed" in accepted and options.get("seed") is None:
            options["seed"] = 0
        cls(nn.Identity(), **options)        # validate option names and values now, not per network
        needs_baseline = "baseline" in accepted

        def run(model: nn.Module, x: Tensor, target: Any) -> Tensor:
            extra = {"baseline": torch.zeros_like(x)} if needs_baseline else {}
            return cls(model, **options, **extra).attribute(x, target)
        return run, cls.name, options
    if isinstance(method, Method):
        raise TypeError("axioms: pass the method's name (or class) with its options, not a Method instance bound "
                        "to a model (the suite builds its own networks)")
    if not callable(method):
        raise TypeError(f"method must be a method name such as 'saliency', a propex Method class, or a callable "
                        f"(model, inputs, target) -> attributions; got {type(method).__name__}")
    fn = resolve_explainer(method, **options)
    return fn, getattr(method, "__name__", "explainer"), dict(options)


def _run(explainer: Callable[..., Any], name: str, net: _Net) -> _Run:
    model = net.build()
    x = torch.tensor([net.x], dtype=torch.float64)
    with torch.no_grad():
        fx = float(model(x).reshape(-1)[0])
        f0 = float(model(torch.zeros_like(x)).reshape(-1)[0])
    try:
        a = explainer(model, x, 0)
        if isinstance(a, tuple) or not isinstance(a, Tensor):
            raise TypeError(f"{name} returned {type(a).__name__}, expected a tensor shaped like x {tuple(x.shape)}")
        a = a.detach().to(torch.float64)
        if a.numel() != x.numel():
            raise ValueError(f"{name} returned attributions of shape {tuple(a.shape)} for x of shape "
                             f"{tuple(x.shape)}")
        a = a.reshape(-1)
        if not bool(torch.isfinite(a).all()):
            raise ValueError(f"{name} returned non-finite attributions {a.tolist()}")
    except (ValueError, TypeError, RuntimeError, NotImplementedError) as exc:
        return _Run(net, x, None, fx, f0, error=f"{type(exc).__name__}: {exc}")
    return _Run(net, x, a, fx, f0)


def _rel(err: float, scale: float) -> float:
    """``err / scale`` (the measured number of a case); 0/0 = 0."""
    if scale > 0:
        return err / scale
    return 0.0 if err == 0 else math.inf


def _vec(t: Tensor) -> list[float]:
    return [round(float(v), 6) for v in t]


def _skip(case: str, *runs: _Run) -> dict[str, Any] | None:
    errs = [r for r in runs if r.error is not None]
    if errs:
        return {"case": case, "held": None, "value": None, "error": f"{errs[0].net.name}: {errs[0].error}"}
    return None


def _case(case: str, run: _Run, err: float, scale: float, rtol: float, atol: float, *, nonzero: bool = False,
          attributions: Any = None, detail: str) -> dict[str, Any]:
    """One case's verdict: ``err`` must be at most ``atol + rtol · scale`` (or, with ``nonzero``,
    more than that); its value is ``err / scale``."""
    tol = atol + rtol * abs(scale)
    held = err > tol if nonzero else err <= tol
    margin = tol / max(err, 1e-300) if nonzero else err / tol
    return {"case": case, "held": held, "value": _rel(err, abs(scale)), "margin": margin,
            "function": run.net.formula, "x": list(run.net.x), "baseline": [0.0] * len(run.net.x),
            "attributions": _vec(run.attributions) if attributions is None else attributions, "detail": detail}


def _verdict(axiom: str, measure: str, cases: list[dict[str, Any]], worst: str) -> AxiomResult:
    """Combine per-case results; ``worst`` is ``"max"`` (value should be small) or ``"min"``."""
    ran = [c for c in cases if c.get("error") is None]
    if not ran:
        return AxiomResult(axiom, None, None, measure, None, cases)
    values = [c["value"] for c in ran]
    value = max(values) if worst == "max" else min(values)
    failed = [c for c in ran if not c["held"]]
    counter = None
    if failed:   # the worst violation relative to its tolerance
        bad = max(failed, key=lambda c: c["margin"])
        counter = {k: v for k, v in bad.items() if k not in ("held", "value", "margin")}
    public = [{k: v for k, v in c.items() if k != "margin"} for c in cases]
    return AxiomResult(axiom, not failed, value, measure, counter, public)


def _completeness(runs: dict[str, _Run], rtol: float, atol: float) -> AxiomResult:
    cases = []
    for run in runs.values():
        name = run.net.name
        cases.append(_skip(name, run) or _case(
            name, run, abs(float(run.attributions.sum()) - (run.fx - run.f0)), run.fx - run.f0, rtol, atol,
            detail=f"{name}: f = {run.net.formula} at x = {list(run.net.x)}, x' = 0: sum(a) = "
                   f"{float(run.attributions.sum()):.4g} but f(x) - f(x') = {run.fx - run.f0:.4g} "
                   f"(a = {_vec(run.attributions)})"))
    return _verdict("completeness", "max |sum(a) - (f(x) - f(x'))| / |f(x) - f(x')|", cases, "max")


def _sensitivity(runs: dict[str, _Run], rtol: float, atol: float) -> AxiomResult:
    cases = []
    for name, i in _SENSITIVITY:
        run = runs[name]
        cases.append(_skip(name, run) or _case(
            name, run, abs(float(run.attributions[i])), run.fx - run.f0, rtol, atol, nonzero=True,
            detail=f"{name}: f = {run.net.formula}, x = {list(run.net.x)} and x' = 0 differ only in x{i + 1} and "
                   f"f(x) - f(x') = {run.fx - run.f0:.4g}, but a_{i + 1} = {float(run.attributions[i]):.4g}"))
    return _verdict("sensitivity", "min |a_i| / |f(x) - f(x')| of the one differing feature i", cases, "min")


def _invariance(runs: dict[str, _Run], rtol: float, atol: float) -> AxiomResult:
    cases = []
    for fa, fb in _PAIRS:
        ra, rb = runs[fa], runs[fb]
        case = f"{fa} vs {fb}"
        skipped = _skip(case, ra, rb)
        if skipped:
            cases.append(skipped)
            continue
        diff = float((ra.attributions - rb.attributions).abs().max())
        scale = float(torch.maximum(ra.attributions.abs(), rb.attributions.abs()).max())
        cases.append(_case(case, ra, diff, scale, rtol, atol,
                           attributions={fa: _vec(ra.attributions), fb: _vec(rb.attributions)},
                           detail=f"{ra.net.formula} and {rb.net.formula} are the same function, but at x = "
                                  f"{list(ra.net.x)} a = {_vec(ra.attributions)} vs {_vec(rb.attributions)}"))
        cases[-1]["function"] = f"{ra.net.formula} == {rb.net.formula}"
    return _verdict("implementation_invariance", "max |a(f) - a(g)| / max |a| over equivalent f, g", cases, "max")


def _dummy(runs: dict[str, _Run], rtol: float, atol: float) -> AxiomResult:
    cases = []
    for name, i in _DUMMY:
        run = runs[name]
        cases.append(_skip(name, run) or _case(
            name, run, abs(float(run.attributions[i])), float(run.attributions.abs().max()), rtol, atol,
            detail=f"{name}: f = {run.net.formula} does not depend on x{i + 1}, but at x = {list(run.net.x)} "
                   f"a = {_vec(run.attributions)}"))
    return _verdict("dummy", "max |a_i| / max |a| of features f does not depend on", cases, "max")


def _linearity(runs: dict[str, _Run], rtol: float, atol: float) -> AxiomResult:
    cases = []
    a, b = LINEARITY_ALPHA, LINEARITY_BETA
    for h, f, g in _LINEARITY:
        rh, rf, rg = runs[h], runs[f], runs[g]
        case = f"{h} = {a:g} {f} {b:+g} {g}"
        skipped = _skip(case, rh, rf, rg)
        if skipped:
            cases.append(skipped)
            continue
        combo = a * rf.attributions + b * rg.attributions
        diff = float((rh.attributions - combo).abs().max())
        scale = float(torch.maximum(rh.attributions.abs(), combo.abs()).max())
        cases.append(_case(case, rh, diff, scale, rtol, atol,
                           attributions={h: _vec(rh.attributions), f: _vec(rf.attributions), g: _vec(rg.attributions)},
                           detail=f"h = {rh.net.formula} at x = {list(rh.net.x)}: a(h) = {_vec(rh.attributions)} but "
                                  f"{a:g} a(f) {b:+g} a(g) = {_vec(combo)}"))
    return _verdict("linearity", "max |a(αf + βg) - (α a(f) + β a(g))| / max |a|", cases, "max")


def _symmetry(runs: dict[str, _Run], rtol: float, atol: float) -> AxiomResult:
    cases = []
    for name, i, j in _SYMMETRY:
        run = runs[name]
        skipped = _skip(name, run)
        if skipped:
            cases.append(skipped)
            continue
        ai, aj = float(run.attributions[i]), float(run.attributions[j])
        cases.append(_case(name, run, abs(ai - aj), max(abs(ai), abs(aj)), rtol, atol,
                           detail=f"{name}: f = {run.net.formula} is symmetric in x{i + 1}, x{j + 1} and "
                                  f"x = {list(run.net.x)}, but a = {_vec(run.attributions)}"))
    return _verdict("symmetry", "max |a_i - a_j| / max(|a_i|, |a_j|) of symmetric features", cases, "max")

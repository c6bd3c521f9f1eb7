"""The axiom checker: verdicts on the seeds' table (seeds 003/004), exact values on the seeds'
networks, counterexamples where a slide's claim fails, the report API, bad input."""
from __future__ import annotations

import pytest
import torch

from propex.evaluate.axioms import AXIOMS, AxiomReport, axioms


@pytest.fixture(scope="module")
def reports() -> dict[str, AxiomReport]:
    """One run per method configuration, shared by the tests of this module."""
    configs = {
        "saliency": ("saliency", {}),
        "input_x_gradient": ("input_x_gradient", {}),
        "ig": ("integrated_gradients", {}),
        "deeplift": ("deeplift", {}),
        "guided_backprop": ("guided_backprop", {}),
        "deconvnet": ("deconvnet", {}),
        "lrp": ("lrp", {}),
        "lrp_epsilon": ("lrp", {"composite": "epsilon"}),
        "lrp_epsilon_nobias": ("lrp", {"composite": "epsilon", "ignore_bias": True}),
    }
    return {key: axioms(name, **opts) for key, (name, opts) in configs.items()}


def _case(result, name):
    return next(c for c in result.cases if c["case"] == name)


# --------------------------------------------------------------------------- the seeds' table
@pytest.mark.parametrize("key", ["saliency", "input_x_gradient", "guided_backprop", "deconvnet"])
def test_gradient_like_methods_violate_sensitivity_on_one_minus_relu(reports, key):
    # seed 003/004: f(x) = 1 - ReLU(1 - x), x = 2, x' = 0: f changes by 1, the gradient is 0
    result = reports[key]["sensitivity"]
    assert result.held is False
    case = _case(result, "one_minus_relu")
    assert case["held"] is False and case["attributions"] == [0.0]
    assert result.counterexample is not None and result.value == 0.0


def test_deeplift_satisfies_sensitivity_and_violates_implementation_invariance(reports):
    r = reports["deeplift"]
    assert r["sensitivity"].held is True
    assert r["completeness"].held is True and r["completeness"].value < 1e-12
    inv = r["implementation_invariance"]
    assert inv.held is False
    # the seed's numbers: N1 -> (1.5, -0.5), N2 -> (2, -1) at x = (3, 1), reference 0
    ce = inv.counterexample
    assert ce["case"] == "n1 vs n2"
    assert ce["attributions"]["n1"] == pytest.approx([1.5, -0.5], abs=1e-6)
    assert ce["attributions"]["n2"] == pytest.approx([2.0, -1.0], abs=1e-6)
    assert inv.value == pytest.approx(0.25)          # |1.5 - 2| / 2


def test_integrated_gradients_satisfies_sensitivity_invariance_completeness(reports):
    r = reports["ig"]
    for axiom in ("sensitivity", "implementation_invariance", "completeness", "dummy", "linearity", "symmetry"):
        assert r[axiom].held is True, (axiom, r[axiom])
    n1n2 = _case(r["implementation_invariance"], "n1 vs n2")
    assert n1n2["attributions"]["n1"] == pytest.approx([1.5, -0.5], abs=1e-9)   # the seed's IG numbers
    assert n1n2["attributions"]["n2"] == pytest.approx([1.5, -0.5], abs=1e-9)
    assert r["completeness"].value < 0.05


def test_lrp_violates_implementation_invariance(reports):
    # default composite (flat first layer): the linear layer split in two changes the map
    inv = reports["lrp"]["implementation_invariance"]
    assert inv.held is False
    # with the bias kept out of the relevance (ignore_bias), the seed's N1/N2 numbers
    nb = reports["lrp_epsilon_nobias"]["implementation_invariance"]
    assert nb.held is False
    case = _case(nb, "n1 vs n2")
    assert case["held"] is False
    assert case["attributions"]["n1"] == pytest.approx([1.5, -0.5], abs=1e-5)
    assert case["attributions"]["n2"] == pytest.approx([2.0, -1.0], abs=1e-5)


def test_lrp_sensitivity_depends_on_rule_and_bias(reports):
    # epsilon with the bias: relevance of 1 - ReLU(1 - x) goes to the bias, x gets 0
    eps = reports["lrp_epsilon"]["sensitivity"]
    assert eps.held is False and _case(eps, "one_minus_relu")["attributions"] == [0.0]
    # without the bias: that case passes, but f(x) = 0 (ReLU(1 - x) at x = 2) leaves nothing to pass on
    nb = reports["lrp_epsilon_nobias"]["sensitivity"]
    assert _case(nb, "one_minus_relu")["held"] is True
    assert _case(nb, "switched_off")["held"] is False
    assert nb.held is False
    # LRP-epsilon with the bias equals gradient x input on ReLU nets: implementation invariant
    assert reports["lrp_epsilon"]["implementation_invariance"].held is True


def test_guided_backprop_and_deconvnet_are_not_implementation_invariant(reports):
    # the slide claims both are; x vs ReLU(x) - ReLU(-x) at x = -2 breaks Guided Backprop ...
    gbp = _case(reports["guided_backprop"]["implementation_invariance"], "identity vs relu_split")
    assert gbp["held"] is False
    assert gbp["attributions"] == {"identity": [1.0], "relu_split": [0.0]}
    # ... but not Deconvnet (its ReLU ignores the forward mask): the duplicated unit does
    dec = reports["deconvnet"]["implementation_invariance"]
    assert _case(dec, "identity vs relu_split")["held"] is True
    dup = _case(dec, "single_unit vs duplicated_unit")
    assert dup["held"] is False
    assert dup["attributions"] == {"single_unit": [1.0, 1.0], "duplicated_unit": [2.0, 2.0]}
    assert reports["guided_backprop"]["implementation_invariance"].held is False
    assert dec.held is False


def test_gradient_is_implementation_invariant_linear_dummy_symmetric(reports):
    r = reports["saliency"]
    assert r["implementation_invariance"].held is True and r["implementation_invariance"].value == 0.0
    assert r["linearity"].held is True
    assert r["dummy"].held is True
    assert r["symmetry"].held is True
    assert r["completeness"].held is False


def test_guided_backprop_violates_dummy_and_linearity(reports):
    r = reports["guided_backprop"]
    dummy = _case(r["dummy"], "cancelling_branches")     # ReLU(x2) - ReLU(x2): the negative branch is cut
    assert dummy["held"] is False and dummy["attributions"][1] == pytest.approx(1.0)
    assert r["linearity"].held is False                   # beta < 0: the negative message is cut


def test_deconvnet_on_sigmoid_is_skipped_not_failed(reports):
    sym = reports["deconvnet"]["symmetry"]
    skipped = _case(sym, "logistic_sum")
    assert skipped["held"] is None and "Deconvnet" in skipped["error"]
    assert _case(sym, "symmetric_units")["held"] is True
    assert sym.held is True


# --------------------------------------------------------------------------- tolerances and callables
def test_tolerance_decides_quadrature_error():
    coarse = axioms("integrated_gradients", n_steps=4, integration="riemann_right")
    comp = coarse["completeness"]
    assert comp.held is False and comp.value > 0.05
    loose = axioms("integrated_gradients", n_steps=4, integration="riemann_right", rtol=comp.value * 1.01)
    assert loose["completeness"].held is True
    assert loose.rtol == pytest.approx(comp.value * 1.01)


def test_callable_method_gradient_times_input():
    def grad_x_input(model, x, target):
        x = x.clone().requires_grad_(True)
        out = model(x)[:, target].sum()
        (g,) = torch.autograd.grad(out, x)
        return g * x

    r = axioms(grad_x_input)
    assert r.method == "grad_x_input"
    assert r["sensitivity"].held is False
    assert r["implementation_invariance"].held is True


def test_callable_method_even_split_is_complete_but_not_dummy():
    # spreads f(x) - f(0) evenly: complete and symmetric, but gives relevance to dummy features
    def even(model, x, target):
        with torch.no_grad():
            delta = model(x)[:, target] - model(torch.zeros_like(x))[:, target]
        return delta[:, None].expand_as(x) / x.shape[1]

    r = axioms(even)
    assert r["completeness"].held is True and r["completeness"].value < 1e-12
    assert r["symmetry"].held is True
    assert r["dummy"].held is False
    assert r["dummy"].counterexample["case"] in ("zero_weight", "cancelling_branches")


def test_callable_options_are_passed():
    seen = {}

    def scaled(model, x, target, scale=1.0):
        seen["scale"] = scale
        return x * scale

    axioms(scaled, scale=3.0)
    assert seen["scale"] == 3.0


# --------------------------------------------------------------------------- the report
def test_report_api(reports):
    r = reports["deeplift"]
    assert set(r.held) == set(AXIOMS) and list(r.results) == list(AXIOMS)
    records = r.to_records()
    assert len(records) == 6
    assert {"method", "axiom", "held", "value", "measure", "counterexample"} <= set(records[0])
    inv = next(rec for rec in records if rec["axiom"] == "implementation_invariance")
    assert inv["held"] is False and "ReLU(ReLU(x1 - 1) - x2)" in inv["counterexample"]
    text = repr(r)
    assert "deeplift" in text and "violated" in text and "implementation_invariance" in text
    md = r.to_markdown()
    assert md.count("\n|") >= 7 and "| sensitivity | held |" in md
    assert "held=True" in repr(r["sensitivity"])
    assert [a.axiom for a in r] == list(AXIOMS)
    with pytest.raises(KeyError, match="not an axiom"):
        r["conservation"]


def test_seed_is_set_for_stochastic_methods():
    a = axioms("smoothgrad", n_samples=4, noise_level=0.5)
    b = axioms("smoothgrad", n_samples=4, noise_level=0.5)
    assert a.options["seed"] == 0
    assert a.to_records() == b.to_records()


# --------------------------------------------------------------------------- bad input
def test_bad_input():
    with pytest.raises(ValueError, match="not a known method"):
        axioms("integrated_gradient_s")
    with pytest.raises(TypeError, match="unknown option"):
        axioms("integrated_gradients", n_stepz=10)
    with pytest.raises(ValueError):
        axioms("integrated_gradients", n_steps=0)
    with pytest.raises(ValueError, match="baseline"):
        axioms("integrated_gradients", baseline=1.0)
    with pytest.raises(ValueError, match="rtol"):
        axioms("saliency", rtol=-1)
    with pytest.raises(ValueError, match="atol"):
        axioms("saliency", atol=float("nan"))
    with pytest.raises(TypeError, match="callable"):
        axioms(42)

    def broken(model, x, target):
        raise RuntimeError("boom")

    with pytest.raises(ValueError, match="every network.*boom"):
        axioms(broken)


def test_method_instance_is_refused():
    import propex
    from torch import nn

    with pytest.raises(TypeError, match="name"):
        axioms(propex.get_method("saliency")(nn.Identity()))


def test_wrong_shape_is_reported_per_case():
    def wrong(model, x, target):
        return torch.zeros(1, 7, dtype=x.dtype)

    with pytest.raises(ValueError, match="shape"):
        axioms(wrong)


def test_exported_from_propex_evaluate():
    import propex.evaluate as ev

    assert ev.axioms is axioms and ev.AxiomReport is AxiomReport

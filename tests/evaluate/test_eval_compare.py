"""``propex.evaluate.compare``: the one-call benchmark table on the demo model."""
from __future__ import annotations

import math
import sys

import pytest
import torch

import propex
from propex.evaluate.compare import Comparison, available_metrics, compare


@pytest.fixture(scope="module")
def model():
    from propex.models import load_digits_model
    return load_digits_model()


@pytest.fixture(scope="module")
def x():
    pytest.importorskip("sklearn")
    from propex.models import load_digits_data
    return load_digits_data("test")[0][:4].clone()


def l1_mass(model, x, attributions, target=None):
    """A tiny metric: Σ|a| per sample."""
    return attributions.abs().flatten(1).sum(1)


def top_share(model, x, attributions, target=None, k=10):
    """A tiny metric with an option: the share of Σ|a| in the k largest |a|."""
    flat = attributions.abs().flatten(1)
    return flat.topk(k, dim=1).values.sum(1) / flat.sum(1).clamp_min(1e-12)


def test_records_match_direct_computation(model, x):
    table = compare(model, x, methods=["saliency", ("input_x_gradient", {})], metrics=[l1_mass, (top_share, {"k": 5})])
    assert isinstance(table, Comparison) and len(table) == 4
    assert table.methods == ["saliency", "input_x_gradient"] and table.metrics == ["l1_mass", "top_share"]
    target = model(x).argmax(1)
    sal = propex.explain(model, x, "saliency", target=target).attributions
    ixg = propex.explain(model, x, "input_x_gradient", target=target).attributions
    for label, a in (("saliency", sal), ("input_x_gradient", ixg)):
        expected = {"l1_mass": l1_mass(model, x, a), "top_share": top_share(model, x, a, k=5)}
        for metric, values in expected.items():
            rec = next(r for r in table.records if r["method"] == label and r["metric"] == metric)
            assert rec["n"] == 4 and rec["error"] is None
            assert rec["mean"] == pytest.approx(float(values.double().mean()), rel=1e-6)
            assert rec["std"] == pytest.approx(float(values.double().std(unbiased=True)), rel=1e-6)
            assert rec["seconds"] >= 0 and rec["explain_seconds"] > 0
            assert torch.allclose(table.values[(label, metric)], values.double(), rtol=1e-6)
        assert torch.allclose(table.attributions[label], a)
    assert torch.equal(table.target, target)


def test_target_is_resolved_once_and_shared(model, x):
    seen = {}

    def method(model, inputs, target):
        seen["method"] = target
        return inputs.clone()

    def metric(model, x, attributions, target=None):
        seen["metric"] = target
        return attributions.flatten(1).sum(1)

    compare(model, x, methods=[method], metrics=[metric])
    top = model(x).argmax(1)
    assert torch.equal(seen["method"], top) and torch.equal(seen["metric"], top)
    compare(model, x, methods=[method], metrics=[metric], target=3)
    assert torch.equal(torch.as_tensor(seen["method"]).expand(4), torch.full((4,), 3))


def test_labels_and_dict_specs(model, x):
    table = compare(model, x, methods={"plain": "saliency", "abs": ("saliency", {"abs": True})},
                    metrics=[l1_mass])
    assert table.methods == ["plain", "abs"]
    table = compare(model, x, methods=["saliency", ("saliency", {"abs": True})], metrics=[l1_mass])
    assert table.methods == ["saliency", "saliency(abs=True)"]
    # the same metric twice with different options
    table = compare(model, x, methods="saliency", metrics=[(top_share, {"k": 3}), (top_share, {"k": 30})])
    assert table.metrics == ["top_share(k=3)", "top_share(k=30)"]
    assert table.records[0]["mean"] < table.records[1]["mean"]


def test_metric_that_recomputes_explanations_gets_the_method(model, x):
    calls = []

    def stability(model, x, method="saliency", target=None, *, method_options=None, attributions=None):
        calls.append((method, method_options, attributions))
        return torch.ones(x.shape[0])

    def stability_callable_only(model, x, method, target=None):
        a = method(model, x, target)
        calls.append(("callable", a.shape))
        return torch.zeros(x.shape[0])

    compare(model, x, methods=[("integrated_gradients", {"n_steps": 4})], metrics=[stability, stability_callable_only])
    (name, opts, attributions), (kind, shape) = calls
    assert name == "integrated_gradients" and opts == {"n_steps": 4, "seed": 0}
    assert attributions is not None and attributions.shape == x.shape
    assert kind == "callable" and shape == x.shape


def test_structured_results_are_summarised(model, x):
    from propex.evaluate.curves import PerturbationCurve

    def curve(model, x, attributions, target=None):
        scores = torch.tensor([[1.0, 0.5, 0.0]]).expand(x.shape[0], 3)
        return PerturbationCurve(scores, torch.tensor([0.0, 0.5, 1.0]), "morf", "pixel_flipping")

    def as_dict(model, x, attributions, target=None):
        return {"spearman": torch.full((x.shape[0],), 0.25), "ssim": torch.zeros(x.shape[0])}

    table = compare(model, x, methods="saliency", metrics=[curve, (curve, {}, "auc"), as_dict, (as_dict, {}, "ssim")])
    recs = table.records
    assert recs[0]["summary"] == "aopc" and recs[0]["mean"] == pytest.approx(0.5)      # mean(1 - [1, .5, 0])
    assert recs[1]["summary"] == "auc" and recs[1]["mean"] == pytest.approx(0.5)
    assert recs[2]["summary"] == "spearman" and recs[2]["mean"] == pytest.approx(0.25)
    assert recs[3]["summary"] == "ssim" and recs[3]["mean"] == 0.0


def test_nan_values_are_ignored_and_single_sample_std_is_nan(model, x):
    def with_nan(model, x, attributions, target=None):
        v = torch.arange(x.shape[0], dtype=torch.float64)
        v[0] = float("nan")
        return v

    rec = compare(model, x, methods="saliency", metrics=[with_nan]).records[0]
    assert rec["n"] == 3 and rec["mean"] == pytest.approx(2.0) and rec["std"] == pytest.approx(1.0)
    rec = compare(model, x[:1], methods="saliency", metrics=[l1_mass]).records[0]
    assert rec["n"] == 1 and math.isnan(rec["std"])


def test_renderings_and_dataframe(model, x):
    table = compare(model, x, methods=["saliency", "input_x_gradient"], metrics=[l1_mass, "sparseness"]
                    if "sparseness" in available_metrics() else [l1_mass])
    text = repr(table)
    assert "saliency" in text and "input_x_gradient" in text and "l1_mass" in text
    md = table.to_markdown()
    assert md.splitlines()[0].startswith("| method | l1_mass") and md.count("\n") == 3
    long = table.to_markdown(wide=False)
    assert long.count("\n") == len(table) + 1
    pd = pytest.importorskip("pandas")
    df = table.to_dataframe()
    assert isinstance(df, pd.DataFrame) and list(df["method"]) == [r["method"] for r in table.records]
    assert len(table.to_dataframe(per_sample=True)) == len(table) * x.shape[0]


def test_dataframe_without_pandas(model, x, monkeypatch):
    table = compare(model, x, methods="saliency", metrics=[l1_mass])
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pandas"):
        table.to_dataframe()
    assert table.to_records()[0]["metric"] == "l1_mass"


def test_model_left_as_found(model, x, model_snapshot):
    snap = model_snapshot(model)
    compare(model, x, methods=["saliency", ("lrp", {"composite": "epsilon_plus"})], metrics=[l1_mass])
    snap.assert_unchanged()


def test_deterministic_given_seed(model, x):
    specs = dict(methods=[("smoothgrad", {"n_samples": 4})], metrics=[l1_mass])
    a = compare(model, x, **specs)
    b = compare(model, x, **specs)
    assert a.records[0]["mean"] == b.records[0]["mean"]
    c = compare(model, x, seed=1, **specs)
    assert c.records[0]["mean"] != a.records[0]["mean"]


# --------------------------------------------------------------------------- errors
def test_bad_input(model, x):
    with pytest.raises(ValueError, match="methods is empty"):
        compare(model, x, methods=[], metrics=[l1_mass])
    with pytest.raises(ValueError, match="metrics is empty"):
        compare(model, x, methods=["saliency"], metrics=[])
    with pytest.raises(ValueError, match="not a known method"):
        compare(model, x, methods=["salency"], metrics=[l1_mass])
    with pytest.raises(ValueError, match="not a metric of propex.evaluate.*Available"):
        compare(model, x, methods=["saliency"], metrics=["no_such_metric"])
    with pytest.raises(TypeError, match="methods: integrated_gradients.*unknown option"):
        compare(model, x, methods=[("integrated_gradients", {"n_stepz": 3})], metrics=[l1_mass])
    with pytest.raises(ValueError, match="methods: integrated_gradients"):
        compare(model, x, methods=[("integrated_gradients", {"n_steps": 0})], metrics=[l1_mass])
    with pytest.raises(TypeError, match="options .* must be a dict"):
        compare(model, x, methods=[("saliency", [1, 2])], metrics=[l1_mass])
    with pytest.raises(TypeError, match="top_share got unknown option"):
        compare(model, x, methods=["saliency"], metrics=[(top_share, {"kk": 3})])
    with pytest.raises(ValueError, match="cannot be given as options"):
        compare(model, x, methods=["saliency"], metrics=[(top_share, {"target": 3})])
    with pytest.raises(TypeError, match="not a method name"):
        compare(model, x, methods=[3], metrics=[l1_mass])
    with pytest.raises(ValueError, match="empty batch"):
        compare(model, x[:0], methods=["saliency"], metrics=[l1_mass])
    with pytest.raises(ValueError, match="on_error"):
        compare(model, x, methods=["saliency"], metrics=[l1_mass], on_error="ignore")


def test_run_time_errors_raise_or_record(model, x):
    def broken(model, x, attributions, target=None):
        raise ValueError("bad metric")

    def wrong_length(model, x, attributions, target=None):
        return torch.zeros(x.shape[0] + 1)

    with pytest.raises(RuntimeError, match="metric 'broken' failed on the attributions of 'saliency'.*bad metric"):
        compare(model, x, methods=["saliency"], metrics=[broken])
    with pytest.raises(RuntimeError, match="5 values for 4 samples"):
        compare(model, x, methods=["saliency"], metrics=[wrong_length])
    table = compare(model, x, methods=["saliency"], metrics=[broken, l1_mass], on_error="record")
    bad, good = table.records
    assert "bad metric" in bad["error"] and math.isnan(bad["mean"]) and bad["n"] == 0
    assert good["error"] is None and good["n"] == 4
    assert "error" in table.to_text()

    def failing_method(model, inputs, target):
        raise RuntimeError("no gradients here")

    with pytest.raises(RuntimeError, match="method 'failing_method' failed"):
        compare(model, x, methods=[failing_method], metrics=[l1_mass])
    table = compare(model, x, methods=[failing_method, "saliency"], metrics=[l1_mass], on_error="record")
    assert "no gradients here" in table.records[0]["error"] and table.records[1]["error"] is None


def test_unknown_metric_lists_available_ones(model, x):
    with pytest.raises(ValueError) as info:
        compare(model, x, methods=["saliency"], metrics=["sparsenes"])
    message = str(info.value)
    for name in available_metrics():
        assert name in message


# --------------------------------------------------------------------------- with the real metrics
def test_integration_with_named_metrics(model, x):
    import propex.evaluate as ev

    table = compare(model, x, methods=["saliency", ("integrated_gradients", {"n_steps": 8})],
                    metrics=["sparseness", ("pixel_flipping", {"n_steps": 8})])
    target = model(x).argmax(1)
    a = propex.explain(model, x, "integrated_gradients", target=target, n_steps=8).attributions
    expected_sparse = ev.sparseness(model, x, a, target=target)
    expected_aopc = ev.pixel_flipping(model, x, a, target=target, n_steps=8).aopc
    rec = {r["metric"]: r for r in table.records if r["method"] == "integrated_gradients"}
    assert rec["sparseness"]["mean"] == pytest.approx(float(expected_sparse.double().mean()), rel=1e-6)
    assert rec["pixel_flipping"]["summary"] == "aopc" and rec["pixel_flipping"]["better"] == "higher"
    assert rec["pixel_flipping"]["mean"] == pytest.approx(float(expected_aopc.double().mean()), rel=1e-6)
    assert rec["sparseness"]["better"] == "higher"


def test_exports_and_method_classes(model, x):
    import propex.evaluate as ev

    assert ev.compare is compare and ev.Comparison is Comparison
    assert "compare" not in available_metrics() and "axioms" not in available_metrics()
    table = compare(model, x, methods=[propex.get_method("saliency")], metrics=l1_mass)
    assert table.methods == ["saliency"] and table.records[0]["n"] == 4

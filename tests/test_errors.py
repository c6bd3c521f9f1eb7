"""Bad input: a clear ValueError/TypeError that names the argument, and the model left as found."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import propex

NAN = float("nan")
PROPEX_DIR = Path(propex.__file__).resolve().parent


def _with(x, index, value):
    x = x.clone()
    x[index] = value
    return x


# (id, method, x-builder(x) or None, options, exception, regex the message must match)
CASES = [
    ("x_wrong_shape", "integrated_gradients", lambda x: torch.rand(2, 3, 8, 8), {}, ValueError, r"\bx\b.*shape"),
    ("x_not_tensor", "saliency", lambda x: x.numpy(), {}, TypeError, r"\bx\b.*torch\.Tensor"),
    ("x_scalar", "saliency", lambda x: torch.tensor(1.0), {}, ValueError, r"\bx\b.*batch"),
    ("x_nan", "integrated_gradients", lambda x: _with(x, (0, 0, 3, 3), NAN), {}, ValueError, r"\bx\b.*NaN"),
    ("x_inf", "saliency", lambda x: _with(x, (1, 0, 0, 0), float("inf")), {}, ValueError, r"\bx\b.*Inf"),
    ("x_tuple_batch_mismatch", "saliency", lambda x: (x, x[:2]), {}, ValueError, r"batch size"),
    ("target_too_big", "integrated_gradients", None, dict(target=10), ValueError, r"target.*10"),
    ("target_negative", "saliency", None, dict(target=-1), ValueError, r"target.*-1"),
    ("target_wrong_length", "saliency", None, dict(target=[1, 2]), ValueError, r"target.*2.*N=4"),
    ("target_one_too_big_in_list", "saliency", None, dict(target=[1, 2, 3, 12]), ValueError, r"target.*12"),
    ("target_float_dtype", "saliency", None, dict(target=torch.tensor([1.0, 2.0, 3.0, 4.0])), TypeError,
     r"target.*dtype"),
    ("target_float", "saliency", None, dict(target=2.0), TypeError, r"target"),
    ("target_bool", "saliency", None, dict(target=True), TypeError, r"target"),
    ("target_str", "saliency", None, dict(target="seven"), TypeError, r"target"),
    ("target_3d", "saliency", None, dict(target=torch.zeros(4, 1, 1, dtype=torch.long)), ValueError, r"target"),
    ("target_tuple_bad", "saliency", None, dict(target=(3, 1)), ValueError, r"target.*tuple"),
    ("baseline_nan", "integrated_gradients", None, dict(baseline=torch.full((1, 1, 16, 16), NAN)), ValueError,
     r"baseline.*NaN"),
    ("baseline_inf_number", "integrated_gradients", None, dict(baseline=float("inf")), ValueError, r"baseline"),
    ("baseline_shape", "integrated_gradients", None, dict(baseline=torch.zeros(4, 1, 8, 8)), ValueError,
     r"baseline.*\(4, 1, 8, 8\)"),
    ("baseline_in_list_nan", "integrated_gradients", None, dict(baseline=[0.0, torch.full((1, 16, 16), NAN)]),
     ValueError, r"baseline\[1\]"),
    ("baseline_unknown_name", "integrated_gradients", None, dict(baseline="gray"), ValueError, r"baseline.*gray"),
    ("baseline_wrong_type", "integrated_gradients", None, dict(baseline=object()), TypeError, r"baseline"),
    ("baseline_tuple_for_tensor_x", "integrated_gradients", None, dict(baseline=(0.0, 1.0)), TypeError,
     r"baseline.*tuple"),
    ("baseline_empty_list", "integrated_gradients", None, dict(baseline=[]), ValueError, r"baseline"),
    ("n_steps_zero", "integrated_gradients", None, dict(n_steps=0), ValueError, r"n_steps.*>= 1"),
    ("n_steps_float", "integrated_gradients", None, dict(n_steps=2.5), TypeError, r"n_steps.*int"),
    ("n_steps_str", "blur_ig", None, dict(n_steps="10"), TypeError, r"n_steps"),
    ("n_steps_neg_guided", "guided_ig", None, dict(n_steps=-3), ValueError, r"n_steps"),
    ("n_steps_trapezoid_1", "integrated_gradients", None, dict(n_steps=1, integration="riemann_trapezoid"),
     ValueError, r"n_steps"),
    ("integration_unknown", "integrated_gradients", None, dict(integration="simpson"), ValueError,
     r"integration.*simpson"),
    ("n_samples_zero", "smoothgrad", None, dict(n_samples=0), ValueError, r"n_samples"),
    ("layer_missing", "integrated_gradients", None, dict(layer="feature.4"), ValueError,
     r"layer.*feature\.4.*features\.4"),
    ("layer_foreign_module", "saliency", None, dict(layer=nn.Linear(2, 2)), ValueError, r"layer.*not part"),
    ("layer_wrong_type", "saliency", None, dict(layer=3), TypeError, r"layer"),
    ("batch_size_zero", "integrated_gradients", None, dict(batch_size=0), ValueError, r"batch_size.*>= 1"),
    ("batch_size_float", "integrated_gradients", None, dict(batch_size=2.5), TypeError, r"batch_size"),
    ("memory_budget_lots", "integrated_gradients", None, dict(memory_budget="lots"), ValueError,
     r"memory_budget.*lots"),
    ("memory_budget_negative", "smoothgrad", None, dict(memory_budget=-5), ValueError, r"memory_budget"),
    ("memory_budget_zero_string", "integrated_gradients", None, dict(memory_budget="0MB"), ValueError,
     r"memory_budget"),
    ("memory_budget_inf", "integrated_gradients", None, dict(memory_budget=float("inf")), ValueError,
     r"memory_budget"),
    ("memory_budget_bool", "integrated_gradients", None, dict(memory_budget=True), TypeError, r"memory_budget"),
    ("noise_level_negative", "smoothgrad", None, dict(noise_level=-1), ValueError, r"noise_level"),
    ("noise_level_negative_vargrad", "vargrad", None, dict(noise_level=-0.1), ValueError, r"noise_level"),
    ("noise_wrong_shape", "smoothgrad", None, dict(n_samples=2, noise=torch.zeros(4, 1, 16, 16)), ValueError,
     r"noise"),
    ("eg_without_baseline", "expected_gradients", None, {}, ValueError, r"baseline"),
    ("eg_baseline_shape", "expected_gradients", None, dict(baseline=torch.zeros(5, 1, 8, 8)), ValueError,
     r"baseline.*\[M, 1, 16, 16\]"),
    ("eg_baseline_nan", "expected_gradients", None, dict(baseline=torch.full((3, 1, 16, 16), NAN)), ValueError,
     r"baseline.*NaN"),
    ("blur_ig_max_sigma", "blur_ig", None, dict(max_sigma=0), ValueError, r"max_sigma"),
    ("guided_ig_fraction", "guided_ig", None, dict(fraction=0), ValueError, r"fraction"),
    ("guided_ig_list_baseline", "guided_ig", None, dict(baseline=[0.0, 1.0]), ValueError, r"baseline"),
    ("seed_str", "smoothgrad", None, dict(seed="abc", n_samples=2), TypeError, r"seed"),
]


@pytest.mark.parametrize("method,make_x,options,exc,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error(digits_model, digits_x, model_snapshot, method, make_x, options, exc, pattern):
    x = digits_x[:4] if make_x is None else make_x(digits_x[:4])
    options = dict(options)
    target = options.pop("target", None)
    snap = model_snapshot(digits_model)
    with pytest.raises(exc, match=pattern) as info:
        propex.explain(digits_model, x, method, target=target, **options)
    snap.assert_unchanged()
    # the error is raised by propex itself, not from deep inside torch
    assert PROPEX_DIR in Path(info.traceback[-1].path).parents


def test_blur_ig_on_two_dim_input():
    lin = nn.Linear(5, 3).eval()
    with pytest.raises(ValueError, match=r"blur_ig.*\bx\b.*\[N, C, H, W\]"):
        propex.explain(lin, torch.rand(4, 5), "blur_ig")


def test_unknown_method_lists_close_matches(digits_model, digits_x):
    with pytest.raises(ValueError, match=r"integrated_gradients") as info:
        propex.explain(digits_model, digits_x, "integrated_gradiens")
    assert "Did you mean" in str(info.value) and "method" in str(info.value)
    with pytest.raises(ValueError, match=r"Did you mean.*smoothgrad"):
        propex.explain(digits_model, digits_x, "smoth_grad")
    with pytest.raises(ValueError, match="Available: saliency"):
        propex.explain(digits_model, digits_x, "zzzzzz")
    with pytest.raises(TypeError, match="method"):
        propex.explain(digits_model, digits_x, 3)


def test_model_output_neither_tensor_nor_logits():
    class ListOut(nn.Module):
        def forward(self, x):
            return [x.sum(dim=1)]

    class DictNoLogits(nn.Module):
        def forward(self, x):
            return {"scores": x}

    for model in (ListOut().eval(), DictNoLogits().eval(), lambda x: x.sum().item()):
        with pytest.raises(TypeError, match=r"model must return a tensor.*logits"):
            propex.explain(model, torch.rand(3, 4), "saliency")


def test_model_output_without_batch_dim_first():
    with pytest.raises(ValueError, match=r"model output.*N=3"):
        propex.explain(lambda x: x.sum(dim=0, keepdim=True), torch.rand(3, 4), "saliency")


def test_model_not_callable():
    with pytest.raises(TypeError, match="model"):
        propex.explain("resnet", torch.rand(3, 4), "saliency")


def test_layer_needs_a_module_model():
    with pytest.raises(TypeError, match=r"layer"):
        propex.explain(lambda x: x, torch.rand(3, 4), "saliency", layer="fc")


def test_integer_inputs_point_to_layer():
    emb = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2)).eval()
    ids = torch.randint(0, 10, (3, 3))
    with pytest.raises(TypeError, match=r"\bx\b.*layer="):     # a plain callable: no embedding to find
        propex.explain(lambda t: emb(t), ids, "saliency")
    # integer ids without layer= default to the input embedding (propex.text.find_input_embedding)
    auto = propex.explain(emb, ids, "saliency", target=1)
    assert auto.attributions.shape == (3, 3, 4)
    # ... and layer= is the way: attribution to the embedding output
    exp = propex.explain(emb, ids, "integrated_gradients", layer="0", n_steps=16, target=1)
    assert exp.attributions.shape == (3, 3, 4)
    assert exp.delta.abs().max() < 1e-5                      # linear after the layer: exact


def test_layer_used_twice_is_a_clear_error():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            return self.lin(torch.tanh(self.lin(x)))

    with pytest.raises(ValueError, match=r"layer.*more than once"):
        propex.explain(Twice().eval(), torch.rand(2, 4), "saliency", layer="lin")


def test_layer_not_called_is_a_clear_error():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(4, 2), nn.Linear(4, 2)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(ValueError, match=r"layer.*not called"):
        propex.explain(Unused().eval(), torch.rand(2, 4), "saliency", layer="unused")


def test_unknown_option_is_not_silently_ignored(digits_model, digits_x):
    with pytest.raises(TypeError, match=r"integrated_gradients.*'n_step'.*did you mean 'n_steps'"):
        propex.explain(digits_model, digits_x, "ig", n_step=300)
    with pytest.raises(TypeError, match=r"saliency.*'n_steps'.*options are: abs"):
        propex.explain(digits_model, digits_x, "saliency", n_steps=3)
    with pytest.raises(TypeError, match=r"'stdevs'"):
        propex.SmoothGrad(digits_model, stdevs=0.1)

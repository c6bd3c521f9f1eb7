"""Bad input: exit code 2, one line on stderr saying what was wrong and what to do, no traceback."""
from __future__ import annotations

import pytest
import torch

import propex


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "wrong.pth"
    torch.save({"weight": torch.zeros(3)}, path)
    return path


CASES = [
    (["explain", "--input", "missing.png", "--method", "saliency"], r"input 'missing.png' does not exist"),
    (["explain", "--model", "resnt18", "--input", "{digits}", "--method", "saliency"],
     r"model spec 'resnt18' is not .*Did you mean resnet18"),
    (["explain", "--model", "nowhere/model.pt2", "--input", "{digits}", "--method", "saliency"],
     r"model file 'nowhere/model.pt2' does not exist"),
    (["explain", "--model", "no_such_module_px:build", "--input", "{digits}", "--method", "saliency"],
     r"cannot import module 'no_such_module_px'"),
    (["explain", "--weights", "{weights}", "--input", "{digits}", "--method", "saliency"],
     r"does not fit the demo digits model: keys .* missing"),
    (["explain", "--input", "{digits}", "--method", "gradcam", "--layer", "features.66"],
     r"--layer='features.66' is not a module name of the model; close matches: features.6"),
    (["explain", "--input", "{digits}", "--method", "integrated_gradiants"],
     r"--method 'integrated_gradiants' is not a known method. Did you mean: integrated_gradients"),
    (["explain", "--input", "{digits}"], r"no --method given"),
    (["explain", "--input", "{digits}", "--method", "ig", "--option", "ig.n_step=3"],
     r"integrated_gradients has no option 'n_step'. Did you mean n_steps"),
    (["explain", "--input", "{digits}", "--method", "ig", "--option", "n_steps=3"], r"is not NAME.KEY=VALUE"),
    (["explain", "--input", "{digits}", "--method", "saliency", "--target", "11"],
     r"--target 11 is not a class of the model \(it has 10 outputs"),
    (["explain", "--input", "{digits}", "--method", "pattern_attribution"],
     r"needs --option pattern_attribution.patterns"),
    (["explain", "--input", "{digits}", "--method", "saliency", "--preprocess", "sizes=3"],
     r"unknown preprocess option 'sizes'"),
    (["explain", "--input", "{digits}", "--method", "saliency", "--outt", "x"], r"No such option '--outt'"),
    (["explian"], r"no such command 'explian'. Did you mean explain"),
    (["evaluate", "--input", "{digits}", "--method", "saliency", "--metric", "sparsness"],
     r"--metric 'sparsness' is not a metric .*Did you mean sparseness"),
    (["report", "--input", "{digits}", "--method", "saliency", "--store", "no/store.zarr"],
     r"--store 'no/store.zarr' does not exist"),
    (["demo", "--n-samples", "0"], r"--n-samples must be >= 1"),
    (["methods", "--family", "magic"], r"--family 'magic' has no methods"),
]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in CASES])
def test_bad_input_is_one_line_and_exit_2(run_cli, digit_dir, weights_file, tmp_path, args, message):
    import re
    args = [a.format(digits=digit_dir, weights=weights_file) for a in args]
    if args[0] in ("explain", "evaluate", "report") and "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    code, out, err = run_cli(*args)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in out + err
    assert not (tmp_path / "out").exists()          # nothing computed, nothing written


def test_debug_shows_the_traceback(run_cli, digit_dir):
    code, _, err = run_cli("--debug", "explain", "--input", digit_dir, "--method", "lrpp")
    assert code == 2
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: --method 'lrpp'")


def test_unexpected_exception_is_one_line_exit_1(run_cli, digit_dir, tmp_path, monkeypatch):
    import propex.cli.explain as explain_mod
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(explain_mod, "write_outputs", broken)
    code, _, err = run_cli("explain", "--input", digit_dir, "--method", "saliency", "--out", tmp_path)
    assert code == 1
    assert err.strip() == "error: RuntimeError: disk full (rerun with --debug for the traceback)"


def test_missing_extra_says_what_to_install(run_cli, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "rich":
            raise ImportError("No module named 'rich'", name="rich")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    code, _, err = run_cli("methods")
    assert code == 2 and "pip install 'propex[cli]'" in err and len(err.strip().splitlines()) == 1
    assert propex.methods()   # the library itself does not need the CLI's packages

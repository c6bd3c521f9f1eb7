"""The `propex` command: `methods` and `demo` (the README's first command)."""
from __future__ import annotations

import subprocess
import sys

import pytest

import propex
from propex.cli import main
from propex.demo import run_demo


def test_methods_lists_every_registered_method(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.strip().splitlines()]
    assert listed == propex.methods()
    assert "(aliases: ig" in out


def test_demo_runs_every_method_and_writes_grid_and_table(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    rows, grid = run_demo(str(tmp_path), n_samples=3, log=lambda s: None)
    assert [r.method for r in rows] == propex.methods()
    assert all(r.error is None for r in rows), [r.error for r in rows]
    by_name = {r.method: r for r in rows}
    # the digits model uses SiLU: deconvnet (defined for ReLU) is the only method that does not apply
    assert [r.method for r in rows if r.not_applicable] == ["deconvnet"]
    assert "SiLU" in by_name["deconvnet"].not_applicable
    # completeness is reported exactly for the methods that claim it
    for name in propex.methods():
        claims = propex.get_method(name).claims_completeness and not by_name[name].not_applicable
        assert (by_name[name].completeness_error is not None) == claims
    assert by_name["integrated_gradients"].completeness_error < 1e-3
    import matplotlib.image as mpimg
    img = mpimg.imread(grid)
    assert img.shape[0] > 100 and img.shape[1] > 100 * len(rows) / 2
    table = (tmp_path / "table.md").read_text()
    for name in propex.methods():
        assert f"| {name} |" in table
    assert "not applicable" in table


def test_demo_command_line_subset(tmp_path, capsys):
    pytest.importorskip("sklearn")
    code = main(["demo", "--out", str(tmp_path), "--n-samples", "2", "--methods", "saliency", "ig"])
    assert code == 0
    out = capsys.readouterr().out
    assert "| saliency |" in out and "| integrated_gradients |" in out
    assert (tmp_path / "grid.png").exists()


def test_demo_rejects_unknown_method(tmp_path):
    pytest.importorskip("sklearn")
    with pytest.raises(ValueError, match="methods: unknown method"):
        run_demo(str(tmp_path), n_samples=1, method_names=["not_a_method"], log=lambda s: None)


def test_console_script_entry_point():
    result = subprocess.run([sys.executable, "-m", "propex.cli", "methods"], capture_output=True, text=True,
                            check=True)
    assert "integrated_gradients" in result.stdout


def test_bad_n_samples(capsys):
    assert main(["demo", "--n-samples", "0"]) == 2
    assert "--n-samples" in capsys.readouterr().err

"""Fixtures of the CLI tests: digit PNGs (the demo model's raw 8×8 format) and small RGB images."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digit_dir(tmp_path_factory):
    """Three held-out digits as 8×8 grey PNGs (pixel = round(v / 16 · 255))."""
    pytest.importorskip("sklearn")
    from PIL import Image
    from sklearn.datasets import load_digits
    folder = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    for i in (0, 1, 2):
        Image.fromarray(np.round(digits.images[i] * 255 / 16).astype(np.uint8), "L").save(folder / f"d{i}.png")
    return folder


@pytest.fixture(scope="session")
def rgb_dir(tmp_path_factory):
    """Two random RGB images 90×80."""
    from PIL import Image
    folder = tmp_path_factory.mktemp("rgb")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (80, 90, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


@pytest.fixture
def run_cli(capsys):
    """``run_cli(*args) -> (exit code, stdout, stderr)`` through ``propex.cli.main``."""
    from propex.cli import main

    def run(*args):
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err
    return run

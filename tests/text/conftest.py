"""Fixtures of the text tests: the trained toy classifiers (trained once per session, seeded)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def toy_transformer():
    from propex.models.toy_text import train_toy_text_classifier
    with _one_thread():
        return train_toy_text_classifier(seed=0, arch="transformer")


@pytest.fixture(scope="session")
def toy_conv():
    from propex.models.toy_text import train_toy_text_classifier
    with _one_thread():
        return train_toy_text_classifier(seed=0, arch="conv")


class _one_thread:
    def __enter__(self):
        self.saved = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.saved)

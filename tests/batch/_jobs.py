"""The job shared by the batch tests and their subprocesses (same model, data and options)."""
from __future__ import annotations

import time

import torch


class SlowDigits(torch.utils.data.Dataset):
    """96 held-out digits with their labels; ``sleep`` seconds per sample (to time a kill)."""

    def __init__(self, sleep: float = 0.0):
        from propex.models import load_digits_data
        x, y = load_digits_data("test")
        self.x, self.y, self.sleep = x[:96].clone(), y[:96].clone(), sleep

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        if self.sleep:
            time.sleep(self.sleep)
        return self.x[i], self.y[i]


def make_dataset(sleep: float = 0.0):
    from propex.models import load_digits_model
    return load_digits_model(), SlowDigits(sleep)


def job_kwargs() -> dict:
    return dict(methods=["saliency", ("integrated_gradients", {"n_steps": 4})], metrics=["sparseness"],
                batch_size=16, chunk_size=8)

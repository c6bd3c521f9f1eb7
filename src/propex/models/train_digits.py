"""Reproducible training script for the packaged digits demo model.

Usage::

    python -m propex.models.train_digits [--out PATH] [--epochs E] [--seed S]

Trains :class:`propex.models.digits.DigitsCNN` on the training split of
:func:`propex.models.digits.load_digits_data` on CPU (Adam, cosine learning
rate decay, random shifts of up to ``--max-shift`` pixels as augmentation),
prints the loss per epoch and the final held-out test accuracy, and writes
the float32 state dict to ``--out`` (default: the packaged weights file).
Takes about 20 s on CPU (single thread).

Training is seeded and uses ``torch.use_deterministic_algorithms(True)``;
a single intra-op thread is used so that results do not depend on the
machine's core count.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from propex.models.digits import WEIGHTS_FILENAME, DigitsCNN, load_digits_data

DEFAULT_OUT = Path(__file__).resolve().parent / WEIGHTS_FILENAME


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image in ``x`` ``[N, C, H, W]`` by a random integer offset.

    Offsets are drawn uniformly from ``[-max_shift, max_shift]`` per axis and
    per image; pixels shifted in from outside the image are zero.
    """
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
    out = torch.empty_like(x)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy : dy + h, dx : dx + w]
    return out


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` that ``model`` (put in eval mode) classifies as ``y``."""
    model.eval()
    return (model(x).argmax(dim=1) == y).float().mean().item()


def train(
    epochs: int = 40,
    batch_size: int = 64,
    lr: float = 1e-3,
    max_shift: int = 1,
    seed: int = 0,
) -> DigitsCNN:
    """Train a :class:`DigitsCNN` on the digits training split and return it (eval mode)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    generator = torch.Generator().manual_seed(seed)

    x_train, y_train = load_digits_data("train")
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = -(-len(x_train) // batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)

    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total_loss = 0.0
        for start in range(0, len(x_train), batch_size):
            idx = order[start : start + batch_size]
            xb = random_shift(x_train[idx], max_shift, generator)
            loss = F.cross_entropy(model(xb), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(idx)
        train_acc = accuracy(model, x_train, y_train)
        print(f"epoch {epoch:3d}/{epochs}  loss {total_loss / len(x_train):.4f}  train acc {train_acc:.4f}")
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description="Train the propex digits demo CNN.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output state-dict file (default: {DEFAULT_OUT})")
    parser.add_argument("--epochs", type=int, default=40, help="number of epochs (default: 40)")
    parser.add_argument("--batch-size", type=int, default=64, help="mini-batch size (default: 64)")
    parser.add_argument("--lr", type=float, default=1e-3, help="initial Adam learning rate (default: 1e-3)")
    parser.add_argument("--max-shift", type=int, default=1, help="max random shift in pixels (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args(argv)

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    start = time.perf_counter()
    model = train(args.epochs, args.batch_size, args.lr, args.max_shift, args.seed)
    elapsed = time.perf_counter() - start

    x_test, y_test = load_digits_data("test")
    test_acc = accuracy(model, x_test, y_test)
    n_correct = round(test_acc * len(y_test))
    print(f"held-out test accuracy: {test_acc:.4f} ({n_correct}/{len(y_test)})  training time {elapsed:.1f} s")

    state = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in model.state_dict().items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.out)
    print(f"saved weights to {args.out} ({args.out.stat().st_size / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()

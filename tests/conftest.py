"""Shared fixtures: the demo model and data, a model snapshot for "left as found" checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same global RNG state (the methods are also seeded explicitly)."""
    torch.manual_seed(0)
    np.random.seed(0)
    yield


# Directories whose tests run many small-tensor passes: one intra-op thread there. On a shared
# 2-core machine torch's default thread pool made them 7-20x slower under load (measured: LRP-γ on
# resnet18 0.7 s vs 2-8 s; the CAM tests likewise).
_ONE_THREAD_DIRS = ("propagation", "cam", "perturbation", "evaluate", "text", "attention", "batch",
                    "higher_order", "gnn", "neuralize", "visualize", "report", "cli", "serve", "browser")


@pytest.fixture(autouse=True)
def _one_intra_op_thread(request):
    if request.path.parent.name not in _ONE_THREAD_DIRS:
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="session")
def digits_model() -> nn.Module:
    from propex.models import load_digits_model
    return load_digits_model()


@pytest.fixture(scope="session")
def digits_x() -> torch.Tensor:
    """Eight real held-out digits ``[8, 1, 16, 16]``."""
    pytest.importorskip("sklearn")
    from propex.models import load_digits_data
    return load_digits_data("test")[0][:8].clone()


@pytest.fixture(scope="session")
def digits_refs() -> torch.Tensor:
    """Twelve training digits, reference samples for expected gradients."""
    pytest.importorskip("sklearn")
    from propex.models import load_digits_data
    return load_digits_data("train")[0][:12].clone()


class ModelSnapshot:
    """Everything an explanation could change on a module, to compare before/after."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.state = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
        self.param_ids = [id(p) for p in model.parameters()]
        self.requires_grad = [p.requires_grad for p in model.parameters()]
        self.grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
        self.training = [m.training for m in model.modules()]
        self.hooks = [_hooks(m) for m in model.modules()]

    def assert_unchanged(self) -> None:
        model = self.model
        state = model.state_dict(keep_vars=True)
        assert state.keys() == self.state.keys()
        for key, value in state.items():
            before = self.state[key]
            assert value.dtype == before.dtype and value.shape == before.shape, key
            assert torch.equal(_bits(value), _bits(before)), f"{key} changed"
        assert [id(p) for p in model.parameters()] == self.param_ids, "parameters were replaced"
        assert [p.requires_grad for p in model.parameters()] == self.requires_grad
        for p, g in zip(model.parameters(), self.grads):
            if g is None:
                assert p.grad is None, "a parameter .grad was left behind"
            else:
                assert p.grad is not None and torch.equal(p.grad, g)
        assert [m.training for m in model.modules()] == self.training
        assert [_hooks(m) for m in model.modules()] == self.hooks, "hooks were left on the model"


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes of a tensor, for bit-identical comparison (NaN- and -0.0-safe)."""
    t = t.detach().contiguous().reshape(-1)
    return t.view(torch.uint8) if t.dtype.is_floating_point else t


def _hooks(m: nn.Module) -> tuple:
    return (dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks),
            dict(getattr(m, "_backward_pre_hooks", {})), len(getattr(m, "_forward_hooks_with_kwargs", {})))


@pytest.fixture
def model_snapshot():
    """``snap = model_snapshot(model); ...; snap.assert_unchanged()``."""
    return ModelSnapshot

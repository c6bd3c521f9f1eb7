"""Integrated Hessians on tabular data: which *pairs* of features act together?

A small MLP learns y = 2·x0·x1 + x2 − x3² + noise from 6 features (x4, x5 are irrelevant).
First-order attributions (Integrated Gradients) cannot say that x0 and x1 only matter
together; the interaction matrix of Integrated Hessians (Janizek et al., JMLR 2021) can.

    python examples/integrated_hessians_tabular.py
"""
from __future__ import annotations

import torch
from torch import nn

import propex


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x = torch.randn(2000, 6)
    y = 2 * x[:, 0] * x[:, 1] + x[:, 2] - x[:, 3] ** 2 + 0.05 * torch.randn(2000)
    # softplus, not ReLU: a ReLU net's Hessian is zero almost everywhere (or pass beta_smooth=)
    model = nn.Sequential(nn.Linear(6, 64), nn.Softplus(), nn.Linear(64, 64), nn.Softplus(), nn.Linear(64, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(600):
        opt.zero_grad()
        loss = ((model(x)[:, 0] - y) ** 2).mean()
        loss.backward()
        opt.step()
    model.eval()
    print(f"training MSE {loss.item():.3f}")

    samples = torch.randn(64, 6)
    exp = propex.explain(model, samples, "integrated_hessians", target=0, n_steps=32)
    gamma = exp.attributions                                     # [64, 6, 6]
    print(f"completeness |sum Γ - (f(x) - f(0))| <= {exp.delta.abs().max():.2e}")
    off = gamma - torch.diag_embed(gamma.diagonal(dim1=1, dim2=2))
    mean_abs = off.abs().mean(0)
    print("mean |Γ_ij| (i != j):")
    for i in range(6):
        print("  x%d " % i + " ".join(f"{v:6.3f}" for v in mean_abs[i].tolist()))
    i, j = divmod(int(mean_abs.argmax()), 6)
    print(f"strongest interaction: x{i} × x{j}")
    assert {i, j} == {0, 1}, "the planted interaction x0·x1 should dominate"

    ig = propex.explain(model, samples, "integrated_gradients", target=0, n_steps=64)
    print(f"rows of Γ sum to Integrated Gradients: max error {(gamma.sum(2) - ig.attributions).abs().max():.2e}")

    # groups: treat (x0, x1), (x2, x3), (x4, x5) as three features
    groups = torch.tensor([[0, 0, 1, 1, 2, 2]])
    grouped = propex.explain(model, samples[:4], "integrated_hessians", target=0, groups=groups)
    print("group interactions of sample 0 [3, 3]:\n", grouped.attributions[0].detach().numpy().round(3))


if __name__ == "__main__":
    main()

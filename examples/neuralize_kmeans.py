"""Explaining k-means cluster assignments with NEON (neuralization-propagation).

``propex.neuralize(kmeans)`` rewrites the fitted scikit-learn KMeans as a strictly equivalent
network: the evidence for cluster c, f_c(x) = min_{k≠c} ||x−μ_k||² − ||x−μ_c||², is a linear
layer (differences of squared distances are linear in x) followed by min-pooling
(Kauffmann et al., "From clustering to cluster explanations via neural networks").
NEON then propagates f_c back to the 64 pixels of each 8×8 digit.

    python examples/neuralize_kmeans.py            # prints a summary
    python examples/neuralize_kmeans.py out.png    # also saves the heatmaps (needs matplotlib)
"""
from __future__ import annotations

import sys

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits

import propex


def main(png: str | None = None) -> None:
    digits = load_digits()
    x = digits.data
    km = KMeans(n_clusters=10, n_init=4, random_state=0).fit(x)

    model = propex.neuralize(km)                              # hard min (β = ∞): the exact k-means decision
    xt = torch.tensor(x[:12])
    evidence = model(xt).detach()
    d2 = km.transform(x[:12]) ** 2
    expected = np.stack([np.min(np.delete(d2, c, 1) - d2[:, [c]], 1) for c in range(10)], 1)
    print(f"max |network - sklearn| = {np.abs(evidence.numpy() - expected).max():.2e}; "
          f"same assignments: {(evidence.argmax(1).numpy() == km.predict(x[:12])).all()}")

    exp = propex.explain(model, xt, "neon")                   # explains the assigned cluster
    print(f"relevance sums to the evidence: max |delta| = {exp.delta.abs().max():.2e}")
    soft = propex.explain(propex.neuralize(km, beta=0.01), xt, "neon")   # soft min: all rival clusters count
    for i in range(4):
        r = exp.attributions[i].reshape(8, 8)
        print(f"digit {digits.target[i]} -> cluster {int(exp.target[i])}, evidence {float(evidence[i].max()):.1f}, "
              f"most relevant pixel {divmod(int(r.argmax()), 8)}")

    if png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(3, 6, figsize=(9, 4.8))
        for i in range(6):
            axes[0, i].imshow(x[i].reshape(8, 8), cmap="gray_r")
            axes[0, i].set_title(f"cluster {int(exp.target[i])}", fontsize=8)
            for row, e in ((1, exp), (2, soft)):
                r = e.attributions[i].reshape(8, 8).numpy()
                lim = np.abs(r).max() or 1.0
                axes[row, i].imshow(r, cmap="bwr", vmin=-lim, vmax=lim)
        axes[1, 0].set_ylabel("NEON, hard min", fontsize=8)
        axes[2, 0].set_ylabel("NEON, β=0.01", fontsize=8)
        for ax in axes.ravel():
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        fig.savefig(png, dpi=100)
        print(f"saved {png}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)

"""GNN-LRP on the seed's example: why is a Barabási–Albert graph a "tree" (m=1) or "not tree" (m=2)?

Trains a small GIN (plain PyTorch, dense adjacency) in about a second, then prints and draws the
most relevant walks of one graph of each class. Run: ``python examples/gnn_ba_walks.py [out_dir]``.
"""
import os
import sys

import torch

from propex.gnn import draw_walks, node_relevance, relevant_walks
from propex.gnn.ba import train_ba_classifier

out = sys.argv[1] if len(sys.argv) > 1 else "gnn-walks"
os.makedirs(out, exist_ok=True)
model, adjacency, labels, accuracy = train_ba_classifier(seed=0)
print(f"test accuracy {accuracy:.3f}")
names = ["tree", "not tree"]
for label in (0, 1):
    g = int((labels == label).nonzero()[0])
    x = torch.ones(adjacency.shape[1], 1)
    walks = relevant_walks(model, x, adjacency[g], target=label, layers=model.layer_names, composite="gamma")
    print(f"\ngraph {g} ({names[label]}): {len(walks)} walks, sum {sum(walks.values()):.4f} "
          f"= f {model(x[None], adjacency[g][None])[0, label].item():.4f}")
    for walk, rel in list(walks.items())[:5]:
        print(f"  walk {' -> '.join(map(str, walk))}: {rel:+.4f}")
    print("  node relevance:", [round(v, 3) for v in node_relevance(model, x, adjacency[g], target=label,
                                                                     composite="gamma").tolist()])
    path = os.path.join(out, f"walks_{names[label].replace(' ', '_')}.png")
    draw_walks(adjacency[g], walks, top=8, title=f"evidence for '{names[label]}'").save(path)
    print("  wrote", path)

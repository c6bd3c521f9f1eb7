"""Timing of the propagation methods against Zennit, Captum and the autograd floor.

For torchvision ``resnet18`` and ``vgg16`` (random weights, 224², batch 1 and 8) prints the
median time of

* the floor: one forward + one backward (gradient of the target logits w.r.t. the input);
* propex LRP ``epsilon_plus_flat`` and Zennit's ``EpsilonPlusFlat`` (with its torchvision
  canonizer), and Captum's ``LRP`` where it runs;
* propex DeepLIFT (Rescale) and Captum's ``DeepLift`` where it runs;

and the ratios propex/floor and reference/propex. Run: ``python benchmarks/bench_propagation.py``
(``--quick`` for fewer repeats, ``--json out.json`` to save the numbers).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch
import torchvision

import propex


def median_time(fn, repeats: int) -> float:
    fn()                                   # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def floor(model, x, target):
    leaf = x.clone().requires_grad_()
    out = model(leaf)
    torch.autograd.grad(out.gather(1, target[:, None]).sum(), leaf)


def zennit_lrp(model, x, target, canonizer):
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat
    with Gradient(model=model, composite=EpsilonPlusFlat(canonizers=[canonizer()])) as attributor:
        attributor(x, lambda o: torch.nn.functional.one_hot(target, o.shape[1]) * o)


def captum(cls, model, x, target):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cls(model).attribute(x, target=target)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else args.repeats
    from captum.attr import LRP as CaptumLRP, DeepLift as CaptumDeepLift
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {repeats} repeats (median)")
    rows = []
    header = f"{'model':<9} {'N':>2} {'method':<18} {'propex s':>9} {'floor s':>8} {'/floor':>7} {'reference':<14} {'ref s':>8} {'ref/propex':>10}"
    print(header)
    print("-" * len(header))
    for name, canonizer in (("resnet18", ResNetCanonizer), ("vgg16", VGGCanonizer)):
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).eval()
        for n in args.batches:
            x = torch.randn(n, 3, 224, 224)
            with torch.no_grad():
                target = model(x).argmax(1)
            t_floor = median_time(lambda: floor(model, x, target), repeats)
            cases = [
                ("lrp eps+flat", lambda: propex.explain(model, x, "lrp", target=target, composite="epsilon_plus_flat"),
                 [("zennit", lambda: zennit_lrp(model, x, target, canonizer)),
                  ("captum LRP", lambda: captum(CaptumLRP, model, x, target))]),
                ("deeplift rescale", lambda: propex.explain(model, x, "deeplift", target=target),
                 [("captum DeepLift", lambda: captum(CaptumDeepLift, model, x, target))]),
            ]
            for method, ours, references in cases:
                t_ours = median_time(ours, repeats)
                for ref_name, ref in references:
                    try:
                        t_ref = median_time(ref, repeats)
                        ref_text = f"{t_ref:8.3f} {t_ref / t_ours:10.2f}"
                    except Exception as err:  # the references raise on some architectures
                        t_ref, ref_text = None, f"{'raises':>8} {type(err).__name__:>10}"
                    print(f"{name:<9} {n:>2} {method:<18} {t_ours:9.3f} {t_floor:8.3f} {t_ours / t_floor:7.2f} "
                          f"{ref_name:<14} {ref_text}")
                    rows.append({"model": name, "batch": n, "method": method, "propex_s": t_ours, "floor_s": t_floor,
                                 "reference": ref_name, "reference_s": t_ref})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return rows


if __name__ == "__main__":
    main()

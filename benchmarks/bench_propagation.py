"""Timing of the propagation methods against Zennit, Captum and the autograd floor.

For torchvision ``resnet18`` and ``vgg16`` (random weights, 224², batch 1 and 8) prints the
median time of

* the floor: one forward + one backward (gradient of the target logits w.r.t. the input);
* propex LRP ``epsilon_plus_flat`` and Zennit's ``EpsilonPlusFlat`` (with its torchvision
  canonizer), and Captum's ``LRP`` where it runs;
* propex DeepLIFT (Rescale) and Captum's ``DeepLift`` where it runs;

and the ratios propex/floor and reference/propex (from process CPU time; wall time is printed
beside it). It also times one forward pass alone (F) and prints propex/(floor + F): both LRP's z⁺
rule (the true output and z⁺ = Σ x w⁺ are two different convolutions of the same input) and
DeepLIFT (the reference rows) need one more forward pass than the floor, so floor + F is the
least an exact implementation can cost; with F ≈ B on CPU that bound is itself about 1.5× the floor. Run: ``python benchmarks/bench_propagation.py`` (``--quick`` for fewer repeats,
``--threads N`` (default 1), ``--models``, ``--batches``, ``--json out.json`` to save the numbers).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings

import torch
import torchvision

import propex


def median_time(fn, repeats: int) -> tuple[float, float]:
    """Median wall time and median process CPU time of ``fn`` (after one warm-up call).

    CPU time is much less sensitive to other processes on a shared machine; with one intra-op
    thread it is the work done, which is what the ratios against the floor are about."""
    fn()                                   # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def floor(model, x, target):
    leaf = x.clone().requires_grad_()
    out = model(leaf)
    torch.autograd.grad(out.gather(1, target[:, None]).sum(), leaf)


def forward_only(model, x):
    with torch.no_grad():
        model(x)


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
    parser.add_argument("--models", nargs="+", default=["resnet18", "vgg16"])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: robust on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else args.repeats
    from captum.attr import LRP as CaptumLRP, DeepLift as CaptumDeepLift
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer
    canonizers = {"resnet18": ResNetCanonizer, "vgg16": VGGCanonizer}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {repeats} repeats (median), "
          f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("times in seconds as wall / process CPU; ratios from CPU time")
    rows = []
    header = (f"{'model':<9} {'N':>2} {'method':<17} {'propex':>13} {'floor':>13} {'/floor':>6} {'/bound':>6}  "
              f"{'reference':<15} {'ref':>13} {'ref/propex':>10}")
    print(header)
    print("-" * len(header))
    for name in args.models:
        canonizer = canonizers[name]
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).eval()
        for n in args.batches:
            x = torch.randn(n, 3, 224, 224)
            with torch.no_grad():
                target = model(x).argmax(1)
            cases = [
                ("lrp eps+flat", lambda: propex.explain(model, x, "lrp", target=target, composite="epsilon_plus_flat"),
                 [("zennit", lambda: zennit_lrp(model, x, target, canonizer)),
                  ("captum LRP", lambda: captum(CaptumLRP, model, x, target))]),
                ("deeplift rescale", lambda: propex.explain(model, x, "deeplift", target=target),
                 [("captum DeepLift", lambda: captum(CaptumDeepLift, model, x, target))]),
            ]
            for method, ours, references in cases:
                # the floor is re-timed next to each method, so that drifting load hits both alike
                f_wall, f_cpu = median_time(lambda: floor(model, x, target), repeats)
                o_wall, o_cpu = median_time(ours, repeats)
                _, fwd_cpu = median_time(lambda: forward_only(model, x), repeats)
                bound = f_cpu + fwd_cpu
                for ref_name, ref in references:
                    try:
                        r_wall, r_cpu = median_time(ref, repeats)
                        ref_text = f"{r_wall:6.3f}/{r_cpu:6.3f} {r_cpu / o_cpu:10.2f}"
                    except Exception as err:  # the references raise on some architectures
                        r_wall = r_cpu = None
                        ref_text = f"{'raises':>13} {type(err).__name__:>10}"
                    print(f"{name:<9} {n:>2} {method:<17} {o_wall:6.3f}/{o_cpu:6.3f} {f_wall:6.3f}/{f_cpu:6.3f} "
                          f"{o_cpu / f_cpu:6.2f} {o_cpu / bound:6.2f}  {ref_name:<15} {ref_text}")
                    rows.append({"model": name, "batch": n, "method": method, "propex_wall_s": o_wall,
                                 "propex_cpu_s": o_cpu, "floor_wall_s": f_wall, "floor_cpu_s": f_cpu,
                                 "forward_cpu_s": fwd_cpu, "bound_cpu_s": bound,
                                 "reference": ref_name, "reference_wall_s": r_wall, "reference_cpu_s": r_cpu})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return rows


if __name__ == "__main__":
    main()

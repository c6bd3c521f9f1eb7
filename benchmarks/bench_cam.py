"""Side-by-side timing of propex's CAM methods against pytorch-grad-cam, Captum and the floor.

Run from the repository root::

    python benchmarks/bench_cam.py                      # resnet18 224², batch 1 and 8, median of 5
    python benchmarks/bench_cam.py --quick              # 2 repeats
    python benchmarks/bench_cam.py --batches 1 --methods gradcam,scorecam --json cam.json

On torchvision ``resnet18`` (random weights, seeded, eval mode; nothing is downloaded) at
224x224, for batch 1 and batch 8 (``--batches``), with explicit targets:

* ``gradcam``, ``gradcam_pp``, ``hirescam``, ``layercam``: propex through the class API (the
  method object built once, as pytorch-grad-cam's object is) and through ``propex.explain``,
  both with ``normalize=True`` so that the output is pytorch-grad-cam's (ReLU, bilinear resize
  to 224², per-map min-max); pytorch-grad-cam's class of the same name on ``model.layer4[-1]``
  (the layer propex picks by default); for ``gradcam`` also Captum's ``LayerGradCam`` +
  ``LayerAttribution.interpolate``. The *floor* is one forward pass with the layer's output
  captured by a hook plus ``torch.autograd.grad`` of the summed target logits w.r.t. that output
  (pytorch-grad-cam instead calls ``loss.backward()``, which also computes every parameter's
  gradient).
* ``guided_gradcam``: propex (``interpolation="nearest"``, Captum's default) against Captum's
  ``GuidedGradCam``; floor = the gradcam floor + one forward/backward to the input.
  (pytorch-grad-cam has no batched guided Grad-CAM: its ``GuidedBackpropReLUModel`` swaps the
  model's ReLU modules in place and takes one image.)
* ``scorecam``: one forward pass per channel (512 at ``layer4``) and sample, so it runs at a
  smaller input, ``--scorecam-size`` (default 96², batch 1 only unless ``--scorecam-batches``);
  propex against pytorch-grad-cam's ``ScoreCAM`` (its default ``batch_size=16``; its tqdm
  progress bar is switched off). The floor is the same N·(C+1) forward passes under
  ``torch.no_grad`` at the fastest batch size among 8, 16, 32 and 64 (chosen by one timing each).

Before timing, each method's output is compared with the reference's (printed). Each variant
runs once to warm up, then ``--repeats`` times round-robin; medians of wall time
(``time.perf_counter``) and of process CPU time are printed. ``--threads`` defaults to 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from typing import Any, Callable

import numpy as np
import torch

import propex

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_gradient import machine_info, time_variants  # noqa: E402  (the same timing harness)

GRADIENT_CAMS = {"gradcam": "GradCAM", "gradcam_pp": "GradCAMPlusPlus", "hirescam": "HiResCAM",
                 "layercam": "LayerCAM"}
METHODS = [*GRADIENT_CAMS, "guided_gradcam", "scorecam"]


def resnet18() -> torch.nn.Module:
    import torchvision
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def batch(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))
    return x, torch.arange(n) * 97 % 1000           # explicit, distinct targets


def layer_floor(model: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor, target: torch.Tensor
                ) -> Callable[[], Any]:
    """One forward pass capturing the layer's output, and the gradient of the target logits w.r.t. it."""
    def run() -> Any:
        store = {}
        handle = layer.register_forward_hook(lambda m, a, out: store.setdefault("a", out))
        try:
            with torch.enable_grad():
                out = model(x)
                return torch.autograd.grad(out.gather(1, target[:, None]).sum(), store["a"])[0]
        finally:
            handle.remove()
    return run


def input_floor(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> Callable[[], Any]:
    def run() -> Any:
        leaf = x.detach().requires_grad_()
        out = model(leaf)
        return torch.autograd.grad(out.gather(1, target[:, None]).sum(), leaf)[0]
    return run


def pgc_cam(name: str, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> Callable[[], np.ndarray]:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    cam = getattr(pytorch_grad_cam, name)(model=model, target_layers=[model.layer4[-1]])
    targets = [ClassifierOutputTarget(int(t)) for t in target]
    return lambda: cam(input_tensor=x, targets=targets)


def forward_floor(model: torch.nn.Module, x: torch.Tensor, rows: int) -> tuple[Callable[[], Any], int]:
    """``rows`` forward passes of x's rows under no_grad at the fastest of a few batch sizes."""
    def make(b: int) -> Callable[[], Any]:
        chunk = x[:1].expand(b, *x.shape[1:]).contiguous()
        full, rest = divmod(rows, b)
        tail = chunk[:rest]

        def run() -> None:
            with torch.no_grad():
                for _ in range(full):
                    model(chunk)
                if rest:
                    model(tail)
        return run
    best, best_t = 8, float("inf")
    for b in (8, 16, 32, 64):
        fn = make(b)
        with torch.no_grad():
            model(x[:1].expand(b, *x.shape[1:]).contiguous())       # warm-up of this shape
        t0 = time.perf_counter()
        fn()
        t = time.perf_counter() - t0
        if t < best_t:
            best, best_t = b, t
    return make(best), best


def variants(method: str, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor
             ) -> tuple[dict[str, Callable[[], Any]], str, str]:
    """The timed callables, the name of the reference variant and a note."""
    opts = {"normalize": True}
    note = ""
    if method in GRADIENT_CAMS:
        extra = {"eps": 1e-6} if method == "gradcam_pp" else {}
        obj = propex.get_method(method)(model, **opts, **extra)
        v = {"propex class": lambda: obj.attribute(x, target=target),
             "propex explain": lambda: propex.explain(model, x, method, target=target, **opts, **extra),
             "pytorch-grad-cam": pgc_cam(GRADIENT_CAMS[method], model, x, target),
             "floor": layer_floor(model, model.layer4[-1], x, target)}
        if method == "gradcam":
            from captum.attr import LayerAttribution, LayerGradCam
            lgc = LayerGradCam(model, model.layer4)
            size = tuple(x.shape[-2:])
            v["captum"] = lambda: LayerAttribution.interpolate(
                lgc.attribute(x, target=target, relu_attributions=True), size, "bilinear")
        return v, "pytorch-grad-cam", note
    if method == "guided_gradcam":
        from captum.attr import GuidedGradCam
        obj = propex.get_method(method)(model, interpolation="nearest")
        ggc = GuidedGradCam(model, model.layer4)
        lf, inf = layer_floor(model, model.layer4[-1], x, target), input_floor(model, x, target)
        v = {"propex class": lambda: obj.attribute(x, target=target),
             "propex explain": lambda: propex.explain(model, x, method, target=target, interpolation="nearest"),
             "captum": lambda: ggc.attribute(x, target=target),
             "floor": lambda: (lf(), inf())}
        return v, "captum", note
    if method == "scorecam":
        obj = propex.get_method(method)(model, normalize=True, upsample=False, align_corners=True)
        n_channels = 512
        floor, best = forward_floor(model, x, x.shape[0] * (n_channels + 1))
        v = {"propex class": lambda: obj.attribute(x, target=target),
             "pytorch-grad-cam": pgc_cam("ScoreCAM", model, x, target),
             "floor": floor}
        note = f"floor batch size {best}; propex with align_corners=True, upsample=False (pytorch-grad-cam's masks)"
        return v, "pytorch-grad-cam", note
    raise ValueError(method)


def agreement(method: str, v: dict[str, Callable[[], Any]], ref_name: str, size: int) -> str:
    ours = v["propex class"]()
    ref = v[ref_name]()
    ref = torch.as_tensor(ref) if isinstance(ref, np.ndarray) else ref.detach()
    if method == "scorecam":          # propex at layer resolution; resize and normalise as pytorch-grad-cam
        from propex.cam.base import min_max
        ours = min_max(torch.nn.functional.interpolate(ours, size=(size, size), mode="bilinear"))
    if ours.dim() == 4 and ours.shape[1] == 1 and ref.dim() == 3:
        ours = ours[:, 0]
    diff = float((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
    return f"max|propex - {ref_name}| / max|{ref_name}| = {diff:.1e}"


def disable_tqdm() -> None:
    """pytorch-grad-cam's ScoreCAM prints a progress bar per sample; make tqdm a no-op there."""
    import pytorch_grad_cam.score_cam as score_cam

    class _Quiet:
        @staticmethod
        def tqdm(it, *args, **kwargs):
            return it
    score_cam.tqdm = _Quiet


def fmt(s: float) -> str:
    return f"{s:.4f}" if s < 1 else f"{s:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (default 5; 2 with --quick)")
    parser.add_argument("--quick", action="store_true", help="2 repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--batches", default="1,8", help="batch sizes for the gradient CAMs (default 1,8)")
    parser.add_argument("--size", type=int, default=224, help="input size for the gradient CAMs (default 224)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    parser.add_argument("--scorecam-size", type=int, default=96, help="input size for Score-CAM (default 96)")
    parser.add_argument("--scorecam-batches", default="1", help="batch sizes for Score-CAM (default 1)")
    parser.add_argument("--json", metavar="PATH", help="write all figures (raw timings included) as JSON")
    args = parser.parse_args(argv)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    repeats = args.repeats or (2 if args.quick else 5)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")               # Captum's notes on hooks and requires_grad
    disable_tqdm()
    info = machine_info(args.threads)
    import pytorch_grad_cam
    info["pytorch_grad_cam"] = getattr(pytorch_grad_cam, "__version__", "1.5.x")
    print(f"propex CAM benchmark: torch {info['torch']}, captum {info['captum']}, python {info['python']}")
    print(f"machine: {info['cores']} cores ({info['cpu']}); torch.set_num_threads({args.threads}); "
          f"median of {repeats} round-robin repeats after a warm-up")
    load0 = os.getloadavg()
    print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    model = resnet18()
    results = []
    start = time.perf_counter()
    for method in methods:
        sizes = ([(b, args.scorecam_size) for b in map(int, args.scorecam_batches.split(","))]
                 if method == "scorecam" else [(b, args.size) for b in map(int, args.batches.split(","))])
        for n, size in sizes:
            x, target = batch(n, size)
            v, ref_name, note = variants(method, model, x, target)
            agree = agreement(method, v, ref_name, size)
            t0 = time.perf_counter()
            timings = time_variants(v, repeats)
            print(f"  {method:<15} N={n} {size}²: {agree}; {time.perf_counter() - t0:.0f} s"
                  + (f" ({note})" if note else ""))
            results.append({"method": method, "n": n, "size": size, "reference": ref_name, "agreement": agree,
                            "note": note, "timings": timings})

    header = ("method", "N", "size", "variant", "wall s", "cpu s", "/floor", "/reference", "cpu /floor",
              "cpu /reference")
    rows = []
    for res in results:
        t = res["timings"]
        f, fc = t["floor"]["median_s"], t["floor"]["cpu_median_s"]
        r, rc = t[res["reference"]]["median_s"], t[res["reference"]]["cpu_median_s"]
        for name, tv in t.items():
            rows.append({"method": res["method"], "n": res["n"], "size": res["size"], "variant": name,
                         "wall_s": tv["median_s"], "cpu_s": tv["cpu_median_s"], "over_floor": tv["median_s"] / f,
                         "over_reference": tv["median_s"] / r, "cpu_over_floor": tv["cpu_median_s"] / fc,
                         "cpu_over_reference": tv["cpu_median_s"] / rc})
    cells = [header] + [(r["method"], str(r["n"]), str(r["size"]), r["variant"], fmt(r["wall_s"]), fmt(r["cpu_s"]),
                         f"{r['over_floor']:.2f}", f"{r['over_reference']:.2f}", f"{r['cpu_over_floor']:.2f}",
                         f"{r['cpu_over_reference']:.2f}") for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print("\n" + line)
    for k, c in enumerate(cells):
        print("  ".join(s.ljust(w) if i in (0, 3) else s.rjust(w) for i, (s, w) in enumerate(zip(c, widths))))
        if k == 0:
            print(line)
    print(line)
    load1 = os.getloadavg()
    total = time.perf_counter() - start
    print(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}; total {total:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": info, "repeats": repeats, "load_start": load0, "load_end": load1, "total_s": total,
                       "results": results, "table": rows}, fh, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

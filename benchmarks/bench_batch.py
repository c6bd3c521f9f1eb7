"""Throughput of ``propex.batch.explain_dataset``: the local engine against a bare loop, and Ray against local.

Run from the repository root::

    python benchmarks/bench_batch.py                     # both workloads, local + ray, 3 repeats
    python benchmarks/bench_batch.py --quick --no-ray    # smaller, no Ray

Workloads (nothing is downloaded; random weights are seeded):

* ``digits``: the demo model on the 450 held-out digits ``[1, 16, 16]``, integrated gradients
  (``n_steps=16``), batches of 50;
* ``resnet18``: torchvision ``resnet18`` (random weights, eval mode) on 96 random images
  ``[3, 112, 112]``, saliency, batches of 16.

Variants, each given the same batches:

* ``bare``: ``for x in batches: propex.explain(model, x, method, **options)`` and nothing else
  (the results are dropped);
* ``local``: ``explain_dataset(..., engine="local")`` into a fresh Zarr store (attributions,
  targets, outputs, manifest): the store and bookkeeping cost is ``1 - local/bare`` throughput;
* ``ray``: ``explain_dataset(..., engine="ray", ray_options={"num_workers": 2})`` on a local Ray
  started once (``ray.init(num_cpus=2)``, not timed), 1 torch thread per actor; the time includes
  the actors' start (model shipping, imports) — Ray's per-job overhead.

Wall time and CPU time (this process; for Ray the actors' CPU time as they report it) are
medians over ``--repeats``; throughput = samples / wall second. ``bare`` and ``local`` run with
``--threads`` torch threads (default 1).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import propex  # noqa: E402
import propex.batch as pb  # noqa: E402


def workloads(quick: bool, scale: int = 1):
    from propex.models import load_digits_data, load_digits_model

    x = load_digits_data("test")[0]
    n = 200 if quick else 450
    yield "digits", load_digits_model(), x[:n].repeat(scale, 1, 1, 1), "integrated_gradients", {"n_steps": 16}, 50
    import torchvision

    from propex.models.random_init import randomize_batch_norm

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    randomize_batch_norm(model)
    n = (48 if quick else 96) * scale
    yield "resnet18", model, torch.rand(n, 3, 112, 112, generator=torch.Generator().manual_seed(0)), "saliency", {}, 16


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    extra_cpu = fn() or 0.0
    return time.perf_counter() - t0, time.process_time() - c0 + extra_cpu


def bare(model, x, method, options, bs):
    def go():
        for i in range(0, len(x), bs):
            propex.explain(model, x[i:i + bs], method, **options)
    return go


RAY_EXTRA: list[dict] = []


def engine(model, x, method, options, bs, engine_name, root):
    def go():
        store = os.path.join(root, f"{engine_name}-{time.perf_counter_ns()}.zarr")
        run = pb.explain_dataset(model, x, [(method, options)], store, batch_size=bs, engine=engine_name,
                                 progress=False, ray_options={"num_workers": 2} if engine_name == "ray" else None)
        assert run.complete
        if engine_name == "ray":
            RAY_EXTRA.append(dict(run.extra, n=run.samples_computed))
        shutil.rmtree(store, ignore_errors=True)
        return run.extra.get("worker_cpu_seconds", 0.0)     # Ray actors; this process is timed by timed()
    return go


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--scale", type=int, default=1,
                    help="K times more samples per job (digits: the test set repeated): Ray's fixed actor start "
                         "is amortised over longer jobs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = tempfile.mkdtemp(prefix="bench_batch_")
    if not args.no_ray:
        import ray
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    results = {"load_average": os.getloadavg(), "cpus": os.cpu_count(), "threads": args.threads}
    try:
        for name, model, x, method, options, bs in workloads(args.quick, args.scale):
            propex.explain(model, x[:bs], method, **options)          # warm-up
            variants = {"bare": bare(model, x, method, options, bs),
                        "local": engine(model, x, method, options, bs, "local", root)}
            if not args.no_ray:
                variants["ray"] = engine(model, x, method, options, bs, "ray", root)
            times: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
            for _ in range(args.repeats):                               # round-robin against drifting load
                for k, fn in variants.items():
                    times[k].append(timed(fn))
            row = {}
            for k, ts in times.items():
                wall = statistics.median(t for t, _ in ts)
                cpu = statistics.median(c for _, c in ts)
                row[k] = {"wall_s": wall, "cpu_s": cpu, "samples_per_s": len(x) / wall, "best_wall_s": min(t for t, _ in ts)}
            row["local_vs_bare"] = row["local"]["samples_per_s"] / row["bare"]["samples_per_s"]
            row["local_vs_bare_cpu"] = row["bare"]["cpu_s"] / row["local"]["cpu_s"]
            row["local_vs_bare_best"] = row["bare"]["best_wall_s"] / row["local"]["best_wall_s"]
            if "ray" in row:
                row["ray_vs_local"] = row["ray"]["samples_per_s"] / row["local"]["samples_per_s"]
                row["ray_vs_local_best"] = row["local"]["best_wall_s"] / row["ray"]["best_wall_s"]
            if "ray" in row:                 # after the actors are up: Ray's steady-state throughput
                steady = [(e["n"] - e["first_samples"]) / e["steady_s"] for e in RAY_EXTRA if e.get("steady_s")]
                row["ray"]["startup_s"] = statistics.median(e["startup_s"] for e in RAY_EXTRA)
                row["ray"]["steady_samples_per_s"] = statistics.median(steady)
                row["ray_steady_vs_local"] = row["ray"]["steady_samples_per_s"] / row["local"]["samples_per_s"]
                RAY_EXTRA.clear()
            results[name] = row
            print(f"{name}: N={len(x)} {method} {options} batch {bs}")
            for k in variants:
                r = row[k]
                print(f"  {k:<6} {r['samples_per_s']:8.1f} samples/s  wall {r['wall_s']:.2f} s (best {r['best_wall_s']:.2f})"
                      f"  cpu {r['cpu_s']:.2f} s")
            print(f"  local/bare throughput {row['local_vs_bare']:.3f} (best-of {row['local_vs_bare_best']:.3f}, "
                  f"cpu {row['local_vs_bare_cpu']:.3f})" +
                  (f"; ray/local {row['ray_vs_local']:.3f} (best-of {row['ray_vs_local_best']:.3f}; after the "
                   f"{row['ray']['startup_s']:.1f} s actor start: {row['ray_steady_vs_local']:.3f})" if "ray" in row else ""))
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if not args.no_ray:
            import ray
            ray.shutdown()
    print(f"load average during the run: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

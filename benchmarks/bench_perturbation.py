"""Side-by-side timing of propex's occlusion against Captum and the forward-pass floor.

Run from the repository root::

    python benchmarks/bench_perturbation.py                  # one thread, median of 5 repeats
    python benchmarks/bench_perturbation.py --quick          # 3 repeats, fewer calibration candidates
    python benchmarks/bench_perturbation.py --threads 2 --json results.json

On torchvision's resnet18 (random weights, one 3x224x224 input, an explicit target) it
times occlusion with 32-px windows and strides (7 x 7 = 49 perturbations) and with 16-px
ones (14 x 14 = 196):

* propex with its default settings, through the class API
  (``Occlusion(model, window=(32, 32), stride=(32, 32)).attribute(x, target=t)`` with
  ``from propex.perturbation import Occlusion``) and
  through ``propex.explain``;
* Captum's ``Occlusion`` with the same window, stride and (zero) baseline, with its default
  ``perturbations_per_eval=1`` and with its best value (calibrated);
* the *floor*: the same number of forward passes (49 or 196 rows of the input) run as plain
  ``torch.no_grad()`` model calls at the best batch size (calibrated over several sizes).

Calibration: each candidate batch size of the floor and each candidate
``perturbations_per_eval`` of Captum runs once after a warm-up; the two fastest of each go
into the timed set, and the table uses the faster median. Timed variants are interleaved
round-robin (so load from other processes hits all of them alike); the table shows medians
of wall time (``time.perf_counter``) and of process CPU time, which is much less sensitive
to other processes on a shared machine. propex's and Captum's attributions are compared
before timing (the printed relative difference). Floor and Captum do not include the
first forward pass on x that both libraries need for f(x); propex's time does.

No weights are downloaded: resnet18 is built with ``weights=None``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from typing import Any, Callable

import torch

import propex
from propex.perturbation import Occlusion

try:
    import captum
    from captum.attr import Occlusion as CaptumOcclusion
except ImportError:  # pragma: no cover - depends on the environment
    captum = None

from bench_gradient import fmt_s, machine_info, time_variants  # noqa: E402  (same directory)

WINDOWS = (32, 16)


def resnet18_case() -> tuple[torch.nn.Module, torch.Tensor, int]:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        t = int(model(x).argmax(dim=1)[0])
    return model, x, t


def floor_fn(model: torch.nn.Module, x: torch.Tensor, n_rows: int, batch: int) -> Callable[[], Any]:
    rows = x.repeat(n_rows, 1, 1, 1).contiguous()

    def run() -> None:
        with torch.no_grad():
            for start in range(0, n_rows, batch):
                model(rows[start:start + batch])
    return run


def captum_fn(model: torch.nn.Module, x: torch.Tensor, t: int, window: int, ppe: int) -> Callable[[], Any]:
    occ = CaptumOcclusion(model)
    return lambda: occ.attribute(x, sliding_window_shapes=(3, window, window), strides=(3, window, window),
                                 baselines=0, target=t, perturbations_per_eval=ppe)


def calibrate(candidates: dict[str, Callable[[], Any]], keep: int = 2) -> tuple[list[str], dict[str, float]]:
    """One warm-up and one timed (CPU time) run of each candidate; the ``keep`` fastest names."""
    times = {}
    for name, fn in candidates.items():
        fn()
        c0 = time.process_time()
        fn()
        times[name] = time.process_time() - c0
    return sorted(times, key=times.get)[:keep], times


def run_case(model: torch.nn.Module, x: torch.Tensor, t: int, window: int, repeats: int,
             quick: bool) -> dict[str, Any]:
    k = (224 // window) ** 2
    opts = dict(window=(window, window), stride=(window, window))
    ours = Occlusion(model, **opts)
    prep = ours.engine.prepare(x, t)
    chunk = ours.engine.chunk(prep, k)
    a = ours.attribute(x, target=t)
    b = captum_fn(model, x, t, window, 16)()
    agreement = float((a - b).abs().max() / b.abs().max())
    print(f"\nocclusion {window}-px window and stride: {k} perturbations; propex default chunk {chunk} rows "
          f"({prep.bytes_per_row / 2**20:.1f} MiB measured per row); max|propex - captum| / max|captum| = "
          f"{agreement:.1e}")

    sizes = [1, 4, 8, 16, k] if quick else [1, 2, 4, 8, 12, 16, 24, 32, k]
    sizes = sorted({s for s in sizes if s <= k})
    floor_best, floor_cal = calibrate({f"floor bs={s}": floor_fn(model, x, k, s) for s in sizes})
    ppes = [1, 8, 16, k] if quick else [1, 4, 8, 16, 32, k]
    ppes = sorted({p for p in ppes if p <= k})
    captum_best, captum_cal = calibrate({f"captum ppe={p}": captum_fn(model, x, t, window, p) for p in ppes})
    print("  calibration (one run, CPU s): " + ", ".join(f"{n} {v:.2f}" for n, v in {**floor_cal, **captum_cal}.items()))

    variants: dict[str, Callable[[], Any]] = {
        "propex default": lambda: Occlusion(model, **opts).attribute(x, target=t),
        "propex explain": lambda: propex.explain(model, x, "occlusion", target=t, **opts),
        "captum ppe=1": captum_fn(model, x, t, window, 1),
    }
    for name in captum_best:
        variants[name] = captum_fn(model, x, t, window, int(name.split("=")[1]))
    for name in floor_best:
        variants[name] = floor_fn(model, x, k, int(name.split("=")[1]))
    t0 = time.perf_counter()
    timings = time_variants(variants, repeats, min_block=0.0)
    print(f"  timed {len(variants)} variants x {repeats} repeats in {time.perf_counter() - t0:.0f} s")
    return {"window": window, "perturbations": k, "propex_chunk": chunk, "bytes_per_row": prep.bytes_per_row,
            "agreement": agreement, "calibration_cpu_s": {**floor_cal, **captum_cal}, "timings": timings}


def best(timings: dict[str, dict[str, Any]], prefix: str, key: str) -> tuple[str, float]:
    name = min((n for n in timings if n.startswith(prefix)), key=lambda n: timings[n][key])
    return name, timings[name][key]


def print_table(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every timed variant; ratios to the fastest floor and the fastest Captum setting (each by
    wall time for the wall column and by CPU time for the CPU columns)."""
    header = ("case", "variant", "wall s", "cpu s", "/floor wall", "/floor cpu", "/captum-best cpu")
    rows, cells = [], [header]
    for res in results:
        t = res["timings"]
        _, floor_wall = best(t, "floor", "median_s")
        floor_name, floor_cpu = best(t, "floor", "cpu_median_s")
        cap_name, cap_cpu = best(t, "captum ppe", "cpu_median_s")
        case = f"{res['window']}px/{res['perturbations']}"
        for name in t:
            wall, cpu = t[name]["median_s"], t[name]["cpu_median_s"]
            row = {"case": case, "variant": name, "wall_s": wall, "cpu_s": cpu, "over_floor_wall": wall / floor_wall,
                   "over_floor_cpu": cpu / floor_cpu, "over_captum_best_cpu": cpu / cap_cpu}
            rows.append(row)
            label = name + (" (best cpu)" if name in (cap_name, floor_name) else "")
            label += f" (chunk {res['propex_chunk']})" if name == "propex default" else ""
            cells.append((case, label, fmt_s(wall), fmt_s(cpu), f"{wall / floor_wall:.3f}", f"{cpu / floor_cpu:.3f}",
                          f"{cpu / cap_cpu:.3f}"))
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print(line)
    for i, r in enumerate(cells):
        print("  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            print(line)
    print(line)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (default 5; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="3 repeats and fewer calibration candidates")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1: robust on a busy machine)")
    parser.add_argument("--windows", default=",".join(map(str, WINDOWS)), help="window sizes in pixels (default 32,16)")
    parser.add_argument("--json", metavar="PATH", help="write all figures (raw timings included) as JSON")
    args = parser.parse_args(argv)
    if captum is None:
        print("Captum is not installed: pip install captum", file=sys.stderr)
        return 1
    repeats = args.repeats or (3 if args.quick else 5)
    windows = [int(w) for w in args.windows.split(",") if w.strip()]
    bad = [w for w in windows if w < 1 or 224 % w]
    if bad:
        parser.error(f"--windows: {bad} must divide 224")
    warnings.filterwarnings("ignore", category=UserWarning, module="captum")
    torch.set_num_threads(args.threads)
    info = machine_info(args.threads)
    print(f"propex perturbation benchmark: torch {info['torch']}, captum {info['captum']}, python {info['python']}")
    print(f"machine: {info['cores']} cores ({info['cpu']}); torch.set_num_threads({args.threads}); "
          f"median of {repeats} round-robin repeats")
    load0 = os.getloadavg()
    print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    if load0[0] > 0.5 * (os.cpu_count() or 1):
        print("WARNING: the machine is busy; wall times are noisy. Compare the cpu columns.")
    start = time.perf_counter()
    model, x, t = resnet18_case()
    results = [run_case(model, x, t, w, repeats, args.quick) for w in windows]
    print()
    rows = print_table(results)
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

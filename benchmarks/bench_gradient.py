"""Side-by-side timing of propex's gradient methods against Captum and the autograd floor.

Run from the repository root::

    python benchmarks/bench_gradient.py                 # full run, median of 5 repeats
    python benchmarks/bench_gradient.py --quick         # 2 repeats, no digits N=64 case
    python benchmarks/bench_gradient.py --threads 1     # one thread (robust on a busy machine)
    python benchmarks/bench_gradient.py --repeats 9 --json results.json

For saliency, SmoothGrad (16 samples) and Integrated Gradients (32 Gauss-Legendre steps)
on torchvision's resnet18 (random weights, 224x224, batch 1) and on propex's demo model
(``propex.models.load_digits_model()`` on digits from ``load_digits_data()``), it times

* propex through the class API (``propex.IntegratedGradients(model, n_steps=32).attribute``),
  through ``propex.explain`` and with an explicit ``batch_size`` equal to the total number
  of points (everything in one chunk);
* Captum with matching settings and its default ``internal_batch_size=None`` (for IG also
  with ``return_convergence_delta=True``, the work ``propex.explain`` does for ``delta``);
* the *autograd floor*: one forward + one backward (``torch.autograd.grad`` of the summed
  target logits) over an input batch with as many rows as the method evaluates gradients.

Every library gets the explicit target (so none needs a forward pass to pick it). Each
variant runs once to warm up, then ``--repeats`` times, interleaved round-robin (so load
from other processes on the machine hits all variants alike); the table shows medians of
``time.perf_counter`` wall time.

The memory check runs Integrated Gradients with 256 steps on resnet18 with
``batch_size=16`` in a fresh subprocess and reports the peak of the bytes autograd holds
saved for backward (tracked live through ``torch.autograd.graph.saved_tensors_hooks``,
model parameters excluded) and the growth of the peak resident set size (VmHWM), next to
the same figures for 32 points evaluated at once and the extrapolation to 256 at once.

No weights are downloaded: resnet18 is built with ``weights=None``.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import torch

import propex

try:
    import captum
    from captum.attr import IntegratedGradients as CaptumIG
    from captum.attr import NoiseTunnel as CaptumNoiseTunnel
    from captum.attr import Saliency as CaptumSaliency
except ImportError:  # pragma: no cover - depends on the environment
    captum = None

NOISE_LEVEL = 0.15   # sigma as a fraction of the input's value range (SmoothGrad paper)
SG_SAMPLES = 16
IG_STEPS = 32
MEM_STEPS = 256
MEM_BATCH = 16


# --------------------------------------------------------------------------- set-up
@dataclass
class Case:
    """One model and input batch to benchmark on."""

    name: str
    model: torch.nn.Module
    x: torch.Tensor
    target: Any                      # int (batch 1) or LongTensor [N]
    target_idx: torch.Tensor         # LongTensor [N], for the floor
    note: str = ""

    @property
    def n(self) -> int:
        return self.x.shape[0]


def resnet18_case() -> Case:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        t = int(model(x).argmax(dim=1)[0])
    return Case("resnet18", model, x, t, torch.tensor([t]), "torchvision, weights=None, 1x3x224x224")


def digits_case(n: int) -> Case:
    from propex.models import load_digits_data, load_digits_model

    model = load_digits_model().eval()
    x, _ = load_digits_data("test")
    x = x[:n].contiguous()
    with torch.no_grad():
        t = model(x).argmax(dim=1)
    target = int(t[0]) if n == 1 else t
    return Case(f"digits N={n}", model, x, target, t, f"propex demo CNN, {n}x1x16x16 test digits")


# --------------------------------------------------------------------------- the variants
def floor_fn(case: Case, n_points: int) -> Callable[[], Any]:
    """One forward + backward over ``n_points`` rows (the input repeated), the target logits summed."""
    reps = n_points // case.n
    xb = case.x.repeat(reps, *[1] * (case.x.dim() - 1)).contiguous()
    idx = case.target_idx.repeat(reps).reshape(-1, 1)

    def run() -> Any:
        leaf = xb.detach().requires_grad_()
        out = case.model(leaf)
        return torch.autograd.grad(out.gather(1, idx).sum(), leaf)[0]
    return run


def sigma_abs(case: Case) -> float:
    """Captum's ``stdevs`` is absolute; propex's ``noise_level`` is relative to the value range."""
    return NOISE_LEVEL * float(case.x.max() - case.x.min())


def variants(case: Case, method: str) -> tuple[dict[str, Callable[[], Any]], int]:
    """The timed callables for one method, and the number of gradient evaluations (points)."""
    m, x, t = case.model, case.x, case.target
    if method == "saliency":
        pts = case.n
        v = {
            "propex class": lambda: propex.Saliency(m).attribute(x, target=t),
            "propex explain": lambda: propex.explain(m, x, "saliency", target=t),
            "propex batch_size=all": lambda: propex.Saliency(m, batch_size=pts).attribute(x, target=t),
            "captum": lambda: CaptumSaliency(m).attribute(x, target=t, abs=False),
        }
    elif method == f"smoothgrad-{SG_SAMPLES}":
        pts = case.n * SG_SAMPLES
        sd = sigma_abs(case)
        opts = dict(n_samples=SG_SAMPLES, noise_level=NOISE_LEVEL, seed=0)
        v = {
            "propex class": lambda: propex.SmoothGrad(m, **opts).attribute(x, target=t),
            "propex explain": lambda: propex.explain(m, x, "smoothgrad", target=t, **opts),
            "propex batch_size=all": lambda: propex.SmoothGrad(m, batch_size=pts, **opts).attribute(x, target=t),
            "captum": lambda: CaptumNoiseTunnel(CaptumSaliency(m)).attribute(
                x, nt_type="smoothgrad", nt_samples=SG_SAMPLES, stdevs=sd, target=t, abs=False),
        }
    elif method == f"ig-{IG_STEPS}":
        pts = case.n * IG_STEPS
        opts = dict(n_steps=IG_STEPS, integration="gausslegendre")
        v = {
            "propex class": lambda: propex.IntegratedGradients(m, **opts).attribute(x, target=t),
            "propex explain": lambda: propex.explain(m, x, "integrated_gradients", target=t, **opts),
            "propex batch_size=all": lambda: propex.IntegratedGradients(m, batch_size=pts, **opts).attribute(
                x, target=t),
            "captum": lambda: CaptumIG(m).attribute(x, target=t, n_steps=IG_STEPS, method="gausslegendre"),
            "captum +delta": lambda: CaptumIG(m).attribute(x, target=t, n_steps=IG_STEPS, method="gausslegendre",
                                                           return_convergence_delta=True),
        }
    else:
        raise ValueError(method)
    v["floor"] = floor_fn(case, pts)
    return v, pts


# (propex variant, captum variant it is compared with) per table row
ROWS = [("propex class", "captum"), ("propex explain", "captum"), ("propex explain", "captum +delta"),
        ("propex batch_size=all", "captum")]
METHODS = ["saliency", f"smoothgrad-{SG_SAMPLES}", f"ig-{IG_STEPS}"]


def check_agreement(case: Case, method: str, v: dict[str, Callable[[], Any]]) -> str:
    """Deterministic methods must agree with Captum (guards against mismatched settings)."""
    if method == f"smoothgrad-{SG_SAMPLES}":
        return "different noise draws (not compared)"
    with torch.no_grad():
        a = v["propex class"]()
    b = v["captum"]()
    b = b[0] if isinstance(b, tuple) else b
    rel = float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
    return f"max|propex - captum| / max|captum| = {rel:.1e}"


# --------------------------------------------------------------------------- timing
def time_variants(v: dict[str, Callable[[], Any]], repeats: int, min_block: float = 0.2) -> dict[str, dict[str, Any]]:
    """Warm each variant up, then time all of them round-robin ``repeats`` times.

    A variant that takes less than ``min_block`` seconds is called ``inner`` times in a
    row per timed block (the per-call time is the block's time / ``inner``), as ``timeit``
    does, so that timer resolution and scheduler noise do not dominate small models.
    """
    names = list(v)
    inner: dict[str, int] = {}
    for name in names:
        spent, last, calls = 0.0, 0.0, 0
        while calls < 1 or (spent < 3 * min_block and calls < 50):   # short variants warm up longer
            t0 = time.perf_counter()
            v[name]()
            last = time.perf_counter() - t0
            spent, calls = spent + last, calls + 1
        inner[name] = max(1, min(1000, math.ceil(min_block / max(last, 1e-9)))) if last < min_block else 1
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]   # rotate the order every round
        for name in order:
            fn, k = v[name], inner[name]
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(k):
                fn()
            t1, c1 = time.perf_counter(), time.process_time()
            wall[name].append((t1 - t0) / k)
            cpu[name].append((c1 - c0) / k)
    return {name: {"median_s": statistics.median(wall[name]), "min_s": min(wall[name]),
                   "max_s": max(wall[name]), "wall_s": wall[name], "calls_per_block": inner[name],
                   "cpu_median_s": statistics.median(cpu[name])} for name in names}


def fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.4f}" if s < 1 else f"{s:.3f}"


def print_table(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The medians and ratios; the last two columns repeat the ratios in process CPU time."""
    header = ("model", "method", "propex variant", "propex s", "captum variant", "captum s", "floor s",
              "propex/floor", "propex/captum", "cpu p/floor", "cpu p/captum")
    rows = []
    for res in results:
        t = res["timings"]
        for pv, cv in ROWS:
            if pv not in t or cv not in t:
                continue
            p, c, f = t[pv]["median_s"], t[cv]["median_s"], t["floor"]["median_s"]
            pc, cc, fc = t[pv]["cpu_median_s"], t[cv]["cpu_median_s"], t["floor"]["cpu_median_s"]
            rows.append({"model": res["model"], "method": res["method"], "propex_variant": pv, "propex_s": p,
                         "captum_variant": cv, "captum_s": c, "floor_s": f,
                         "propex_over_floor": p / f, "propex_over_captum": p / c,
                         "cpu_propex_over_floor": pc / fc, "cpu_propex_over_captum": pc / cc})
    cells = [header] + [(r["model"], r["method"], r["propex_variant"], fmt_s(r["propex_s"]), r["captum_variant"],
                         fmt_s(r["captum_s"]), fmt_s(r["floor_s"]), f"{r['propex_over_floor']:.3f}",
                         f"{r['propex_over_captum']:.3f}", f"{r['cpu_propex_over_floor']:.3f}",
                         f"{r['cpu_propex_over_captum']:.3f}") for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print(line)
    for k, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i < 3 or i == 4 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            print(line)
    print(line)
    print("Captum relative to the floor (wall; cpu):")
    for res in results:
        t = res["timings"]
        f, fc = t["floor"]["median_s"], t["floor"]["cpu_median_s"]
        parts = [f"{cv}/floor {t[cv]['median_s'] / f:.3f}; {t[cv]['cpu_median_s'] / fc:.3f}"
                 for cv in ("captum", "captum +delta") if cv in t]
        print(f"  {res['model']:<12} {res['method']:<14} " + ", ".join(parts))
    return rows


# --------------------------------------------------------------------------- memory
class LiveSavedBytes:
    """Tracks the bytes autograd currently holds saved for backward, and their peak.

    Each saved tensor is wrapped in a small holder object; when autograd frees the graph
    it drops the holder and a ``weakref.finalize`` callback subtracts its bytes. Storages
    are counted once however many graph nodes share them, and the model's own parameters
    and buffers (which live anyway) are left out.
    """

    class _Holder:
        __slots__ = ("t", "__weakref__")

        def __init__(self, t: torch.Tensor):
            self.t = t

    def __init__(self, exclude: list[torch.Tensor]):
        self.exclude = {p.untyped_storage().data_ptr() for p in exclude}
        self.refs: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.live = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            del self.refs[key]
            self.live -= self.sizes.pop(key)

    def pack(self, t: torch.Tensor) -> Any:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in self.exclude or key == 0:
            return t
        if key not in self.refs:
            self.refs[key] = 0
            self.sizes[key] = storage.nbytes()
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
        self.refs[key] += 1
        holder = self._Holder(t)
        weakref.finalize(holder, self._release, key)
        return holder

    @staticmethod
    def unpack(obj: Any) -> torch.Tensor:
        return obj.t if isinstance(obj, LiveSavedBytes._Holder) else obj

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)


def _status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:  # Linux >= 4.0: writing 5 resets VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def memory_child(n_steps: int, batch_size: int | None, threads: int) -> dict[str, Any]:
    """Run propex IG on resnet18 once (after a warm-up forward) and report memory figures."""
    torch.set_num_threads(threads)
    case = resnet18_case()
    exclude = list(case.model.parameters()) + list(case.model.buffers())
    with torch.no_grad():  # warm up the allocator / oneDNN on a small batch, outside the measurement
        case.model(case.x)
    ig = propex.IntegratedGradients(case.model, n_steps=n_steps, integration="gausslegendre", batch_size=batch_size)
    prep = ig.engine.prepare(case.x, case.target, None)
    chunk = ig.engine.chunk(prep, n_steps * case.n)
    gc.collect()
    rss_before = _status_kib("VmRSS")
    reset = _reset_peak_rss()
    tracker = LiveSavedBytes(exclude)
    t0 = time.perf_counter()
    with tracker.hooks():
        ig.attribute(case.x, target=case.target)
    wall = time.perf_counter() - t0
    if reset:
        peak_rss = _status_kib("VmHWM")
    else:  # ru_maxrss is the process's high-water mark since start (KiB on Linux)
        import resource
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"n_steps": n_steps, "batch_size": batch_size, "chunk": chunk, "n_chunks": -(-n_steps * case.n // chunk),
            "peak_saved_bytes": tracker.peak, "saved_bytes_left": tracker.live,
            "rss_before_bytes": None if rss_before is None else rss_before * 1024,
            "peak_rss_bytes": None if peak_rss is None else peak_rss * 1024,
            "peak_rss_growth_bytes": None if rss_before is None or peak_rss is None else (peak_rss - rss_before) * 1024,
            "peak_rss_exact": reset, "wall_s": wall}


def run_memory_child(n_steps: int, batch_size: int | None, threads: int) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--_memory-child", f"{n_steps},{batch_size or 0},{threads}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_check(threads: int) -> dict[str, Any]:
    steps = MEM_STEPS
    print(f"\nMemory: propex IG, {steps} steps, resnet18 1x3x224x224, batch_size={MEM_BATCH} "
          "(fresh subprocess per run)")
    chunked = run_memory_child(steps, MEM_BATCH, threads)
    at_once = run_memory_child(IG_STEPS, IG_STEPS, threads)
    per_point = at_once["peak_saved_bytes"] / IG_STEPS
    est_256 = per_point * steps
    mib = 1024 ** 2

    def show(label: str, r: dict[str, Any]) -> None:
        growth = r["peak_rss_growth_bytes"]
        print(f"  {label:<44} chunk {r['chunk']:>3} x {r['n_chunks']:>2} chunks: peak saved activations "
              f"{r['peak_saved_bytes'] / mib:8.0f} MiB, peak RSS growth "
              f"{'-' if growth is None else f'{growth / mib:8.0f}'} MiB, {r['wall_s']:.1f} s")
    show(f"IG-{steps}, batch_size={MEM_BATCH}", chunked)
    show(f"IG-{IG_STEPS}, batch_size={IG_STEPS} (all points at once)", at_once)
    print(f"  saved activations per point: {per_point / mib:.1f} MiB; {steps} points at once would hold "
          f"~{est_256 / 1024 ** 3:.1f} GiB saved (extrapolated, not run: "
          f"{chunked['peak_saved_bytes'] / est_256:.3f} of it is what batch_size={MEM_BATCH} holds)")
    return {"chunked": chunked, "all_at_once_32": at_once, "saved_bytes_per_point": per_point,
            "estimated_saved_bytes_256_at_once": est_256}


# --------------------------------------------------------------------------- main
def machine_info(threads: int) -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"python": platform.python_version(), "torch": torch.__version__,
            "captum": getattr(captum, "__version__", None), "propex": getattr(propex, "__version__", None),
            "propex_path": os.path.dirname(propex.__file__),
            "cpu": cpu, "cores": os.cpu_count(), "torch_threads": threads, "platform": platform.platform(),
            "cuda": torch.cuda.is_available(),
            "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (default 5; 2 with --quick)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (2), skip the digits N=64 case")
    parser.add_argument("--json", metavar="PATH", help="write all figures (raw timings included) as JSON")
    parser.add_argument("--models", default="resnet18,digits1,digits64",
                        help="comma-separated subset of resnet18, digits1, digits64")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch.set_num_threads (default: the machine's cores)")
    parser.add_argument("--no-memory", action="store_true", help="skip the IG-256 memory check")
    parser.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.memory_child:
        steps, bs, threads = (int(v) for v in args.memory_child.split(","))
        print(json.dumps(memory_child(steps, bs or None, threads)))
        return 0
    if captum is None:
        print("Captum is not installed: pip install captum", file=sys.stderr)
        return 1

    repeats = args.repeats or (2 if args.quick else 5)
    warnings.filterwarnings("ignore", message=".*did not already require gradients.*")  # Captum's
    torch.set_num_threads(args.threads)
    info = machine_info(args.threads)
    print(f"propex gradient benchmark: torch {info['torch']}, captum {info['captum']}, python {info['python']}")
    print(f"propex from {info['propex_path']}")
    if info["malloc_env"]:
        print(f"glibc malloc settings from the environment: {info['malloc_env']}")
    print(f"machine: {info['cores']} cores ({info['cpu']}), CUDA {'available, not used' if info['cuda'] else 'no'}; "
          f"torch.set_num_threads({args.threads})")
    print(f"timing: 1 warm-up run per variant, then median of {repeats} round-robin repeats (time.perf_counter)")
    load0 = os.getloadavg()
    print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    if load0[0] > 0.5 * (os.cpu_count() or 1):
        print("WARNING: the machine is busy; other processes share the cores, so wall times are noisy "
              "(with several threads an OpenMP thread can wait for a descheduled partner). Compare the "
              "cpu columns, or run with --threads 1.")
    start = time.perf_counter()

    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.quick:
        wanted = [m for m in wanted if m != "digits64"]
    builders = {"resnet18": resnet18_case, "digits1": lambda: digits_case(1), "digits64": lambda: digits_case(64)}
    unknown = [m for m in wanted if m not in builders]
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {', '.join(builders)}")

    results = []
    for key in wanted:
        case = builders[key]()
        print(f"\n{case.name}: {case.note}")
        for method in METHODS:
            v, pts = variants(case, method)
            agreement = check_agreement(case, method, v)
            t0 = time.perf_counter()
            timings = time_variants(v, repeats)
            print(f"  {method:<14} {pts:>5} gradient evaluations; {agreement}; {time.perf_counter() - t0:.0f} s")
            results.append({"model": case.name, "method": method, "points": pts, "agreement": agreement,
                            "timings": timings})

    print()
    rows = print_table(results)
    memory = None if args.no_memory else memory_check(args.threads)
    load1 = os.getloadavg()
    total = time.perf_counter() - start
    print(f"\nload average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}; total {total:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": info, "repeats": repeats, "load_start": load0, "load_end": load1,
                       "total_s": total, "results": results, "table": rows, "memory": memory}, fh, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

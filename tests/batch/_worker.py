"""A batch job in a subprocess, for the kill / concurrency tests: ``python _worker.py STORE [--sleep S]
[--engine ray --address ADDR]``. Prints the run's counts as JSON on its last line."""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _jobs import job_kwargs, make_dataset  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("store")
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--engine", default="local")
    p.add_argument("--address", default=None)
    p.add_argument("--go", default=None, help="start only once this file exists (after printing 'ready')")
    args = p.parse_args()
    torch.set_num_threads(1)
    import propex.batch as pb

    model, data = make_dataset(sleep=args.sleep)
    if args.go:
        import os
        print("ready", flush=True)
        while not os.path.exists(args.go):
            time.sleep(0.01)
    ray_options = None
    if args.engine == "ray":
        ray_options = {"address": args.address, "num_workers": 2}
    t0 = time.perf_counter()
    run = pb.explain_dataset(model, data, store=args.store, engine=args.engine, progress=False,
                             ray_options=ray_options, **job_kwargs())
    print(json.dumps({"chunks_written": run.chunks_written, "samples": run.samples_computed,
                      "complete": run.complete, "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main()

"""The ``propex`` command: ``propex demo``, ``propex methods``."""
from __future__ import annotations

import argparse
import sys
import time


def _cmd_methods(args: argparse.Namespace) -> int:
    from .api import get_method, methods
    for name in methods():
        cls = get_method(name)
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        aliases = f" (aliases: {', '.join(cls.aliases)})" if cls.aliases else ""
        print(f"{name:<22} [{cls.family}] {summary}{aliases}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import format_table, run_demo
    start = time.perf_counter()
    print(f"propex demo: explaining {args.n_samples} test digits of the embedded model")
    rows, grid = run_demo(args.out, args.n_samples, args.methods)
    print()
    print(format_table(rows))
    print()
    print(f"wrote {grid} and {args.out}/table.md in {time.perf_counter() - start:.1f} s")
    return 1 if any(r.error for r in rows) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="propex", description="Explain PyTorch model predictions.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="explain test digits of the embedded model with every method")
    demo.add_argument("--out", default="propex-demo", help="output folder (default: ./propex-demo)")
    demo.add_argument("--n-samples", type=int, default=8, help="number of test digits (default 8)")
    demo.add_argument("--methods", nargs="+", default=None, help="method names (default: all)")
    demo.set_defaults(func=_cmd_demo)
    meth = sub.add_parser("methods", help="list the available methods")
    meth.set_defaults(func=_cmd_methods)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "n_samples", 1) < 1:
        print("propex demo: --n-samples must be >= 1", file=sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``propex`` command (click + rich, the ``cli`` extra): ``methods``, ``explain``, ``evaluate``,
``report``, ``demo``, ``serve`` and ``batch``. See docs/cli.md.

``main(argv) -> int`` runs a command line and returns its exit code: 0 ok, 1 a method or metric
failed on some input, 2 a usage or input error, 130 interrupted. Errors are printed as one line
(``--debug``: with the traceback).
"""
from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run ``propex`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        import click  # noqa: F401
        import rich  # noqa: F401
    except ImportError as err:
        print(f"error: the propex command needs click and rich ({err.name} is missing): "
              "pip install 'propex[cli]'", file=sys.stderr)
        return 2
    from .app import run
    return run(args)

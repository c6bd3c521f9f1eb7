"""The click group: global options, command registration (``batch`` lazily), one-line errors, exit codes."""
from __future__ import annotations

import difflib
import importlib
import sys
import traceback
from typing import Any

import click

from .common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, InputError, Settings, echo, one_line

_LAZY = {"batch": "propex.cli.batch"}      # commands owned by other modules, imported on first use


class PropexGroup(click.Group):
    """Lists the lazily imported commands, and suggests close matches for a mistyped command."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        names |= {name for name in _LAZY if self._lazy(name, quiet=True) is not None}
        order = ["methods", "explain", "evaluate", "report", "demo", "serve", "batch"]
        return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is None and name in _LAZY:
            cmd = self._lazy(name)
        return cmd

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name = args[0] if args else ""
        if args and not name.startswith("-") and self.get_command(ctx, name) is None:
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=2, cutoff=0.5)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise click.UsageError(f"no such command {name!r}.{hint} Commands: {', '.join(self.list_commands(ctx))}",
                                   ctx)
        return super().resolve_command(ctx, args)

    @staticmethod
    def _lazy(name: str, quiet: bool = False) -> click.Command | None:
        module_name = _LAZY[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                return None                       # not built (yet): the group works without it
            return None if quiet else _unavailable(name, err)
        except ImportError as err:
            return None if quiet else _unavailable(name, err)
        for attr in (name, f"{name}_cmd", f"{name}_command", "command", "cli"):
            cmd = getattr(module, attr, None)
            if isinstance(cmd, click.Command):
                return cmd
        found = [v for v in vars(module).values() if isinstance(v, click.Command)]
        return found[0] if found else None


def _unavailable(name: str, err: ImportError) -> click.Command:
    @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
                   add_help_option=False)
    def stub() -> None:
        raise InputError(f"propex {name} is not available: {one_line(err)}")
    return stub


@click.group(cls=PropexGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
@click.option("--device", default="cpu", show_default=True, help="torch device for every command (cpu, cuda, mps).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Rows per model call inside the methods (default: from a memory budget).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of methods and metrics.")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: only on a terminal).")
@click.version_option(package_name="propex", prog_name="propex", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, debug: bool, device: str, batch_size: int | None, seed: int,
        progress: bool | None) -> None:
    """propex: explain the predictions of PyTorch models.

    \b
    Exit codes: 0 ok; 1 a method or metric failed on some input (the other results are
    written); 2 a usage or input error (nothing computed); 130 interrupted.
    Errors are one line; --debug shows the traceback.
    """
    ctx.obj = Settings(debug=debug, device=device, batch_size=batch_size, seed=seed, progress=progress)


@cli.command("methods")
@click.option("--family", default=None, help="Only one family: gradient, propagation, cam, perturbation, ...")
def methods_cmd(family: str | None) -> int:
    """List the methods with a one-line description."""
    from ..api import get_method, methods

    names = methods(family)
    if family is not None and not names:
        families = sorted({get_method(n).family for n in methods()})
        raise InputError(f"--family {family!r} has no methods: use one of {', '.join(families)}")
    for name in names:
        cls = get_method(name)
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        aliases = f" (aliases: {', '.join(cls.aliases)})" if cls.aliases else ""
        echo(f"{name:<22} [{cls.family}] {summary}{aliases}")
    return EXIT_OK


def _register() -> None:
    from .demo import demo_cmd
    from .evaluate import evaluate_cmd
    from .explain import explain_cmd
    from .report import report_cmd
    from .serve import serve_cmd
    for cmd in (explain_cmd, evaluate_cmd, report_cmd, demo_cmd, serve_cmd):
        cli.add_command(cmd)


_register()


def run(argv: list[str]) -> int:
    """Run the command line ``argv``; return the exit code (errors: one line on stderr)."""
    debug = "--debug" in argv
    try:
        rv = cli.main(args=argv, prog_name="propex", standalone_mode=False)
    except click.exceptions.Exit as exit_:
        return int(exit_.exit_code)
    except click.UsageError as err:
        if debug:
            traceback.print_exc()
        command = err.ctx.command_path if err.ctx is not None else "propex"
        echo(f"error: {one_line(err.format_message())} (see '{command} --help')", err=True)
        return EXIT_USAGE
    except click.ClickException as err:
        if debug:
            traceback.print_exc()
        echo(f"error: {one_line(err.format_message())}", err=True)
        return err.exit_code
    except (click.Abort, KeyboardInterrupt):
        echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    except ImportError as err:
        if debug:
            traceback.print_exc()
        echo(f"error: {one_line(err)}", err=True)
        return EXIT_USAGE
    except Exception as err:  # noqa: BLE001 - a bug or an unexpected failure: one line unless --debug
        if debug:
            traceback.print_exc()
        echo(f"error: {type(err).__name__}: {one_line(err)[:400]} (rerun with --debug for the traceback)", err=True)
        return EXIT_FAILED
    return EXIT_OK if rv is None else int(rv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(sys.argv[1:]))

"""The mnist20k command line: thin typer commands that parse options, call the library and render.

Each command is a function in a module of this package, registered here. torch is imported inside the
commands, so `mnist20k --help` answers at once.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Annotated

import typer
from typer.core import TyperCommand, TyperGroup

try:  # typer vendors click from 0.24 on; before, its errors were click's own
    from typer.exceptions import TyperException as _CliError
except ImportError:  # pragma: no cover
    from click import ClickException as _CliError

from mnist20k import __version__
from mnist20k.cli import checkpoints, summary, sweep, train, tune
from mnist20k.errors import Mnist20kError


class _NoBoolMetavar:
    """A flag takes no value: --help shows none for it, typer's own flags (--help, --install-completion) too,
    where typer would write <bool>."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and not param.metavar:
                param.metavar = ""
        return params


class _Commands(_NoBoolMetavar, TyperGroup):
    """Every failure the user is told of, told here, once, whichever command and however it is called (the
    console script, python -m, a test's CliRunner): a Mnist20kError or a usage error that typer finds as one
    `error:` line on stderr and its exit code; mnist20k's warnings as `warning:` lines."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        try:
            with _warnings_as_lines():
                code = super().main(*args, standalone_mode=False, **kwargs)
        except Mnist20kError as e:
            typer.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except _CliError as e:
            if type(e).__name__ != "NoArgsIsHelpError":  # the help text was already printed
                typer.echo(f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


class _Command(_NoBoolMetavar, TyperCommand):
    """A command whose usage line names its arguments as people write them: `eval [OPTIONS] CHECKPOINT`, not
    typer's `{CHECKPOINT}` for a required one."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        return [piece[1:].replace("}", "", 1) if piece.startswith("{") else piece for piece in pieces]


@contextlib.contextmanager
def _warnings_as_lines():
    """mnist20k's own warnings as one `warning:` (or, for an old name, `note:`) line each on stderr; others as
    Python prints them."""
    from mnist20k.errors import NotApplied, Renamed, SourceChanged

    with warnings.catch_warnings():
        warnings.simplefilter("always", SourceChanged)
        warnings.simplefilter("always", NotApplied)
        warnings.simplefilter("once", Renamed)
        python_shows = warnings.showwarning

        def show(message, category, *args, **kwargs):
            if issubclass(category, Renamed):
                typer.echo(f"note: {message}", err=True)
            elif issubclass(category, SourceChanged | NotApplied):
                typer.echo(f"warning: {message}", err=True)
            else:
                python_shows(message, category, *args, **kwargs)

        warnings.showwarning = show
        yield


app = typer.Typer(
    cls=_Commands,
    help="Train, inspect and score a CNN of under 20,000 parameters on MNIST.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mnist20k {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    from mnist20k import process

    process.configure()


for name, command in (
    ("summary", summary.summary),
    ("train", train.train),
    ("sweep", sweep.sweep),
    ("tune", tune.tune),
    ("eval", checkpoints.evaluate),
    ("predict", checkpoints.predict),
    ("draw", checkpoints.draw),
    ("export", checkpoints.export_network),
):
    app.command(name, cls=_Command)(command)


def main() -> None:
    """Console entry point."""
    app(prog_name="mnist20k")

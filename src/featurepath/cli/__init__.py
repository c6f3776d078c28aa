"""The ``featurepath`` command: one sub-command per pipeline stage.

Every command lives in this package (``pipeline``: play, discover, patch, status, demo;
``analysis``: causal, pathways, words; ``report``; ``sae``) and calls one library function per
stage; the library packages below never import typer. Command-line flags are overrides of the
run's config (``--alpha`` is ``analysis.alpha``), resolved by :mod:`featurepath.cli.options`.

Every user-facing problem is a :class:`FeaturepathError`; :func:`main` prints it as a single
``error: ...`` line and exits with status 2, so a bad config, SAE file, model name or log never
ends in a traceback. Two kinds of failure are caught here, whichever library raised them: a
refused write (read-only or full disk, see :func:`featurepath.errors.storage_error`) and running
out of memory. Command-line mistakes get click's usage message and status 2.

Warnings (``warnings.warn`` in the library: repeated prompts, a file system without locks, ...)
print as one ``warning: <message>`` line on stderr, like the stages' own notices, instead of
Python's ``path/file.py:220: UserWarning: ...`` and the source line: the path is noise to someone
running a command. :func:`entry` installs :func:`show_warning` for the process; code that
imports featurepath as a library keeps Python's normal warnings.
"""

from __future__ import annotations

import sys
import warnings
from typing import TextIO

import typer

from featurepath import __version__
from featurepath.errors import FeaturepathError

app = typer.Typer(
    name="featurepath",
    help=(
        "Find which SAE features cause a model's behaviour, how they drive each other across "
        "layers, and which words they put into its output.\n\n"
        "Pipeline (one run directory holds every stage): play -> discover -> screen -> patch -> "
        "causal / "
        "pathways / words -> report. `featurepath demo` runs it all on the embedded default "
        "(SmolLM2-135M-Instruct with SAEs featurepath trains itself)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"featurepath {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """featurepath command line."""


#: Command modules in pipeline order (``--help`` lists the commands in this order). Each
#: registers its commands on :data:`app` when imported.
COMMAND_MODULES = ("pipeline", "screen", "analysis", "confirm", "report", "sae")


def _register() -> None:
    """Attach every command (imported on first use, so ``import featurepath.cli`` stays light)."""
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"featurepath.cli.{name}")


def _usage_error_types() -> tuple[type[BaseException], ...]:
    """The click exception classes a command-line mistake can raise.

    Recent typer releases vendor click (``typer._click``) and raise their own copies of
    ``UsageError``/``BadParameter``/``NoArgsIsHelpError``, which are not subclasses of the
    installed click's; older ones raise click's. Both bases are caught, found through the
    public ``typer.BadParameter`` so no private module is imported by name.
    """
    bases = {c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"}
    try:
        import click

        bases.add(click.exceptions.ClickException)
    except ImportError:  # a typer that vendors click needs no separate click
        pass
    return tuple(bases)


def main(argv: list[str] | None = None) -> int:
    """Entry point that turns FeaturepathError into one clear line."""
    _register()
    try:
        app(args=argv, standalone_mode=False)
    except FeaturepathError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        typer.echo("interrupted; finished work is kept — rerun with --resume", err=True)
        return 130
    except OSError as exc:  # a read-only, full or forbidden output directory, in any command
        from featurepath.errors import storage_error

        err = storage_error(exc, "work finished before is kept; fix this and rerun "
                                 "(--resume continues play and patch)")
        if err is None:
            raise
        typer.echo(f"error: {err}", err=True)
        return 2
    except (MemoryError, RuntimeError) as exc:  # RuntimeError: torch's OutOfMemoryError
        if not isinstance(exc, MemoryError) and type(exc).__name__ != "OutOfMemoryError":
            raise
        typer.echo("error: out of memory; finished work is kept — lower the batch size or the "
                   "number of trials/games and rerun (--resume continues play and patch)",
                   err=True)
        return 2
    except _usage_error_types() as exc:  # bad command line: click's own message, no traceback
        exc.show()
        return int(getattr(exc, "exit_code", 2))
    return 0


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
    """A :func:`warnings.showwarning` that prints ``warning: <message>`` as one line (a message
    over several lines is joined), without the category, file, line number or source line.

    Only how a warning looks changes: which warnings show, and how often, is still decided by
    the warning filters (``-W``, ``PYTHONWARNINGS``; once per call site by default)."""
    stream = file if file is not None else sys.stderr
    if stream is None:  # pythonw: nowhere to print
        return
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    try:
        stream.write(f"warning: {text}\n")
    except OSError:  # a closed or broken stderr must not turn a warning into a crash
        pass


def entry() -> None:
    """The ``featurepath`` executable (and ``python -m featurepath``): warnings as one line."""
    warnings.showwarning = show_warning
    sys.exit(main())

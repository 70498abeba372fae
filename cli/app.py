"""The typer application behind the ``seqlvm`` console script.

Commands live one module each (``cli/<name>.py``) and register with :func:`command`, which turns
user errors into one line on stderr and exit code 2; ``--verbose`` (before or after the command's
name) re-raises them with the traceback instead. Errors of the command line itself (an unknown
command or option, a value typer cannot parse or that is out of an option's range) print one line
and exit 2 the same way.

User errors are ``ValueError`` and ``TypeError`` (bad arguments or files, named by the commands'
own checks) and every ``OSError`` (a missing file, a permission denied, a path whose parent is a
file, a full disk, a read-only folder): these are about the user's files and machine, fixable by
the user, and a traceback adds nothing to the path and reason the message already gives. Commands
still check their output paths themselves where they can, so that the message names the option.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import typer
from typer.core import TyperGroup


class _OneLineUsageErrors(TyperGroup):
    """The command group, printing a usage error of a command's line (not the bare ``seqlvm``,
    which shows the help) as ``error: ...`` instead of typer's usage panel."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except typer.TyperException as err:  # typer's own click exceptions (typer.Exit is not one)
            typer.echo(f"error: {_one_line(err)}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_OneLineUsageErrors,
    help="seqlvm: sequential latent-variable models for time series and video.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

USER_ERRORS = (ValueError, TypeError, OSError)
_state = {"verbose": False}


VERBOSE = typer.Option(False, "--verbose", "-v", help="Show full tracebacks on errors.")


@app.callback()
def _root(verbose: bool = VERBOSE) -> None:
    _state["verbose"] = verbose


def command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``app.command`` whose user errors print one line and exit 2 (unless ``--verbose``, which
    each command also takes after its name)."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*a: Any, verbose: bool = False, **k: Any) -> Any:
            try:
                return fn(*a, **k)
            except USER_ERRORS as err:
                if verbose or _state["verbose"]:
                    raise
                typer.echo(f"error: {_one_line(err)}", err=True)
                raise typer.Exit(2) from None

        # typer reads the options from the signature: fn's, plus --verbose.
        signature = inspect.signature(fn)
        flag = inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=VERBOSE, annotation="bool")
        wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), flag])
        wrapper.__annotations__ = {**fn.__annotations__, "verbose": "bool"}
        return app.command(*args, **kwargs)(wrapper)

    return register


def _one_line(err: BaseException) -> str:
    """The message of ``err`` on one line; an ``OSError`` from the OS as "PATH: reason"."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        text = f"{err.filename}: {err.strerror}" + (f" (-> {err.filename2})" if err.filename2 is not None else "")
    elif hasattr(err, "format_message"):  # a usage error, e.g. "Invalid value for '--steps': ..."
        text = err.format_message()
    else:
        text = str(err) or type(err).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def main() -> None:
    """Entry point of the ``seqlvm`` console script."""
    app()

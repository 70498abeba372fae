"""The typer application behind the ``seqlvm`` console script.

Commands live one module each (``cli/<name>.py``) and register with :func:`command`, which turns
user errors (``ValueError``, ``TypeError``, ``FileNotFoundError``) into one line on stderr and exit
code 2; ``--verbose`` (before or after the command's name) re-raises them with the traceback
instead.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import typer

app = typer.Typer(
    help="seqlvm: sequential latent-variable models for time series and video.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

USER_ERRORS = (ValueError, TypeError, FileNotFoundError)
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
                typer.echo(f"error: {err}", err=True)
                raise typer.Exit(2) from None

        # typer reads the options from the signature: fn's, plus --verbose.
        signature = inspect.signature(fn)
        flag = inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=VERBOSE, annotation="bool")
        wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), flag])
        wrapper.__annotations__ = {**fn.__annotations__, "verbose": "bool"}
        return app.command(*args, **kwargs)(wrapper)

    return register


def main() -> None:
    """Entry point of the ``seqlvm`` console script."""
    app()

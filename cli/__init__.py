"""The ``seqlvm`` command line (importable as ``seqlvm.cli``).

Importing this package registers every command module with the typer app.
"""

from seqlvm.cli.app import app, command, main
from seqlvm.cli import (  # noqa: F401, E402  (imported to register their commands)
    demo, evaluate, forecast, generate, impute, info, plan, sample, show, train,
)

__all__ = ["app", "command", "main"]

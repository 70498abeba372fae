"""The ``seqlvm`` command line (importable as ``seqlvm.cli``).

Importing this package registers every command module with the typer app.
"""

# Imported to register their commands.
from seqlvm.cli import evaluate, forecast, generate, impute, info, sample, show, train  # noqa: F401
from seqlvm.cli.app import app, command, main
from seqlvm.cli import demo  # noqa: F401  (registers the command)

__all__ = ["app", "command", "main"]

"""The ``seqlvm`` command line (importable as ``seqlvm.cli``).

Importing this package registers every command module with the typer app.
"""

from seqlvm.cli import generate, show  # noqa: F401  (imported to register their commands)
from seqlvm.cli.app import app, command, main
from seqlvm.cli import demo  # noqa: F401  (registers the command)

__all__ = ["app", "command", "main"]

"""The ``seqlvm`` command line (importable as ``seqlvm.cli``).

Importing this package registers every command module with the typer app.
"""

from seqlvm.cli import evaluate, forecast, impute, info, sample, train
from seqlvm.cli.app import app, command, main

__all__ = ["app", "command", "evaluate", "forecast", "impute", "info", "main", "sample", "train"]

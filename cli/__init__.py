"""The ``seqlvm`` command line (importable as ``seqlvm.cli``)."""

from seqlvm.cli.app import app, main

__all__ = ["app", "main"]

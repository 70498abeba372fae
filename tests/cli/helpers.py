"""Helpers of the command-line tests: data files, running a command, checking a user error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from seqlvm.cli import app
from seqlvm.data import write_sequences


def write_series(path: Path, n: int = 40, T: int = 12, D: int = 2, A: int = 1, seed: int = 0) -> Path:
    """An (n, T, D) float series driven by (n, T, A) actions, written with write_sequences."""
    rng = np.random.default_rng(seed)
    actions = rng.normal(size=(n, T, A)).astype(np.float32)
    x = np.zeros((n, T, D), np.float32)
    for t in range(1, T):
        x[:, t] = 0.8 * x[:, t - 1] + actions[:, t].sum(-1, keepdims=True) + 0.2 * rng.normal(size=(n, D))
    return write_sequences(path, x, actions, seed=seed)


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_user_error(result, message: str) -> None:
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr

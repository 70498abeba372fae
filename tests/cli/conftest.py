"""Fixtures of the command-line tests: data files, the toy model registered, one trained run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from seqlvm.cli import app
from seqlvm.data import write_sequences
from seqlvm.models import MODELS
from tests.train.toy import ToyChains


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


@pytest.fixture(autouse=True)
def registered_toy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MODELS, "toy", ToyChains)


@pytest.fixture(scope="session")
def series_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_series(tmp_path_factory.mktemp("data") / "series.h5")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, series_file: Path) -> Path:
    """A toy model trained for two epochs on ``series_file``."""
    run = tmp_path_factory.mktemp("runs") / "toy"
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(MODELS, "toy", ToyChains)
        result = invoke("train", "toy", "--data", series_file, "--out", run,
                        "--set", "epochs=2", "--set", "batch_size=8", "--set", "progress=false",
                        "--set", "device=cpu")
    assert result.exit_code == 0, result.stderr + result.stdout
    return run

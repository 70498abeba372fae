"""Fixtures of the command-line tests: data files, the toy model registered, one trained run."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqlvm.models import MODELS
from tests.cli.helpers import invoke, write_series
from tests.train.toy import ToyChains


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

"""Fixtures of the training tests: the toy model registered, its data, run configs in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from seqlvm.models import MODELS
from seqlvm.train import TrainConfig
from tests.train.toy import Sequences, ToyChains


@pytest.fixture(autouse=True)
def registered_toy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MODELS, "toy", ToyChains)


@pytest.fixture
def data() -> tuple[Sequences, Sequences]:
    return Sequences(24, seed=0), Sequences(8, seed=1)


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., TrainConfig]:
    def make(name: str = "run", **overrides) -> TrainConfig:
        values = dict(model="toy", batch_size=4, epochs=2, lr=0.05, log_every=1, device="cpu",
                      progress=False, tensorboard=False, out_dir=str(tmp_path / name))
        values.update(overrides)
        return TrainConfig(**values)

    return make


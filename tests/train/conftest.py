"""Fixtures of the training tests: a small real model and in-memory sequence data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from seqlvm.models import MODELS
from seqlvm.train import TrainConfig
from toy import ToyChains


class Sequences(Dataset):
    """Items ``{"x": (T, D)}`` (and ``"u": (T, A)``) from a seeded AR(1) process."""

    def __init__(self, n: int = 24, T: int = 10, D: int = 2, A: int = 0, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.u = torch.randn(n, T, A, generator=g) if A else None
        z = torch.zeros(n, T, D)
        for t in range(1, T):
            z[:, t] = 0.8 * z[:, t - 1] + 0.3 * torch.randn(n, D, generator=g)
            if self.u is not None:
                z[:, t] += self.u[:, t].sum(-1, keepdim=True)
        self.x = z + 0.1 * torch.randn(n, T, D, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"x": self.x[i]}
        if self.u is not None:
            item["u"] = self.u[i]
        return item


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


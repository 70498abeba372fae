"""Two gloo processes on CPU train exactly what one process trains over the same global batches."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from seqlvm.train import Trainer
from seqlvm.train.config import TrainConfig
from tests.train.toy import Sequences, make_toy

SETTINGS = dict(
    model="toy", batch_size=8, epochs=3, lr=0.05, log_every=1, device="cpu", progress=False,
    tensorboard=False, freeze={"transition": 1}, grad_clip=5.0, lr_schedule="cosine",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    model = make_toy()
    config = TrainConfig(**SETTINGS, out_dir=str(Path(out) / "ddp"))
    Trainer(config, model, Sequences(24, seed=0), Sequences(8, seed=1)).fit()
    torch.save(model.state_dict(), Path(out) / f"rank{rank}.pt")


def test_two_processes_match_one(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    single = make_toy()
    config = TrainConfig(**SETTINGS, out_dir=str(tmp_path / "single"))
    Trainer(config, single, Sequences(24, seed=0), Sequences(8, seed=1)).fit()

    initial = make_toy().state_dict()
    for name, value in single.state_dict().items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name
        torch.testing.assert_close(ranks[0][name], value, rtol=0, atol=1e-6)
    assert not torch.equal(single.state_dict()["transition"], initial["transition"])
    # Rank 0 alone wrote the run's files.
    assert (tmp_path / "ddp" / "ckpt" / "last.pt").is_file()
    assert (tmp_path / "ddp" / "metrics.csv").is_file()

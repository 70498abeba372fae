"""SRNN through the shared Trainer: data file -> `seqlvm.train.run.train` with KL warm-up."""

from __future__ import annotations

import csv

import numpy as np
import torch

from seqlvm.data import write_sequences
from seqlvm.models import SRNN
from seqlvm.train import TrainConfig
from seqlvm.train.run import train


def test_trainer_runs_srnn_with_kl_warmup(tmp_path):
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(size=(24, 10, 2)), axis=1)
    path = write_sequences(tmp_path / "walks.h5", x)
    config = TrainConfig(
        model="srnn", data=[str(path)], batch_size=8, epochs=2, lr=3e-3, grad_clip=1.0,
        kl_warmup_steps=2, kl_weight_start=0.2, log_every=1, device="cpu", progress=False,
        tensorboard=False, out_dir=str(tmp_path / "run"),
        model_config=dict(state_dim=2, deterministic_dim=8, inference_dim=8, feature_dims=[8],
                          hidden_dim=8, output_hidden_dims=[8], likelihood="gaussian"),
    )
    result = train(config)
    with open(result.run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("kl_weight")]
    weights = [float(r["kl_weight"]) for r in rows]
    assert weights[:3] == [0.2, 0.6, 1.0] and weights[-1] == 1.0
    assert {"train/kl", "train/reconstruction", "train/elbo_per_step"} <= set(rows[0])
    ckpt = torch.load(result.run_dir / "ckpt" / "last.pt", weights_only=True)
    assert ckpt["model_name"] == "srnn" and ckpt["model_config"]["obs_dim"] == 2  # read from the file
    model = SRNN.from_config(ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    assert model.bound(torch.as_tensor(x[:2], dtype=torch.float32)).elbo.shape == (2,)

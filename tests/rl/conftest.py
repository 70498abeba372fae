"""Fixtures of the seqlvm.rl tests: tiny KVAEs and a tiny GTM-SM that fit the real environments, and a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqlvm.models import GTMSM, KVAE, MODELS, GTMSMConfig, KVAEConfig, SequenceModel
from seqlvm.train.checkpoint import save_checkpoint


def tiny_kvae(obs_shape: tuple[int, int, int], control_dim: int) -> KVAE:
    torch.manual_seed(0)
    config = KVAEConfig(obs_shape=obs_shape, control_dim=control_dim, conv_channels=4, alpha_hidden=6, decoder="gaussian")
    return KVAE(config).eval()


def save_model(model: SequenceModel, path: Path) -> Path:
    """The model as a checkpoint file, in the layout the Trainer writes (the parts load_model reads)."""
    name = next(key for key, cls in MODELS.items() if type(model) is cls)
    save_checkpoint(path, {
        "model_name": name, "model_config": model.config_dict(), "train_config": {"dtype": "float32"},
        "model": model.state_dict(),
    })
    return path


@pytest.fixture(scope="session")
def ball_kvae() -> KVAE:
    """A KVAE of BouncingBall frames (1, 32, 32) pushed by 2-d actions."""
    return tiny_kvae((1, 32, 32), 2)


@pytest.fixture(scope="session")
def nav_kvae() -> KVAE:
    """A KVAE of ImageNavigation crops (3, 8, 8) with one-hot Discrete(5) actions."""
    return tiny_kvae((3, 8, 8), 5)


@pytest.fixture(scope="session")
def ball_checkpoint(tmp_path_factory: pytest.TempPathFactory, ball_kvae: KVAE) -> Path:
    return save_model(ball_kvae, tmp_path_factory.mktemp("ckpt") / "ball.pt")


def tiny_gtmsm() -> GTMSM:
    """A tiny GTM-SM of ImageNavigation crops (3, 8, 8) with a 4-step memory."""
    torch.manual_seed(0)
    return GTMSM(GTMSMConfig(channels=(4, 4), z_dim=3, memory_steps=4)).eval()


@pytest.fixture(scope="session")
def nav_gtmsm() -> GTMSM:
    return tiny_gtmsm()

"""GTM-SM through the command line: the two-stage recipe trains (tiny budget), then every command uses it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seqlvm.data import write_sequences
from seqlvm.envs import ImageNavigationEnv, rollout
from seqlvm.train import load_checkpoint
from tests.cli.helpers import invoke

CONFIGS = Path(__file__).parents[2] / "configs"
TINY = ("--set", "max_steps=2", "--set", "batch_size=4", "--set", "progress=false", "--set", "device=cpu",
        "--set", "model_config.channels=[4, 4]", "--set", "model_config.z_dim=3")


def test_gtmsm_recipe_trains_in_two_stages_and_every_command_runs(tmp_path):
    env = ImageNavigationEnv(exploration_blocked="stay")
    policy = env.default_policy()
    eps = [rollout(env, policy, 14, i, 100 + i) for i in range(12)]
    data = write_sequences(tmp_path / "nav.h5", np.stack([e.observations for e in eps]),
                           np.stack([e.actions for e in eps]), np.stack([e.states for e in eps]), seed=0)
    stage1, stage2 = tmp_path / "map", tmp_path / "nav"
    result = invoke("train", "gtmsm", "--data", data, "--config", CONFIGS / "gtmsm_nav_map.toml", "--out", stage1,
                    "--set", "model_config.memory_steps=6", *TINY)
    assert result.exit_code == 0, result.stdout + result.stderr
    result = invoke("train", "gtmsm", "--data", data, "--config", CONFIGS / "gtmsm_navigation.toml", "--out", stage2,
                    "--set", f"init_from={stage1}", "--set", "model_config.memory_steps=10", *TINY)
    assert result.exit_code == 0, result.stdout + result.stderr
    checkpoint = load_checkpoint(stage2)
    assert checkpoint["model_config"]["obs_shape"] in ([3, 8, 8], (3, 8, 8))
    assert checkpoint["model_config"]["control_dim"] == 5 and checkpoint["model_config"]["memory_steps"] == 10
    for args in (("evaluate", stage2, "--data", data, "--split", "all"),
                 ("impute", stage2, "--data", data, "--split", "all", "--mask", "block:8:3", "--out", tmp_path / "i.gif"),
                 ("forecast", stage2, "--data", data, "--split", "all", "--context", 10, "--horizon", 4, "--out", tmp_path / "f.gif"),
                 ("sample", stage2, "--steps", 5, "--out", tmp_path / "s.gif")):
        result = invoke(*args)
        assert result.exit_code == 0, (args[0], result.stdout + result.stderr)

"""The KVAE through the command line: the recipe file trains (tiny budget), then every command uses it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seqlvm.data import write_sequences
from seqlvm.train import load_checkpoint
from tests.cli.helpers import invoke

RECIPE = Path(__file__).parents[2] / "configs" / "kvae_box.toml"


def test_kvae_recipe_trains_and_imputes_forecasts_samples(tmp_path):
    rng = np.random.default_rng(0)
    frames = (rng.random((40, 6, 8, 8, 1)) > 0.8).astype(np.uint8) * 255
    data = write_sequences(tmp_path / "frames.h5", frames, seed=0)
    out = tmp_path / "kvae"
    result = invoke("train", "kvae", "--data", data, "--config", RECIPE, "--out", out,
                    "--set", "max_steps=2", "--set", "batch_size=8", "--set", "progress=false",
                    "--set", "device=cpu", "--set", "freeze={}",
                    "--set", "model_config.conv_channels=4", "--set", "model_config.alpha_hidden=4")
    assert result.exit_code == 0, result.stdout + result.stderr
    checkpoint = load_checkpoint(out / "ckpt" / "last.pt")
    assert checkpoint["model_config"]["obs_shape"] in ([1, 8, 8], (1, 8, 8))
    for args in (("impute", out, "--data", data, "--mask", "block:2:2", "--out", tmp_path / "i.gif"),
                 ("forecast", out, "--data", data, "--context", 3, "--horizon", 3, "--out", tmp_path / "f.gif"),
                 ("sample", out, "--steps", 5, "--out", tmp_path / "s.gif")):
        result = invoke(*args)
        assert result.exit_code == 0, result.stdout + result.stderr

"""`seqlvm train MODEL` resolves its config: a file, else the run's own (resume), else the model's
recipe (``train_defaults``) over the generic defaults; --set wins over all three."""

from __future__ import annotations

import numpy as np

from seqlvm.cli.train import resolve_config
from seqlvm.data import write_sequences
from seqlvm.models import KVAE
from seqlvm.train import TrainConfig, load_checkpoint
from seqlvm.train.run import default_config
from tests.cli.helpers import invoke

RECIPE = {
    "batch_size": 32, "epochs": 80, "optimizer": "adam", "lr": 0.007, "lr_schedule": "step",
    "lr_step_epochs": 20, "lr_step_factor": 0.85, "grad_clip": 150.0, "freeze": {"alpha_net.*": 10},
}


def test_kvae_without_a_config_file_trains_with_the_reference_recipe(tmp_path):
    config = resolve_config("kvae", [tmp_path / "box.h5"], None, None, False, [])
    for key, value in RECIPE.items():
        assert getattr(config, key) == value, key
    assert (config.kl_warmup_steps, config.kl_weight_start) == (500, 0.0)
    # Every field the recipe leaves alone keeps the generic default.
    generic = TrainConfig()
    for key in set(generic.to_dict()) - set(KVAE.train_defaults) - {"model", "data"}:
        assert getattr(config, key) == getattr(generic, key), key
    assert config.model == "kvae" and config.data == [str(tmp_path / "box.h5")]
    assert config == TrainConfig.from_dict({**default_config("kvae").to_dict(), "data": config.data})


def test_set_overrides_the_recipe():
    config = resolve_config("kvae", [], None, None, False,
                            ["lr=1e-3", "epochs=5", "freeze={}", 'freeze."decoder.*"=2', "model_config.dim_a=3"])
    assert (config.lr, config.epochs, config.freeze) == (1e-3, 5, {"decoder.*": 2})
    assert (config.batch_size, config.grad_clip, config.lr_schedule) == (32, 150.0, "step")
    assert config.model_config == {"dim_a": 3}


def test_a_config_file_sets_its_keys_over_the_generic_defaults_only(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("epochs = 3\n")
    config = resolve_config("kvae", [], path, None, False, ["lr=0.002"])
    assert (config.epochs, config.lr, config.freeze, config.grad_clip) == (3, 0.002, {}, 0.0)
    assert config.batch_size == TrainConfig().batch_size


def test_models_without_a_recipe_get_the_generic_defaults():
    assert resolve_config("lgssm", [], None, None, False, []) == TrainConfig(model="lgssm")
    assert default_config("toy") == TrainConfig(model="toy")


def test_train_kvae_runs_the_recipe_and_resume_keeps_the_runs_own_config(tmp_path):
    """Through the command line: one step on tiny frames, no --config; the run's saved config is
    the recipe with the --set values on top, and --resume reads that back (not the recipe)."""
    rng = np.random.default_rng(0)
    frames = (rng.random((8, 4, 8, 8, 1)) > 0.8).astype(np.uint8) * 255
    data = write_sequences(tmp_path / "frames.h5", frames, seed=0)
    out = tmp_path / "kvae"
    result = invoke("train", "kvae", "--data", data, "--out", out,
                    "--set", "max_steps=1", "--set", "batch_size=4", "--set", "progress=false",
                    "--set", "device=cpu", "--set", "tensorboard=false",
                    "--set", "model_config.conv_channels=4", "--set", "model_config.alpha_hidden=4")
    assert result.exit_code == 0, result.stdout + result.stderr
    saved = load_checkpoint(out / "ckpt" / "last.pt")["train_config"]
    for key, value in {**RECIPE, "batch_size": 4}.items():
        assert saved[key] == value, key
    assert saved["max_steps"] == 1 and saved["kl_warmup_steps"] == 500
    resumed = resolve_config("kvae", [], None, out, True, [])
    assert resumed.batch_size == 4 and resumed.max_steps == 1 and resumed.lr == 0.007

"""TrainConfig: TOML in and out, key=value overrides, validation; the schedules it drives."""

from __future__ import annotations

import pytest

from seqlvm.train.config import TrainConfig
from seqlvm.train.schedule import kl_weight, lr_factor


def test_toml_round_trip_with_tables_and_quoted_keys(tmp_path):
    config = TrainConfig(model="toy", data=["a.h5", "b.h5"], lr=3e-4, model_config={"state_dim": 4, "shape": [1, 2], "skip": None},
                         freeze={"transition.*": 2}, grad_clip=float("inf"))
    config.save_toml(tmp_path / "run.toml")
    loaded = TrainConfig.from_toml(tmp_path / "run.toml")
    assert loaded.freeze == {"transition.*": 2}
    assert loaded.model_config == {"state_dim": 4, "shape": [1, 2]}
    assert loaded.grad_clip == float("inf") and loaded.data == ["a.h5", "b.h5"]


def test_toml_file_sets_only_what_it_names(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('model = "toy"\nepochs = 3\nlr = 1\n[model_config]\nstate_dim = 2\n')
    config = TrainConfig.from_toml(path)
    assert (config.epochs, config.lr, config.batch_size) == (3, 1.0, TrainConfig().batch_size)
    assert config.model_config == {"state_dim": 2}


def test_overrides_parse_toml_values_and_bare_strings():
    config = TrainConfig().with_overrides([
        "lr=3e-4", "optimizer=adamw", "model_config.state_dim=4", 'freeze."a.*"=2', 'data=["x.h5"]',
        "progress=false",
    ])
    assert config.lr == 3e-4 and config.optimizer == "adamw" and config.progress is False
    assert config.model_config == {"state_dim": 4} and config.freeze == {"a.*": 2}
    assert config.data == ["x.h5"]
    assert TrainConfig().with_overrides(["out_dir=2024-05-01"]).out_dir == "2024-05-01"  # a folder, not a date


@pytest.mark.parametrize("assignment, error, message", [
    ("learning_rate=1", ValueError, "unknown key 'learning_rate'"),
    ("lr", ValueError, "expected key=value"),
    ("lr.x=1", ValueError, "'lr' is not a table"),
    ("epochs=many", TypeError, "epochs must be an integer, got 'many'"),
    ("optimizer=rmsprop", ValueError, "optimizer must be one of"),
    ("batch_size=0", ValueError, "batch_size must be positive"),
    ("device=tpu", ValueError, "device must be"),
    ("freeze.a=x", TypeError, "freeze must be a table of integers"),
    ("lr_step_factor=1.5", ValueError, "lr_step_factor must be in"),
    ("lr_step_epochs=0", ValueError, "lr_step_epochs must be >= 1"),
    ("seed=-1", ValueError, r"seed must be an integer in \[0, 2\*\*32\), got -1"),
    ("split_seed=4294967296", ValueError, r"split_seed must be an integer in \[0, 2\*\*32\), got 4294967296"),
])
def test_bad_overrides_name_the_key(assignment, error, message):
    with pytest.raises(error, match=message):
        TrainConfig().with_overrides([assignment])


def test_bad_toml_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        TrainConfig.from_toml(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("lr = = 1")
    with pytest.raises(ValueError, match="not valid TOML"):
        TrainConfig.from_toml(tmp_path / "bad.toml")
    (tmp_path / "latin1.toml").write_bytes(b'out_dir = "caf\xe9"')
    with pytest.raises(ValueError, match=r"config: .*latin1.toml is not valid TOML \(UTF-8\)"):
        TrainConfig.from_toml(tmp_path / "latin1.toml")
    (tmp_path / "typo.toml").write_text("epoch = 1")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['epoch'\]"):
        TrainConfig.from_toml(tmp_path / "typo.toml")


def test_learning_rate_schedules():
    warm_cosine = lr_factor(TrainConfig(lr_schedule="cosine", lr_warmup_steps=2, lr_min_factor=0.1), 12)
    assert [warm_cosine(s) for s in (0, 1)] == [0.5, 1.0]
    assert warm_cosine(2) == pytest.approx(1.0) and warm_cosine(7) == pytest.approx(0.55)
    assert warm_cosine(12) == pytest.approx(0.1)
    linear = lr_factor(TrainConfig(lr_schedule="linear"), 10)
    assert linear(5) == pytest.approx(0.5)
    assert lr_factor(TrainConfig(), 10)(9) == 1.0
    # The KVAE recipe's staircase: x0.85 every 20 epochs of 156 steps.
    stairs = lr_factor(TrainConfig(lr_schedule="step", lr_step_epochs=20, lr_step_factor=0.85), 80 * 156, 156)
    assert [stairs(e * 156) for e in (0, 19, 20, 39, 40, 79)] == [1.0, 1.0, 0.85, 0.85, 0.85**2, 0.85**3]
    assert stairs(20 * 156 - 1) == 1.0


def test_kl_weight_is_one_without_warmup():
    assert kl_weight(TrainConfig(), 0) == 1.0
    assert kl_weight(TrainConfig(kl_warmup_steps=10, kl_weight_start=0.0), 5) == 0.5

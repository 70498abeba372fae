"""The real model through the command line: LGSSM trained in two processes, then used."""

from __future__ import annotations

import torch

from seqlvm.train import load_checkpoint, load_model
from tests.cli.helpers import assert_user_error, invoke


def test_lgssm_trains_in_two_processes_and_forecasts_with_controls(tmp_path, series_file):
    out = tmp_path / "lgssm"
    result = invoke("train", "lgssm", "--data", series_file, "--out", out, "--nproc", 2,
                    "--set", "max_steps=4", "--set", "batch_size=8", "--set", "progress=false",
                    "--set", "device=cpu", "--set", "lr=0.01", "--set", "model_config.state_dim=3")
    assert result.exit_code == 0, result.stdout + result.stderr
    checkpoint = load_checkpoint(out / "ckpt" / "last.pt")
    assert checkpoint["step"] == 4 and len(checkpoint["rng"]) == 2
    assert checkpoint["model_config"]["obs_dim"] == 2 and checkpoint["model_config"]["control_dim"] == 1
    model, _ = load_model(out)
    assert torch.isfinite(model.A).all()

    result = invoke("forecast", out, "--data", series_file, "--context", 6, "--horizon", 6,
                    "--samples", 5, "--out", tmp_path / "f.png")
    assert result.exit_code == 0, result.stderr
    result = invoke("impute", out, "--data", series_file, "--mask", "block:4:4", "--out", tmp_path / "i.png")
    assert result.exit_code == 0, result.stderr


def test_lgssm_config_errors_are_one_line(series_file):
    assert_user_error(invoke("train", "lgssm", "--data", series_file, "--set", "model_config.method=magic"),
                      "method must be 'sequential' or 'parallel'")
    assert_user_error(invoke("train", "lgssm", "--data", series_file, "--set", "model_config.rank=2"),
                      "unknown key(s) ['rank']")


def test_multi_process_runs_check_batch_and_device_before_launching(tmp_path, series_file):
    """The workers would each fail with a traceback: the parent checks first, and writes nothing."""
    out = tmp_path / "lgssm"
    base = ("train", "lgssm", "--data", series_file, "--out", out, "--nproc", 2, "--set", "progress=false")
    assert_user_error(invoke(*base, "--set", "batch_size=3", "--set", "device=cpu"),
                      "batch_size: 3 does not split over 2 processes")
    assert_user_error(invoke(*base, "--set", "batch_size=4096", "--set", "device=cpu"),
                      "batch_size: 4096 is larger than the")
    if not torch.cuda.is_available():
        assert_user_error(invoke(*base, "--set", "batch_size=8", "--set", "device=cuda"), "CUDA is not available")
    assert not (out / "config.toml").exists()

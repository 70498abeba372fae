"""Every command through typer's CliRunner: the working path and the one-line errors (exit 2)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from PIL import Image

from seqlvm.cli.common import write_video_panels
from seqlvm.train import TrainConfig, load_checkpoint
from seqlvm.train.run import prepare
from tests.cli.helpers import assert_user_error, invoke, write_series


def test_help_lists_the_commands():
    result = invoke("--help")
    for name in ("generate", "show", "train", "evaluate", "impute", "forecast", "sample", "info", "demo", "plan"):
        assert name in result.stdout


def test_train_writes_the_run_and_fills_dimensions_from_the_data(trained_run):
    assert {"config.toml", "metrics.csv", "ckpt"} <= {p.name for p in trained_run.iterdir()}
    checkpoint = load_checkpoint(trained_run / "ckpt" / "last.pt")
    assert checkpoint["model_config"] == {"obs_dim": 2, "control_dim": 1}
    assert checkpoint["train_config"]["epochs"] == 2 and checkpoint["step"] == 2 * (32 // 8)


def test_train_resume_continues_and_config_file_is_read(tmp_path, series_file):
    config = tmp_path / "run.toml"
    config.write_text('max_steps = 2\nbatch_size = 8\nprogress = false\ndevice = "cpu"\n')
    out = tmp_path / "run"
    assert invoke("train", "toy", "--data", series_file, "--config", config, "--out", out).exit_code == 0
    assert load_checkpoint(out)["step"] == 2
    result = invoke("train", "toy", "--out", out, "--resume", "--set", "max_steps=5")
    assert result.exit_code == 0, result.stderr
    assert load_checkpoint(out / "ckpt" / "last.pt")["step"] == 5


def test_train_init_from_starts_from_the_checkpoint_weights(tmp_path, series_file, trained_run):
    config = TrainConfig(model="toy", data=[str(series_file)], init_from=str(trained_run), seed=123)
    model = prepare(config)[1]
    saved = load_checkpoint(trained_run)["model"]
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    fresh = prepare(dataclasses.replace(config, init_from=""))[1]
    assert not all(torch.equal(saved[k], v) for k, v in fresh.state_dict().items())
    result = invoke("train", "toy", "--data", series_file, "--out", tmp_path / "stage2", "--set", f"init_from={trained_run}",
                    "--set", "max_steps=1", "--set", "batch_size=8", "--set", "progress=false", "--set", "device=cpu")
    assert result.exit_code == 0, result.stderr + result.stdout
    assert_user_error(invoke("train", "lgssm", "--data", series_file, "--out", tmp_path / "l",
                             "--set", f"init_from={trained_run}"), "holds a 'toy' model; expected 'lgssm'")
    assert_user_error(invoke("train", "toy", "--data", series_file, "--out", tmp_path / "m",
                             "--set", f"init_from={tmp_path / 'none'}"), "init_from: ")


def test_evaluate_prints_a_table_and_writes_json(trained_run, series_file, tmp_path):
    result = invoke("evaluate", trained_run, "--data", series_file, "--json", tmp_path / "m.json")
    assert result.exit_code == 0, result.stderr
    assert "log_likelihood_per_step" in result.stdout
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["split"] == "test" and report["num_sequences"] == 4
    assert set(report["metrics"]) == {"loss", "log_likelihood", "log_likelihood_per_step"}


@pytest.mark.parametrize("mask", ["random:0.5", "block:4:4"])
def test_impute_reports_the_error_and_draws(trained_run, series_file, tmp_path, mask):
    out = tmp_path / "impute.png"
    result = invoke("impute", trained_run, "--data", series_file, "--mask", mask, "--method", "filter", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert "rmse (hidden)" in result.stdout and out.read_bytes()[:4] == b"\x89PNG"


def test_forecast_and_sample_draw_pngs(trained_run, series_file, tmp_path):
    result = invoke("forecast", trained_run, "--data", series_file, "--context", 6, "--horizon", 6,
                    "--out", tmp_path / "f.png")
    assert result.exit_code == 0, result.stderr
    assert "rmse" in result.stdout and (tmp_path / "f.png").is_file()
    result = invoke("sample", trained_run, "--steps", 20, "--count", 2, "--out", tmp_path / "s.png")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "s.png").is_file()


def test_info_shows_model_progress_and_metrics(trained_run):
    result = invoke("info", trained_run / "ckpt" / "last.pt")
    assert result.exit_code == 0, result.stderr
    for text in ("toy", "parameters", "obs_dim", "valid/loss", "step"):
        assert text in result.stdout


def test_train_errors(tmp_path, series_file, trained_run):
    assert_user_error(invoke("train", "toy", "--data", tmp_path / "missing.h5"), "no such file")
    assert_user_error(invoke("train", "nosuchmodel", "--data", series_file), "unknown name 'nosuchmodel'")
    assert_user_error(invoke("train", "toy", "--data", series_file, "--set", "learning_rate=1"),
                      "unknown key 'learning_rate'")
    assert_user_error(invoke("train", "toy", "--data", series_file, "--set", "model_config.obs_dim=3"),
                      "has obs_dim=2, but the model config says obs_dim=3")
    assert_user_error(invoke("train", "toy", "--data", series_file, "--out", trained_run), "already holds a run")
    assert_user_error(invoke("train", "toy", "--out", tmp_path / "none", "--resume"), "no such file")
    assert_user_error(invoke("train", "toy"), "no data file")


def test_model_commands_errors(tmp_path, trained_run):
    other = write_series(tmp_path / "d3.h5", D=3)
    assert_user_error(invoke("evaluate", tmp_path / "nothing", "--data", other), "no such file or run folder")
    assert_user_error(invoke("evaluate", trained_run, "--data", other), "has obs_dim=3")
    assert_user_error(invoke("impute", trained_run, "--data", other, "--mask", "holes:3", "--out", tmp_path / "i.png"),
                      "mask: got 'holes:3'")
    assert_user_error(invoke("impute", trained_run, "--data", other, "--method", "guess", "--out", tmp_path / "i.png"),
                      "--method")
    assert_user_error(invoke("forecast", trained_run, "--data", other, "--out", tmp_path / "f.gif"),
                      "vector series are written as .png")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert_user_error(invoke("info", tmp_path / "junk.pt"), "not a readable torch checkpoint")


def test_output_paths_and_masks_are_checked_before_the_work(tmp_path, trained_run, series_file):
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "file").write_text("")
    for out in (tmp_path / "dir.png", tmp_path / "file" / "i.png"):
        assert_user_error(invoke("impute", trained_run, "--data", series_file, "--out", out), "--out: ")
        assert_user_error(invoke("sample", trained_run, "--out", out), "--out: ")
    assert_user_error(invoke("evaluate", trained_run, "--data", series_file, "--json", tmp_path / "file" / "e.json"),
                      "--json: ")
    assert_user_error(invoke("impute", trained_run, "--data", series_file, "--mask", "block:20", "--out", tmp_path / "i.png"),
                      "--mask: 'block:20' does not fit sequences of 12 steps")
    assert not (tmp_path / "i.png").exists()


@pytest.mark.parametrize("args, message", [
    (("sample", "RUN", "--steps", 0, "--out", "s.png"), "Invalid value for '--steps'"),
    (("sample", "RUN", "--steps", "many", "--out", "s.png"), "Invalid value for '--steps'"),
    (("sample", "RUN", "--colour", "red"), "No such option: --colour"),
    (("sample",), "Missing argument"),
    (("fly",), "No such command 'fly'"),
])
def test_command_line_errors_are_one_line(args, message):
    assert_user_error(invoke(*args), message)


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_shows_the_traceback(tmp_path, where):
    args = ["train", "toy", "--data", tmp_path / "missing.h5"]
    result = invoke(*(["--verbose", *args] if where == "before" else [*args, "--verbose"]))
    assert result.exit_code != 0 and isinstance(result.exception, FileNotFoundError)
    assert_user_error(invoke(*args), "missing.h5")  # and the flag does not stick to the next call


def test_video_panels_gif_shows_every_step(tmp_path):
    truth = torch.rand(2, 5, 1, 8, 8)
    write_video_panels(tmp_path / "v.gif", [truth, truth[:, :3]], scale=1)
    with Image.open(tmp_path / "v.gif") as gif:
        # 2 rows of sequences, 2 panels side by side, 1-pixel padding around each 8x8 frame.
        assert gif.n_frames == 5 and gif.size == (2 * 9 + 1, 2 * 9 + 1)

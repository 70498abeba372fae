"""A sampling model through the command line: a tiny SRNN trained, then evaluated, imputed and
forecast with the commands' defaults, the same numbers on every run of the same seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.helpers import invoke

TINY = ("state_dim=2", "deterministic_dim=4", "inference_dim=4", "feature_dims=[6]", "hidden_dim=6", "output_hidden_dims=[6]",
        "likelihood='gaussian'")


@pytest.fixture(scope="module")
def srnn_run(tmp_path_factory: pytest.TempPathFactory, series_file: Path) -> Path:
    out = tmp_path_factory.mktemp("runs") / "srnn"
    sets = [a for item in TINY for a in ("--set", f"model_config.{item}")]
    result = invoke("train", "srnn", "--data", series_file, "--out", out, "--set", "max_steps=2", "--set", "batch_size=8",
                    "--set", "progress=false", "--set", "device=cpu", *sets)
    assert result.exit_code == 0, result.stdout + result.stderr
    return out


def test_forecast_with_the_models_default_number_of_samples(srnn_run, series_file, tmp_path):
    result = invoke("forecast", srnn_run, "--data", series_file, "--context", 6, "--horizon", 4, "--out", tmp_path / "f.png")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert (tmp_path / "f.png").is_file()


def test_evaluate_and_impute_give_the_same_numbers_for_the_same_seed(srnn_run, series_file, tmp_path):
    def evaluated(name: str, seed: int) -> dict:
        path = tmp_path / f"{name}.json"
        result = invoke("evaluate", srnn_run, "--data", series_file, "--json", path, "--seed", seed)
        assert result.exit_code == 0, result.stdout + result.stderr
        return json.loads(path.read_text())["metrics"]

    assert evaluated("a", 0) == evaluated("b", 0) != evaluated("c", 1)

    def imputed(seed: int) -> str:
        result = invoke("impute", srnn_run, "--data", series_file, "--seed", seed, "--out", tmp_path / "i.png")
        assert result.exit_code == 0, result.stdout + result.stderr
        return result.stdout.split("written")[0]

    assert imputed(3) == imputed(3)

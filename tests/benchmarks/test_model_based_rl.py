"""Smoke test of benchmarks/model_based_rl.py: a tiny checkpoint, two episodes per agent, the table
and the GIF; a task without a checkpoint is skipped, saying so."""

from __future__ import annotations

import sys

import pytest

from tests.benchmarks.helpers import benchmark_module
from tests.rl.conftest import save_model, tiny_kvae

@pytest.fixture(scope="module")
def model_based_rl():
    with benchmark_module("model_based_rl") as module:
        yield module


def test_benchmark_runs_the_three_agents_and_writes_a_gif(model_based_rl, tmp_path, monkeypatch, capsys):
    checkpoint = save_model(tiny_kvae((1, 32, 32), 2), tmp_path / "ball.pt")
    monkeypatch.setattr(sys, "argv", [
        "model_based_rl.py", "--ball-checkpoint", str(checkpoint), "--episodes", "2", "--ball-context", "3",
        "--horizon", "2", "--population", "4", "--elites", "1", "--iterations", "1", "--imagine-batch", "8",
        "--gif-dir", str(tmp_path),
    ])
    model_based_rl.main()
    out = capsys.readouterr().out
    assert "goto: skipped (no --nav-checkpoint given)" in out
    header, row = [line for line in out.splitlines() if line.lstrip().startswith(("task ", "hold "))]
    assert "gap closed" in header and "imagined steps/s" in header
    assert row.split()[:2] == ["hold", "2"]
    assert (tmp_path / "model_based_rl_hold.gif").is_file()

"""The training half of ``seqlvm demo``: data file, Trainer, evaluation, pictures; reruns resume."""

from __future__ import annotations

from seqlvm.cli.demo import run_training_demo
from seqlvm.train import load_checkpoint


def test_training_demo_writes_everything_and_a_rerun_resumes(tmp_path):
    lines: list[str] = []
    scores = run_training_demo(tmp_path, epochs=1, echo=lines.append)
    for name in ("tracks.h5", "forecast.png", "impute.png", "runs/lgssm/metrics.csv", "runs/lgssm/ckpt/best.pt"):
        assert (tmp_path / name).is_file(), name
    assert scores["test_log_likelihood_per_step"] < scores["true_params_log_likelihood_per_step"] + 0.5
    step = load_checkpoint(tmp_path / "runs" / "lgssm")["step"]

    lines.clear()
    run_training_demo(tmp_path, epochs=1, echo=lines.append)
    assert any(line.startswith("Resuming") for line in lines)
    assert load_checkpoint(tmp_path / "runs" / "lgssm" / "ckpt" / "last.pt")["step"] == step

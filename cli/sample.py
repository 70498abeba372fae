"""``seqlvm sample CKPT --steps 100 --out x.png|x.gif``: sequences drawn from a trained model."""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from seqlvm.cli.app import command
from seqlvm.cli.common import check_out, is_video, load_trained, write_video_panels
from seqlvm.viz.series import plot_series


@command("sample")
def sample(
    checkpoint: Path = typer.Argument(..., help="Run folder (uses ckpt/best.pt) or checkpoint file."),
    steps: int = typer.Option(100, "--steps", min=1, help="Length of each sampled sequence."),
    out: Path = typer.Option(..., "--out", help="Picture to write: .png for vector series, .gif for video."),
    count: int = typer.Option(4, "--count", min=1, help="Sequences to sample."),
    seed: int = typer.Option(0, "--seed", help="Seed of the draws."),
) -> None:
    """Draw --count sequences of --steps steps from the model's prior (controls, if any, held at 0)."""
    model, ckpt, _ = load_trained(checkpoint)
    video = is_video(ckpt["model_config"])
    check_out(out, video)
    parameter = next(model.parameters())
    control_dim = ckpt["model_config"].get("control_dim") or 0
    u = torch.zeros(count, steps, control_dim, dtype=parameter.dtype) if control_dim else None
    with torch.no_grad():
        observations = model.sample(steps, batch_size=count, u=u, generator=torch.Generator().manual_seed(seed)).observations
    if video:
        write_video_panels(out, [observations.clamp(0, 1)])
    else:
        plot_series(out, observations, title=f"{count} samples of {ckpt['model_name']}")
    typer.echo(f"{count} sequences of {steps} steps written to {out}")

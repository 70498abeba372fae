"""``seqlvm forecast CKPT --data FILE --context 10 --horizon 30 --out plot.png|x.gif``."""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from seqlvm.cli.app import command
from seqlvm.cli.common import (
    check_out, head, is_video, load_trained, open_data, print_table, write_video_panels,
)
from seqlvm.viz.series import plot_forecast


@command("forecast")
def forecast(
    checkpoint: Path = typer.Argument(..., help="Run folder (uses ckpt/best.pt) or checkpoint file."),
    data: Path = typer.Option(..., "--data", help="HDF5 data file."),
    context: int = typer.Option(10, "--context", help="Observed steps the forecast starts from."),
    horizon: int = typer.Option(30, "--horizon", help="Steps to forecast."),
    out: Path = typer.Option(..., "--out", help="Picture to write: .png for vector series, .gif for video."),
    split: str = typer.Option("test", "--split", help="train, valid, test or all."),
    count: int = typer.Option(3, "--count", help="Sequences to forecast and draw."),
    samples: int = typer.Option(0, "--samples", min=0, help="Sample paths to draw (0: the model's default)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample paths."),
) -> None:
    """Forecast --horizon steps after the first --context steps of each sequence, against the truth."""
    if context < 1 or horizon < 1:
        raise ValueError(f"--context and --horizon: must be at least 1, got {context} and {horizon}")
    model, ckpt, _ = load_trained(checkpoint)
    video = is_video(ckpt["model_config"])
    check_out(out, video)
    dataset = open_data(data, split, ckpt)
    x, u = head(dataset, count, next(model.parameters()).dtype)
    steps = x.shape[1]
    if context >= steps:
        raise ValueError(f"--context: must be below the sequence length {steps}, got {context}")
    if u is not None and context + horizon > steps:
        raise ValueError(
            f"--horizon: the model takes actions, known for {steps - context} steps after the "
            f"context in {data}; got {horizon}"
        )
    # A model with controls is driven by the file's actions over the context and the horizon.
    controls: dict = {} if u is None else {"u": u[:, :context], "u_future": u[:, context:context + horizon]}
    if samples:  # else the model's own default (a Gaussian forecast draws none, SRNN draws 100)
        controls["num_samples"] = samples
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        result = model.forecast(x[:, :context], horizon, generator=generator, **controls)
    truth = x[:, context:context + horizon]
    error = result.mean[:, : truth.shape[1]] - truth
    print_table(f"forecast of {x.shape[0]} sequences, {context} steps of context", {
        "horizon": horizon,
        "steps with truth": truth.shape[1],
        "rmse": float(error.pow(2).mean().sqrt()),
        "mae": float(error.abs().mean()),
    })
    if video:
        write_video_panels(out, [x[:, : context + horizon], torch.cat([x[:, :context], result.mean.clamp(0, 1)], 1)])
    else:
        std = result.std if result.std is not None or result.samples is None else result.samples.std(0)
        plot_forecast(out, x[:, :context], result.mean, std, truth, title=f"forecast from {context} steps")
    typer.echo(f"picture written to {out}")

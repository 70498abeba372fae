"""``seqlvm impute CKPT --data FILE --mask random:0.5 --out x.png|x.gif``: fill in hidden steps."""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from seqlvm.cli.app import command
from seqlvm.cli.common import (
    check_out, head, is_video, load_trained, open_data, print_table, write_video_panels,
)
from seqlvm.data import parse_mask_spec
from seqlvm.data.h5 import check_seed
from seqlvm.viz.series import plot_imputation

METHODS = ("smooth", "filter")


@command("impute")
def impute(
    checkpoint: Path = typer.Argument(..., help="Run folder (uses ckpt/best.pt) or checkpoint file."),
    data: Path = typer.Option(..., "--data", help="HDF5 data file."),
    mask: str = typer.Option("random:0.5", "--mask", help="Steps to hide: random:P[:PREFIX] or block:K[:START]."),
    method: str = typer.Option("smooth", "--method", help="smooth (all observations) or filter (past only)."),
    out: Path = typer.Option(..., "--out", help="Picture to write: .png for vector series, .gif for video."),
    split: str = typer.Option("test", "--split", help="train, valid, test or all."),
    count: int = typer.Option(4, "--count", help="Sequences to impute and draw."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random mask and of the model's draws."),
) -> None:
    """Hide steps of the first --count sequences, impute them, report the error and draw the result."""
    spec = parse_mask_spec(mask)
    if method not in METHODS:
        raise ValueError(f"--method: expected one of {list(METHODS)}, got {method!r}")
    check_seed(seed, "--seed")
    model, ckpt, _ = load_trained(checkpoint)
    video = is_video(ckpt["model_config"])
    check_out(out, video)
    dataset = open_data(data, split, ckpt)
    x, u = head(dataset, count, next(model.parameters()).dtype)
    try:
        observed = spec(x.shape[0], x.shape[1], generator=torch.Generator().manual_seed(seed))
    except ValueError as err:
        raise ValueError(f"--mask: {mask!r} does not fit sequences of {x.shape[1]} steps ({err})") from None
    entries = observed.reshape(observed.shape + (1,) * (x.dim() - 2)).expand_as(x)
    torch.manual_seed(seed)  # the draws of the sampling models (SRNN, GTM-SM), for the same numbers each run
    with torch.no_grad():
        # Hidden entries are zeroed so nothing of them can reach the model but through the mask.
        result = model.impute(x.masked_fill(~entries, 0.0), observed, u=u, method=method)
    error = (result.mean - x)[~entries]
    print_table(f"imputation ({spec}, {method}) of {x.shape[0]} sequences", {
        "hidden steps": f"{int((~observed).sum())} of {observed.numel()}",
        "rmse (hidden)": float(error.pow(2).mean().sqrt()) if error.numel() else float("nan"),
        "mae (hidden)": float(error.abs().mean()) if error.numel() else float("nan"),
    })
    if video:
        write_video_panels(out, [x, x.masked_fill(~entries, 0.0), result.mean.clamp(0, 1)])
    else:
        plot_imputation(out, x, observed, result.mean, result.std, title=f"imputation ({spec}, {method})")
    typer.echo(f"picture written to {out}")

"""``seqlvm info CKPT``: what a checkpoint holds: model, config, size, progress, metrics."""

from __future__ import annotations

from pathlib import Path

import typer

from seqlvm.cli.app import command
from seqlvm.cli.common import load_trained, print_table


@command("info")
def info(
    checkpoint: Path = typer.Argument(..., help="Run folder (uses ckpt/best.pt) or checkpoint file."),
) -> None:
    """Print the model, its config and size, the training progress and the latest metrics."""
    model, ckpt, file = load_trained(checkpoint)
    train_config = ckpt["train_config"]
    print_table(f"checkpoint {file}", {
        "model": ckpt["model_name"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "file size": f"{file.stat().st_size / 1024:.1f} KiB",
        "format version": ckpt["format_version"],
        "step": ckpt["step"],
        "epoch": ckpt["epoch"],
        "best loss": ckpt["best_metric"],
        "data": ", ".join(train_config["data"]),
        "dtype": train_config["dtype"],
        "seed": train_config["seed"],
    })
    print_table("model config", ckpt["model_config"])
    print_table("train config", {k: v for k, v in train_config.items() if k not in ("model", "model_config", "data")})
    if ckpt["metrics"]:
        print_table("latest evaluation", ckpt["metrics"])

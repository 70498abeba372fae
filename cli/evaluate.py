"""``seqlvm evaluate RUN_DIR|CKPT --data FILE``: a trained model's metrics on held-out data."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seqlvm.cli.app import command
from seqlvm.cli.common import load_trained, open_data, print_table, run_folder, write_json
from seqlvm.data.h5 import check_output_path, check_seed
from seqlvm.train import evaluate as evaluate_model


@command("evaluate")
def evaluate(
    checkpoint: Path = typer.Argument(..., help="Run folder (uses ckpt/best.pt) or checkpoint file."),
    data: Path = typer.Option(..., "--data", help="HDF5 data file."),
    split: str = typer.Option("test", "--split", help="train, valid, test or all."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Sequences per batch."),
    json_out: Optional[Path] = typer.Option(
        None, "--json", help="Where to write the metrics as JSON (default: RUN/eval_SPLIT.json)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the model's Monte Carlo draws (ELBO and log-likelihood bounds)."),
) -> None:
    """The negative ELBO, each of its terms and the log-likelihood (per sequence and per step)."""
    if json_out is not None:
        check_output_path(json_out, "--json")
    check_seed(seed, "--seed")
    model, ckpt, file = load_trained(checkpoint)
    dataset = open_data(data, split, ckpt)
    metrics = evaluate_model(model, dataset, batch_size=batch_size, log_likelihood=True, seed=seed)
    print_table(f"{ckpt['model_name']} on {data} [{split}], {len(dataset)} sequences", metrics)
    path = json_out if json_out is not None else run_folder(file) / f"eval_{split}.json"
    write_json(path, {
        "checkpoint": str(file), "step": ckpt["step"], "data": str(data), "split": split,
        "num_sequences": len(dataset), "metrics": metrics,
    })
    typer.echo(f"metrics written to {path}")

"""``seqlvm train MODEL --data FILE``: train a registered model with the Trainer."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer

from seqlvm.cli.app import command
from seqlvm.train import NonFiniteLossError, Trainer, load_checkpoint
from seqlvm.train.trainer import check_batch
from seqlvm.train.checkpoint import check_run_dir
from seqlvm.train.config import TrainConfig
from seqlvm.train.distributed import launch, resolve_device
from seqlvm.train.run import default_config, prepare


def resolve_config(
    model: str,
    data: list[Path],
    config_file: Path | None,
    out: Path | None,
    resume: bool,
    assignments: list[str],
) -> TrainConfig:
    """The run's config: the TOML file (its keys over ``TrainConfig()``'s defaults), else (when
    resuming) the run's own saved config, else the model's defaults (``default_config``: its
    training recipe, e.g. KVAE's reference recipe, over ``TrainConfig()``); then MODEL, --data,
    --out and the --set assignments on top, so --set wins over all of them."""
    if config_file is not None:
        base = TrainConfig.from_toml(config_file)
    elif resume:
        run_dir = out if out is not None else TrainConfig(model=model).run_dir
        base = TrainConfig.from_dict(load_checkpoint(run_dir / "ckpt" / "last.pt")["train_config"])
    else:
        base = default_config(model)
    changes: dict[str, object] = {"model": model}
    if data:
        changes["data"] = [str(path) for path in data]
    if out is not None:
        changes["out_dir"] = str(out)
    return dataclasses.replace(base, **changes).with_overrides(assignments)


@command("train")
def train(
    model: str = typer.Argument(..., help="Registered model name, e.g. lgssm."),
    data: Optional[list[Path]] = typer.Option(None, "--data", help="HDF5 data file (repeat for several)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file of TrainConfig options (its keys over the generic defaults); without it the model's own recipe (e.g. KVAE's reference recipe) is the default."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: runs/MODEL)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from ckpt/last.pt."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Processes on this machine (torchrun, DDP)."),
    assignments: Optional[list[str]] = typer.Option(
        None, "--set", help="Override a config key: --set lr=3e-4 --set model_config.state_dim=4."
    ),
) -> None:
    """Train MODEL on --data; metrics, config and checkpoints go to the run folder."""
    resolved = resolve_config(model, data or [], config, out, resume, assignments or [])
    run_dir = resolved.run_dir
    check_run_dir(run_dir, resume)
    resolved, model_obj, train_data, valid_data = prepare(resolved)

    if nproc > 1:
        # The workers' own checks would fail in every process at once, as tracebacks: run them here.
        check_batch(resolved, len(train_data), nproc)
        resolve_device(resolved.device)
        config_path = run_dir / "config.toml"
        resolved.save_toml(config_path)
        typer.echo(f"launching {nproc} processes: torchrun ... -m seqlvm.train {config_path}")
        code = launch(nproc, config_path, resume)
        if code:
            raise typer.Exit(code)
        typer.echo(f"run folder: {run_dir}")
        return

    try:
        result = Trainer(resolved, model_obj, train_data, valid_data).fit(resume=resume)
    except NonFiniteLossError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{result.reason} at step {result.step} (epoch {result.epoch}); best loss {result.best_metric:.6g}")
    typer.echo(f"run folder:  {run_dir}")
    typer.echo(f"metrics:     {run_dir / 'metrics.csv'}")
    typer.echo(f"checkpoints: {run_dir / 'ckpt' / 'last.pt'}, {run_dir / 'ckpt' / 'best.pt'}")
    if result.reason == "interrupted":
        typer.echo(f"resume with: seqlvm train {resolved.model} --out {run_dir} --resume")
        raise typer.Exit(130)

"""Helpers shared by the commands that use a trained model: load it, open data that fits it,
check output paths, print tables. Each raises ``ValueError``/``FileNotFoundError`` naming the
argument, so the ``command`` wrapper turns it into one line and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from torch.utils.data import Dataset

from seqlvm.data.h5 import check_output_path
from seqlvm.io import atomic_write_text
from seqlvm.models import SequenceModel
from seqlvm.train import load_model, resolve_checkpoint
from seqlvm.train.run import check_data_fits, load_split
from seqlvm.viz import make_grid, save_gif

console = Console()


def load_trained(path: Path) -> tuple[SequenceModel, dict[str, Any], Path]:
    """The model of a checkpoint or run folder (best.pt, else last.pt), its checkpoint and file."""
    file = resolve_checkpoint(path)
    model, checkpoint = load_model(file)
    return model, checkpoint, file


def run_folder(checkpoint_file: Path) -> Path:
    """The run folder a checkpoint belongs to (``RUN/ckpt/x.pt`` -> ``RUN``), else its folder."""
    parent = checkpoint_file.parent
    return parent.parent if parent.name == "ckpt" else parent


def is_video(model_config: dict[str, Any]) -> bool:
    """Whether the model observes video (its config has an ``obs_shape``) rather than vectors."""
    return model_config.get("obs_shape") is not None


def open_data(path: Path, split: str, checkpoint: dict[str, Any]) -> Dataset:
    """The ``split`` of a data file, with actions when the model takes controls; checked to fit."""
    model_config = checkpoint["model_config"]
    data = load_split(
        [str(path)], split, seed=checkpoint["train_config"]["split_seed"],
        with_actions=bool(model_config.get("control_dim")),
    )
    check_data_fits(checkpoint["model_name"], model_config, data, str(path))
    return data


def head(data: Dataset, count: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first ``count`` sequences stacked: x (B, T, *event) and u (B, T, A) or None."""
    if count < 1:
        raise ValueError(f"--count: must be at least 1, got {count}")
    items = [data[i] for i in range(min(count, len(data)))]
    x = torch.stack([item["x"] for item in items]).to(dtype)
    u = torch.stack([item["u"] for item in items]).to(dtype) if "u" in items[0] else None
    return x, u


def check_out(out: Path, video: bool) -> None:
    """Refuse an output file whose type does not suit the data (GIF for video, PNG for vectors),
    or that cannot be written (a directory, or a file in the way of its folders)."""
    expected = ".gif" if video else ".png"
    if out.suffix.lower() != expected:
        kind = "video" if video else "vector series"
        raise ValueError(f"--out: {kind} are written as {expected}, got {str(out)!r}")
    check_output_path(out, "--out")


def write_video_panels(out: Path, panels: list[torch.Tensor], fps: float = 5.0, scale: int = 2) -> None:
    """An animated GIF: frame t is a grid whose row b shows sequence b of every panel side by side.

    panels: videos (B, T_k, C, H, W) in [0, 1] (e.g. truth, input, model output); a shorter
            panel shows black after its end.
    """
    steps = max(panel.shape[1] for panel in panels)
    padded = [
        torch.cat([p, p.new_zeros(p.shape[0], steps - p.shape[1], *p.shape[2:])], 1) for p in panels
    ]
    frames = [make_grid(torch.stack([p[:, t] for p in padded], 1)) for t in range(steps)]
    save_gif(frames, out, fps=fps, scale=scale)


def print_table(title: str, values: dict[str, Any]) -> None:
    """Print ``title``, then ``values`` as a two-column table."""
    typer.echo(title)
    table = Table(show_header=False)
    table.add_column("name", style="bold")
    table.add_column("value")
    for name, value in values.items():
        # Text, not markup: names and values may hold brackets.
        table.add_row(Text(name), Text(f"{value:.6g}" if isinstance(value, float) else str(value)))
    console.print(table)


def write_json(path: Path, values: dict[str, Any]) -> None:
    """Write ``values`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(values, indent=2, sort_keys=True) + "\n")


def parse_env_kwargs(text: str) -> dict[str, Any]:
    """The ``--env-kwargs`` option: a JSON object of environment keyword arguments."""
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--env-kwargs: got {text!r}, not valid JSON ({err.msg})") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"--env-kwargs: got {text!r}; expected a JSON object")
    return kwargs

"""Checkpoints: one ``torch.save`` dict of tensors and plain values, readable with ``weights_only``.

Layout (``FORMAT_VERSION`` 1)::

    format_version  int
    model_name      str               registered name, e.g. "lgssm"
    model_config    dict              the model's Config as a plain dict
    train_config    dict              the TrainConfig as a plain dict
    model           state_dict
    optimizer       state_dict
    scheduler       state_dict
    step            int               optimiser steps taken
    epoch           int               epoch in progress
    batch_in_epoch  int               batches of that epoch already consumed
    rng             list[dict]        per process: torch / numpy / python (/ cuda) generator states
    best_metric     float             best monitored loss so far (inf before the first evaluation)
    stale_evals     int               evaluations since the best one (early stopping)
    last_eval_step  int               step of the latest evaluation
    interval_loss   [float, int]      training-loss sum and count since that evaluation
    log_interval    dict              metric sums and step count since the last metrics row
    metrics         dict[str, float]  the latest evaluation's metrics

Files are written to a temporary name and renamed, so ``last.pt`` is always a whole checkpoint.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqlvm.models import SequenceModel, get_model_class
from seqlvm.io import atomic_path

FORMAT_VERSION = 1


def rng_state() -> dict[str, Any]:
    """The generator states of torch, numpy, python (and CUDA when present) as tensors/plain values."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generator states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
        "has_gauss": np_state["has_gauss"],
        "gauss": np_state["gauss"],
    })
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        torch.save({"format_version": FORMAT_VERSION, **checkpoint}, tmp)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file from a checkpoint path or a run folder (its ``best.pt``, else ``last.pt``)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / "ckpt" / name).is_file():
                return path / "ckpt" / name
        raise FileNotFoundError(f"checkpoint: run folder {str(path)!r} has no ckpt/best.pt or ckpt/last.pt")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no such file or run folder {str(path)!r}")
    return path


def check_run_dir(run_dir: Path, resume: bool) -> Path:
    """``RUN/ckpt/last.pt``, checked: it must exist to resume, and must not to start a new run
    (a finished run is never overwritten)."""
    last = run_dir / "ckpt" / "last.pt"
    if resume and not last.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint {str(last)!r} to resume from")
    if not resume and last.is_file():
        raise ValueError(
            f"out: {str(run_dir)!r} already holds a run; pass --resume to continue it or choose another --out"
        )
    return last


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint (file or run folder) onto the CPU with ``weights_only=True``."""
    path = resolve_checkpoint(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for a non-checkpoint file
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"checkpoint: {path} is not a readable torch checkpoint ({first_line})") from None
    if not isinstance(checkpoint, dict) or "format_version" not in checkpoint:
        raise ValueError(f"checkpoint: {path} is not a seqlvm checkpoint")
    if checkpoint["format_version"] > FORMAT_VERSION:
        raise ValueError(
            f"checkpoint: {path} has format version {checkpoint['format_version']}; this seqlvm "
            f"reads up to {FORMAT_VERSION}"
        )
    return checkpoint


def load_model(path: str | Path) -> tuple[SequenceModel, dict[str, Any]]:
    """The trained model (CPU, eval mode, its saved dtype) and the checkpoint it came from."""
    checkpoint = load_checkpoint(path)
    model = get_model_class(checkpoint["model_name"]).from_config(checkpoint["model_config"])
    model.to(getattr(torch, checkpoint["train_config"]["dtype"]))
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return model, checkpoint

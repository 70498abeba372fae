"""Training: one ``Trainer`` for every model, its ``TrainConfig``, checkpoints and evaluation.

``Trainer`` and ``TrainConfig`` depend only on torch; :func:`train` / :func:`prepare` build a run
from HDF5 data files (``seqlvm.data``) and are imported on first use.
"""

from typing import Any

from seqlvm.train.checkpoint import FORMAT_VERSION, load_checkpoint, load_model, resolve_checkpoint
from seqlvm.train.config import TrainConfig
from seqlvm.train.evaluation import evaluate
from seqlvm.train.trainer import NonFiniteLossError, Trainer, TrainResult, seed_everything

__all__ = [
    "FORMAT_VERSION", "NonFiniteLossError", "TrainConfig", "TrainResult", "Trainer", "evaluate",
    "load_checkpoint", "load_model", "prepare", "resolve_checkpoint", "seed_everything", "train",
]


def __getattr__(name: str) -> Any:
    if name in ("train", "prepare"):
        from seqlvm.train import run

        return getattr(run, name)
    raise AttributeError(f"module 'seqlvm.train' has no attribute {name!r}")

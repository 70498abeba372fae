"""Training: one ``Trainer`` for every model, its ``TrainConfig``, checkpoints and evaluation.

``Trainer`` takes any torch ``Dataset`` of ``{"x", "u"?, "mask"?}`` dicts; :func:`train` and
:func:`prepare` build a whole run from a config naming HDF5 data files (``seqlvm.data``).
"""

from seqlvm.train.checkpoint import FORMAT_VERSION, load_checkpoint, load_model, resolve_checkpoint
from seqlvm.train.config import TrainConfig
from seqlvm.train.evaluation import evaluate
from seqlvm.train.run import prepare, train
from seqlvm.train.trainer import NonFiniteLossError, Trainer, TrainResult, seed_everything

__all__ = [
    "FORMAT_VERSION", "NonFiniteLossError", "TrainConfig", "TrainResult", "Trainer", "evaluate",
    "load_checkpoint", "load_model", "prepare", "resolve_checkpoint", "seed_everything", "train",
]

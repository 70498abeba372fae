"""``TrainConfig``: every option of a training run, loaded from TOML and overridden by ``key=value``.

A run is fully described by its config: the model name and model config, the data, the optimiser
and its schedules, the evaluation cadence, the seed and the output folder. The resolved config is
written beside the run (``RUN/config.toml``) and into every checkpoint as a plain dict.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from seqlvm.io import atomic_write_text

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine", "linear", "step")
DTYPES = ("float32", "float64")


@dataclass
class TrainConfig:
    """All options of a training run. TOML keys are the field names; tables are the dict fields.

    Example ``run.toml``::

        model = "lgssm"
        data = ["data/tracking.h5"]
        batch_size = 16
        epochs = 20
        lr = 3e-3
        [model_config]
        state_dim = 4
        [freeze]
        "transition.*" = 2
    """

    model: str = "lgssm"
    """Registered model name, a key of ``seqlvm.models.MODELS``."""

    model_config: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the model's ``Config``. Data dimensions it leaves out (``obs_dim``,
    ``obs_shape``, ``control_dim``) are read from the data; those it gives are checked against it."""

    data: list[str] = field(default_factory=list)
    """HDF5 files written by ``seqlvm.data.write_sequences``; several files are concatenated."""

    train_split: str = "train"
    """Split of the data files to train on (``"train"``, ``"valid"``, ``"test"`` or ``"all"``)."""

    valid_split: str = "valid"
    """Split used for validation; ``""`` trains without validation (best.pt then tracks the
    training loss)."""

    split_seed: int = 0
    """Seed of the data files' train/valid/test partition (kept apart from ``seed`` so that
    changing the training seed never moves sequences between splits)."""

    batch_size: int = 32
    """Global batch size: sequences per optimiser step over all processes (each of N processes
    takes ``batch_size / N``)."""

    epochs: int = 10
    """Passes over the training split (ignored when ``max_steps`` is set)."""

    max_steps: int = 0
    """Optimiser steps to run; ``0`` runs ``epochs`` full epochs instead."""

    num_workers: int = 0
    """DataLoader worker processes per training process."""

    optimizer: str = "adam"
    """``"adam"``, ``"adamw"`` or ``"sgd"``."""

    lr: float = 1e-3
    """Peak learning rate."""

    weight_decay: float = 0.0
    """L2 penalty (decoupled for ``"adamw"``)."""

    momentum: float = 0.9
    """Momentum of ``"sgd"``."""

    lr_schedule: str = "constant"
    """Learning rate after warm-up: ``"constant"``, ``"cosine"`` or ``"linear"`` decay to
    ``lr * lr_min_factor`` at the last step, or ``"step"``: multiplied by ``lr_step_factor``
    every ``lr_step_epochs`` epochs (a staircase, as in the KVAE recipe)."""

    lr_warmup_steps: int = 0
    """Steps of linear learning-rate warm-up from 0 to ``lr``."""

    lr_min_factor: float = 0.0
    """Final learning rate of the decaying schedules, as a fraction of ``lr``."""

    lr_step_epochs: int = 1
    """Epochs between two decays of the ``"step"`` schedule."""

    lr_step_factor: float = 1.0
    """Multiplier of the learning rate at each decay of the ``"step"`` schedule."""

    grad_clip: float = 0.0
    """Clip the global gradient norm (over all parameters) to this value; ``0`` disables."""

    kl_warmup_steps: int = 0
    """Steps over which the KL weight rises linearly from ``kl_weight_start`` to 1 (see
    ``SequenceModel.kl_weight``); models without a KL term ignore it."""

    kl_weight_start: float = 0.0
    """KL weight at step 0 when ``kl_warmup_steps > 0``."""

    init_from: str = ""
    """Checkpoint (file or run folder) whose model weights start this run instead of a fresh
    initialisation: fine-tuning, or the next stage of a curriculum. The model must be the same
    and its config may differ only in fields that keep every parameter's shape (GTM-SM's
    ``memory_steps`` or ``delta``, say). ``""`` starts from scratch."""

    freeze: dict[str, int] = field(default_factory=dict)
    """Staged training: parameter-name glob pattern -> number of epochs it stays frozen, e.g.
    ``{"transition.*" = 5}`` trains everything else first. Every pattern must match a parameter."""

    eval_every: int = 0
    """Validate and checkpoint every this many steps; ``0`` does it at the end of every epoch."""

    early_stopping_patience: int = 0
    """Stop after this many evaluations without a better validation loss; ``0`` never stops."""

    log_every: int = 10
    """Write a metrics row (averaged over the interval) every this many steps."""

    seed: int = 0
    """Seed of parameter initialisation, data order and every random draw of the run."""

    device: str = "auto"
    """``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""

    dtype: str = "float32"
    """Floating-point precision of parameters and data: ``"float32"`` or ``"float64"``."""

    out_dir: str = ""
    """Run folder (metrics.csv, config.toml, ckpt/); ``""`` means ``runs/<model>``."""

    progress: bool = True
    """Show a progress bar (rank 0 only)."""

    tensorboard: bool = True
    """Also log to TensorBoard under ``RUN/tensorboard`` when the package is installed."""

    def __post_init__(self) -> None:
        _check_types(self)
        _check_values(self)

    @property
    def run_dir(self) -> Path:
        """The run folder, ``out_dir`` or ``runs/<model>``."""
        return Path(self.out_dir or f"runs/{self.model}")

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict of TOML-able values (what checkpoints store)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a dict (a parsed TOML file or a checkpoint's), rejecting unknown keys."""
        unknown = sorted(set(values) - _FIELD_NAMES)
        if unknown:
            raise ValueError(f"config: unknown key(s) {unknown}; expected some of {sorted(_FIELD_NAMES)}")
        return cls(**values)

    @classmethod
    def from_toml(cls, path: str | Path) -> "TrainConfig":
        """Load a TOML file; keys left out keep their defaults."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config: no such file {str(path)!r}")
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"config: {path} is not valid TOML (UTF-8): {err}") from None
        return cls.from_dict(values)

    def save_toml(self, path: str | Path) -> None:
        """Write the config as TOML (atomically); ``from_toml`` reads back an equal config."""
        atomic_write_text(Path(path), dumps_toml(self.to_dict()))

    def with_overrides(self, assignments: list[str] | tuple[str, ...]) -> "TrainConfig":
        """A copy with ``key=value`` assignments applied, e.g. ``"lr=3e-4"``,
        ``"model_config.state_dim=4"``, ``'freeze."transition.*"=2'``.

        Values are parsed as TOML (``3``, ``1e-3``, ``true``, ``["a.h5", "b.h5"]``); anything that
        is not valid TOML is taken as a string, so ``optimizer=adamw`` needs no quotes.
        """
        values = self.to_dict()
        for assignment in assignments:
            key, sep, raw = assignment.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ValueError(f"--set: expected key=value, got {assignment!r}")
            head, dot, sub = key.partition(".")
            if head not in _FIELD_NAMES:
                raise ValueError(f"--set: unknown key {head!r}; expected one of {sorted(_FIELD_NAMES)}")
            value = _parse_value(raw.strip())
            if dot:
                if not isinstance(values[head], dict):
                    raise ValueError(f"--set: {head!r} is not a table, so {key!r} cannot be set")
                values[head] = {**values[head], _unquote(sub): value}
            else:
                values[head] = value
        return TrainConfig.from_dict(values)


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def _parse_value(raw: str) -> Any:
    """A --set value as TOML, else as the bare string; TOML dates and times stay strings, as no
    setting is a date (``out_dir=2024-05-01`` names a folder)."""
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
    return raw if isinstance(value, (datetime.date, datetime.time)) else value


def _unquote(key: str) -> str:
    if len(key) >= 2 and key[0] == key[-1] and key[0] in "\"'":
        return key[1:-1]
    return key


def _check_types(config: TrainConfig) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        hint = hints[f.name]
        origin = typing.get_origin(hint)
        if origin is list:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            expected = "a list of strings"
        elif origin is dict:
            value_type = typing.get_args(hint)[1]
            ok = isinstance(value, dict) and all(isinstance(k, str) for k in value)
            if ok and value_type is int:
                ok = all(isinstance(v, int) and not isinstance(v, bool) for v in value.values())
            expected = "a table" if value_type is Any else "a table of integers"
        elif hint is float:
            if isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(config, f.name, value)
            ok = isinstance(value, float)
            expected = "a number"
        elif hint is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
            expected = "an integer"
        else:
            ok = isinstance(value, hint)
            expected = f"a {hint.__name__}"
        if not ok:
            raise TypeError(f"config: {f.name} must be {expected}, got {value!r}")


def _check_values(config: TrainConfig) -> None:
    def need(condition: bool, name: str, expected: str) -> None:
        if not condition:
            raise ValueError(f"config: {name} must be {expected}, got {getattr(config, name)!r}")

    need(config.batch_size > 0, "batch_size", "positive")
    need(config.epochs >= 0, "epochs", ">= 0")
    need(config.max_steps >= 0, "max_steps", ">= 0")
    need(config.epochs > 0 or config.max_steps > 0, "epochs", "positive when max_steps is 0")
    need(config.num_workers >= 0, "num_workers", ">= 0")
    need(config.optimizer in OPTIMIZERS, "optimizer", f"one of {list(OPTIMIZERS)}")
    need(config.lr > 0 and math.isfinite(config.lr), "lr", "a positive number")
    need(config.weight_decay >= 0, "weight_decay", ">= 0")
    need(0 <= config.momentum < 1, "momentum", "in [0, 1)")
    need(config.lr_schedule in LR_SCHEDULES, "lr_schedule", f"one of {list(LR_SCHEDULES)}")
    need(config.lr_warmup_steps >= 0, "lr_warmup_steps", ">= 0")
    need(0 <= config.lr_min_factor <= 1, "lr_min_factor", "in [0, 1]")
    need(config.lr_step_epochs >= 1, "lr_step_epochs", ">= 1")
    need(0 < config.lr_step_factor <= 1, "lr_step_factor", "in (0, 1]")
    need(config.grad_clip >= 0, "grad_clip", ">= 0")
    need(config.kl_warmup_steps >= 0, "kl_warmup_steps", ">= 0")
    need(0 <= config.kl_weight_start <= 1, "kl_weight_start", "in [0, 1]")
    need(all(n >= 0 for n in config.freeze.values()), "freeze", "epochs >= 0 per pattern")
    need(config.eval_every >= 0, "eval_every", ">= 0")
    need(config.early_stopping_patience >= 0, "early_stopping_patience", ">= 0")
    need(config.log_every > 0, "log_every", "positive")
    need(config.dtype in DTYPES, "dtype", f"one of {list(DTYPES)}")
    need(re.fullmatch(r"auto|cpu|cuda(:\d+)?", config.device) is not None, "device",
         "'auto', 'cpu', 'cuda' or 'cuda:N'")
    need(config.train_split in ("train", "valid", "test", "all"), "train_split",
         "one of 'train', 'valid', 'test', 'all'")
    need(config.valid_split in ("", "train", "valid", "test", "all"), "valid_split",
         "'' or one of 'train', 'valid', 'test', 'all'")
    # torch.manual_seed and numpy's legacy seeding take 0 <= seed < 2**32 (the Trainer adds the
    # epoch and rank to it, well inside that range for any real run).
    need(0 <= config.seed < 2**32, "seed", "an integer in [0, 2**32)")
    need(0 <= config.split_seed < 2**32, "split_seed", "an integer in [0, 2**32)")


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes are a subset of TOML basic-string escapes.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None)
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"config: cannot write {type(value).__name__} value {value!r} as TOML")


def dumps_toml(values: dict[str, Any]) -> str:
    """Serialise a dict of scalars, lists and one level of tables as TOML.

    TOML has no null, so ``None`` entries are written as comments and read back as absent, i.e.
    as the field's default (the checkpoint's plain-dict config keeps them exactly).
    """
    lines: list[str] = []
    tables: list[str] = []
    for key, value in values.items():
        if isinstance(value, dict):
            body = [f"[{_toml_key(key)}]"]
            for sub, item in value.items():
                if item is None:
                    body.append(f"# {_toml_key(sub)} = None")
                else:
                    body.append(f"{_toml_key(sub)} = {_toml_value(item)}")
            tables.append("\n".join(body))
        elif value is None:
            lines.append(f"# {_toml_key(key)} = None")
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    return "\n\n".join(["\n".join(lines), *tables]) + "\n"

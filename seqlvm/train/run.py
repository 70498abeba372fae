"""From a ``TrainConfig`` to a trained run: data files -> datasets, model, ``Trainer``.

:func:`prepare` does every check (files, model name, data shapes against the model config,
freeze patterns) before any training starts; :func:`train` runs it. The CLI and the ``torchrun``
worker entry point (``python -m seqlvm.train CONFIG.toml``) both go through here.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

from torch.utils.data import ConcatDataset, Dataset

from seqlvm.data import SequenceDataset
from seqlvm.models import SequenceModel, get_model_class
from seqlvm.models.base import config_from_dict
from seqlvm.train.checkpoint import load_checkpoint
from seqlvm.train.config import TrainConfig
from seqlvm.train.schedule import check_freeze_patterns
from seqlvm.train.trainer import Trainer, TrainResult, seed_everything

DATA_FIELDS = ("obs_dim", "obs_shape", "control_dim")


def default_config(model_name: str) -> TrainConfig:
    """The config of a run given no config file: ``TrainConfig()`` with the model's training
    recipe on top, then ``model = model_name``.

    The recipe is the model class's ``train_defaults``, a dict of ``TrainConfig`` fields (absent
    or empty: the generic defaults), e.g. ``KVAE.train_defaults``: the reference's Adam 0.007,
    x0.85 every 20 epochs, batch 32, 80 epochs, clip 150, alpha-LSTM frozen for 10 epochs. This
    is the one place a model's recipe becomes a config; a TOML file, by contrast, sets its keys on
    top of ``TrainConfig()`` alone, so a file means the same whatever the model's defaults.
    """
    model_class = get_model_class(model_name)
    recipe = copy.deepcopy(dict(getattr(model_class, "train_defaults", None) or {}))
    try:
        return TrainConfig.from_dict({**TrainConfig().to_dict(), **recipe, "model": model_name})
    except (TypeError, ValueError) as err:  # a bad recipe is a bug of the model class: name it
        raise type(err)(f"{model_class.__name__}.train_defaults: {err}") from None


def data_dims(data: Dataset) -> dict[str, Any]:
    """The data's dimensions under the model-config names: ``obs_dim`` (vector series) or
    ``obs_shape`` (video, ``[C, H, W]``), and ``control_dim`` (0 without actions), read from the
    first item (``"x"`` of shape (T, *event), ``"u"`` of shape (T, A))."""
    item = data[0]
    event = list(item["x"].shape[1:])
    dims: dict[str, Any] = {"obs_dim": event[0]} if len(event) == 1 else {"obs_shape": event}
    dims["control_dim"] = item["u"].shape[-1] if "u" in item else 0
    return dims


def fit_model_config(model_name: str, model_config: dict[str, Any], dims: dict[str, Any], source: str) -> dict[str, Any]:
    """``model_config`` with the data dimensions it leaves out filled in from ``dims``.

    Only fields the model's config class has are touched. A dimension the config gives that
    differs from the data's raises ``ValueError`` naming both (``source`` names the data), except
    ``control_dim = 0``: such a model ignores the data's actions.
    """
    config_class = get_model_class(model_name).config_class
    fields = {f.name for f in dataclasses.fields(config_class)}
    resolved = dict(model_config)
    for name in DATA_FIELDS:
        if name not in fields:
            continue
        if name not in dims:
            expected = "vector series (N, T, D)" if name == "obs_dim" else "video (N, T, H, W, C)"
            raise ValueError(f"data: {source} does not hold {expected}, which {model_name!r} models")
        given = resolved.get(name)
        if name == "control_dim" and given == 0:
            continue  # a model without controls simply leaves the data's actions unread
        if given is None:
            resolved[name] = dims[name]
        elif (list(given) if isinstance(given, (list, tuple)) else given) != dims[name]:
            raise ValueError(
                f"data: {source} has {name}={dims[name]}, but the model config says {name}={given}"
            )
    return resolved


def check_data_fits(model_name: str, model_config: dict[str, Any], data: Dataset, source: str) -> None:
    """Raise ``ValueError`` when ``data``'s dimensions differ from those a model was built for."""
    given = {k: model_config[k] for k in DATA_FIELDS if model_config.get(k) is not None}
    fit_model_config(model_name, given, data_dims(data), source)


def load_split(paths: list[str], split: str, seed: int, with_actions: bool | None) -> Dataset:
    """The ``split`` of each file, concatenated; every file must have the same shapes.

    with_actions: True loads the actions as ``"u"`` (and requires them), False leaves them out,
                  None loads whatever the files hold.
    """
    keys = None if with_actions is None else ("actions",) if with_actions else ()
    parts = [SequenceDataset(path, split=split, keys=keys, seed=seed) for path in paths]
    first = parts[0]
    for part in parts[1:]:
        if (part.obs_shape, part.action_dim) != (first.obs_shape, first.action_dim):
            raise ValueError(
                f"data: {part.path} has observations {part.obs_shape} and actions {part.action_dim}, "
                f"but {first.path} has {first.obs_shape} and {first.action_dim}"
            )
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def load_weights(model: SequenceModel, model_name: str, path: str) -> None:
    """Start ``model`` from the weights of the checkpoint ``path`` (``init_from``)."""
    try:
        checkpoint = load_checkpoint(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"init_from: {err}") from None
    if checkpoint["model_name"] != model_name:
        raise ValueError(f"init_from: {path} holds a {checkpoint['model_name']!r} model; expected {model_name!r}")
    theirs = checkpoint["model"]
    ours = model.state_dict()
    mismatch = sorted(
        name for name in set(ours) | set(theirs)
        if name not in ours or name not in theirs or ours[name].shape != theirs[name].shape
    )
    if mismatch:
        raise ValueError(
            f"init_from: the weights of {path} do not fit this model's config (parameters {mismatch[:4]} "
            "differ); only fields that keep every parameter's shape may change"
        )
    model.load_state_dict(theirs)


def prepare(config: TrainConfig) -> tuple[TrainConfig, SequenceModel, Dataset, Dataset | None]:
    """Check everything and build the run's pieces, before any training.

    Returns the config with the model config's data dimensions filled in, the model (seeded
    with ``config.seed``), the training data and the validation data (None without a valid split).
    """
    model_class = get_model_class(config.model)
    if not config.data:
        raise ValueError("data: no data file given (--data FILE or data = [...] in the config)")
    for path in config.data:
        if not Path(path).is_file():
            raise FileNotFoundError(f"data: no such file {path!r}")
    probe = load_split(config.data, config.train_split, config.split_seed, with_actions=None)
    source = ", ".join(config.data)
    model_config = fit_model_config(config.model, config.model_config, data_dims(probe), source)
    config = dataclasses.replace(config, model_config=model_config)
    with_actions = bool(model_config.get("control_dim", 0))
    train_data = load_split(config.data, config.train_split, config.split_seed, with_actions)
    valid_data = (
        load_split(config.data, config.valid_split, config.split_seed, with_actions)
        if config.valid_split else None
    )
    try:
        model_config_obj = config_from_dict(model_class.config_class, model_config)
    except TypeError as err:  # a required field left out: say how to give it
        raise ValueError(f"model_config: {err}; set it with --set model_config.NAME=VALUE") from None
    seed_everything(config.seed)
    model = model_class(model_config_obj)
    if config.init_from:
        load_weights(model, config.model, config.init_from)
    check_freeze_patterns(model, config.freeze)
    return config, model, train_data, valid_data


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Build the run from ``config`` (see :func:`prepare`) and train it."""
    config, model, train_data, valid_data = prepare(config)
    return Trainer(config, model, train_data, valid_data).fit(resume=resume)

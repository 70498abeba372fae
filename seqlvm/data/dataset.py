"""A torch ``Dataset`` over a sequence file written by :mod:`seqlvm.data.h5`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from seqlvm.data.h5 import FORMAT_VERSION

__all__ = ["SequenceDataset", "split_indices", "SPLITS"]

SPLITS = ("train", "valid", "test", "all")
_OPTIONAL = ("actions", "states")
_ITEM_KEY = {"observations": "x", "actions": "u", "states": "states"}


def split_indices(num_sequences: int, split: str, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> np.ndarray:
    """Sorted row indices of ``split`` among ``num_sequences`` rows.

    The rows are permuted by ``numpy.random.default_rng(seed)`` and cut at the rounded cumulative
    fractions, so the three splits are disjoint, cover every row and depend only on
    ``(num_sequences, fractions, seed)``. ``"all"`` is every row in file order.

    Checks (``ValueError`` naming the argument, also for ``"all"``): ``split`` is one of
    :data:`SPLITS`, ``fractions`` are three finite numbers >= 0 summing to 1 (to 1e-6), ``seed`` is
    an integer >= 0 (not a bool).
    """
    _check_split_arguments(split, fractions, seed)
    fr = np.asarray(fractions, dtype=np.float64)
    if split == "all":
        return np.arange(num_sequences)
    cuts = np.round(np.cumsum(fr)[:2] * num_sequences).astype(int)
    parts = np.split(np.random.default_rng(seed).permutation(num_sequences), cuts)
    return np.sort(parts[("train", "valid", "test").index(split)])


def _check_split_arguments(split: str, fractions: Sequence[float], seed: int) -> None:
    if split not in SPLITS:
        raise ValueError(f"split: got {split!r}; expected one of {SPLITS}")
    try:
        fr = np.asarray(fractions, dtype=np.float64)
    except (TypeError, ValueError):
        fr = None
    if fr is None or fr.shape != (3,) or not np.isfinite(fr).all() or (fr < 0).any() or abs(fr.sum() - 1.0) > 1e-6:
        raise ValueError(f"split_fractions: got {fractions!r}; expected three finite non-negative numbers summing to 1")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, (bool, np.bool_)) or seed < 0:
        raise ValueError(f"seed: got {seed!r}; expected an integer >= 0 (the seed of the split permutation)")


class SequenceDataset(Dataset):
    """Sequences of one HDF5 file, as float tensors in the models' layout.

    ``ds[i]`` is a dict:

    - ``"x"``: float32 ``(T, C, H, W)`` in [0, 1] (uint8 / 255) for video, ``(T, D)`` as stored for vectors;
    - ``"u"``: float32 ``(T, A)`` when ``"actions"`` is among ``keys``;
    - ``"states"``: float32 ``(T, S)`` when ``"states"`` is among ``keys``.

    The file is opened lazily, once per process, on the first item, so every ``DataLoader``
    worker gets its own handle (HDF5 handles must not cross a fork); the constructor only reads and
    checks the metadata, and raises ``FileNotFoundError`` / ``ValueError`` naming the file and the
    problem (not HDF5, truncated, wrong layout, missing key, empty split). The metadata checks:
    ``format_version`` is an integer attribute no newer than this seqlvm reads; ``/observations``
    and each loaded optional key are datasets (not groups) of the documented shapes and dtypes;
    ``env_kwargs``, when present, is a JSON object. ``split``, ``split_fractions`` and ``seed``
    are checked (see :func:`split_indices`) before the file is opened.

    Args:
        path:            the ``.h5`` file.
        split:           ``"train"``, ``"valid"``, ``"test"`` (a seeded random partition of the
                         rows, see :func:`split_indices`) or ``"all"``. A file generated as a test
                         set (e.g. the KVAE test sequences) is read with ``"all"``.
        keys:            datasets to load; ``None`` means observations plus whichever of actions
                         and states the file has. ``"observations"`` is always loaded.
        split_fractions: (train, valid, test) fractions.
        seed:            seed of the split permutation.

    Attributes: ``num_sequences`` (rows in this split, = ``len(ds)``), ``seq_len`` (T),
    ``obs_shape`` (per step, model layout: ``(C, H, W)`` or ``(D,)``), ``is_video``,
    ``action_dim`` / ``state_dim`` (None when not loaded), ``indices`` (file rows of the split),
    ``attrs`` (root attributes as Python values, ``env_kwargs`` decoded to a dict).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        split: str = "train",
        keys: Sequence[str] | None = None,
        split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
    ) -> None:
        _check_split_arguments(split, split_fractions, seed)
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"path: no such file {str(self.path)!r}")
        try:
            with h5py.File(self.path, "r") as f:
                self._read_metadata(f, keys)
        except OSError as err:
            raise ValueError(f"{self.path}: not a readable HDF5 file (truncated or corrupted?): {err}") from None
        self.indices = split_indices(self._rows, split, split_fractions, seed)
        if len(self.indices) == 0:
            raise ValueError(
                f"split: {split!r} of {self.path} is empty ({self._rows} sequences, fractions {tuple(split_fractions)})"
            )
        self.split = split
        self.num_sequences = len(self.indices)
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def _read_metadata(self, f: h5py.File, keys: Sequence[str] | None) -> None:
        if "format_version" not in f.attrs:
            raise ValueError(f"{self.path}: no 'format_version' attribute; not a seqlvm sequence file")
        version = f.attrs["format_version"]
        if not isinstance(version, (int, np.integer)) or isinstance(version, (bool, np.bool_)):
            raise ValueError(
                f"{self.path}: attribute format_version is {version!r}; expected an integer (not a seqlvm sequence file?)"
            )
        version = int(version)
        if version > FORMAT_VERSION:
            raise ValueError(f"{self.path}: format_version {version}; this seqlvm reads up to {FORMAT_VERSION}")
        present = [k for k in ("observations", *_OPTIONAL) if k in f]
        if keys is None:
            keys = present
        elif isinstance(keys, str):  # one name, not its letters
            keys = (keys,)
        unknown = [k for k in keys if k not in _ITEM_KEY]
        if unknown:
            raise ValueError(f"keys: got {unknown}; expected a subset of {list(_ITEM_KEY)}")
        missing = [k for k in dict.fromkeys(("observations", *keys)) if k not in f]
        if missing:
            raise ValueError(f"{self.path}: missing dataset(s) {missing}; the file holds {present}")
        self.keys = tuple(dict.fromkeys(("observations", *keys)))
        for key in self.keys:
            if not isinstance(f[key], h5py.Dataset):
                raise ValueError(f"{self.path}: /{key} is a {type(f[key]).__name__}, not a dataset; expected an (N, T, ...) array")
        obs = f["observations"]
        if obs.ndim == 5 and obs.dtype == np.uint8:
            self.is_video = True
            h, w, c = obs.shape[2:]
            self.obs_shape: tuple[int, ...] = (c, h, w)
        elif obs.ndim == 3 and obs.dtype.kind == "f":
            self.is_video = False
            self.obs_shape = tuple(obs.shape[2:])
        else:
            raise ValueError(
                f"{self.path}: /observations has shape {obs.shape} and dtype {obs.dtype}; expected "
                "(N, T, H, W, C) uint8 or (N, T, D) float"
            )
        self._rows, self.seq_len = int(obs.shape[0]), int(obs.shape[1])
        dims: dict[str, int | None] = {"actions": None, "states": None}
        for key in self.keys[1:]:
            ds = f[key]
            if ds.ndim != 3 or ds.shape[:2] != obs.shape[:2]:
                raise ValueError(f"{self.path}: /{key} has shape {ds.shape}; expected ({self._rows}, {self.seq_len}, dim)")
            dims[key] = int(ds.shape[2])
        self.action_dim, self.state_dim = dims["actions"], dims["states"]
        self.attrs: dict[str, Any] = {k: v.item() if isinstance(v, np.generic) else v for k, v in f.attrs.items()}
        if "env_kwargs" in self.attrs:
            text = self.attrs["env_kwargs"]
            try:
                kwargs = json.loads(text) if isinstance(text, (str, bytes)) else None
            except json.JSONDecodeError as err:
                raise ValueError(f"{self.path}: attribute env_kwargs is not valid JSON ({err.msg}): {text!r}") from None
            if not isinstance(kwargs, dict):
                raise ValueError(f"{self.path}: attribute env_kwargs is {text!r}; expected a JSON object")
            self.attrs["env_kwargs"] = kwargs

    def __len__(self) -> int:
        return self.num_sequences

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -self.num_sequences <= index < self.num_sequences:
            raise IndexError(f"index: got {index}; the {self.split!r} split has {self.num_sequences} sequences")
        row = int(self.indices[index])
        f = self._handle()
        item: dict[str, torch.Tensor] = {}
        try:
            for key in self.keys:
                item[_ITEM_KEY[key]] = torch.from_numpy(np.ascontiguousarray(f[key][row]))
        except OSError as err:
            raise ValueError(f"{self.path}: cannot read sequence {row} of /{key} (truncated or corrupted?): {err}") from None
        x = item["x"]
        item["x"] = x.permute(0, 3, 1, 2).float().div_(255.0) if self.is_video else x.float()
        for name in ("u", "states"):
            if name in item:
                item[name] = item[name].float()
        return item

    def _handle(self) -> h5py.File:
        # A handle inherited through fork is unusable in the child; reopen once per process.
        if self._file is None or self._pid != os.getpid():
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as err:
                raise ValueError(f"{self.path}: cannot open (truncated or corrupted?): {err}") from None
            self._pid = os.getpid()
        return self._file

    def close(self) -> None:
        """Close this process's file handle (it reopens on the next item)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        return state

    def __repr__(self) -> str:
        return (
            f"SequenceDataset({str(self.path)!r}, split={self.split!r}, sequences={self.num_sequences}, "
            f"seq_len={self.seq_len}, obs_shape={self.obs_shape}, keys={self.keys})"
        )

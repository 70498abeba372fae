"""The HDF5 sequence format: one file, N sequences of T steps, written atomically.

Layout (format version 1)::

    /observations  (N, T, H, W, C) uint8     video frames, or
                   (N, T, D)       float32   vector time series
    /actions       (N, T, A)       float32   optional; actions[:, t] led from x_{t-1} to x_t, actions[:, 0] = 0
    /states        (N, T, S)       float32   optional ground truth (positions, velocities, ...)
    attrs: format_version (int), seqlvm_version (str), and when known env_id (str),
           env_kwargs (JSON str), seed (int), plus any extra scalars/strings (others JSON-encoded)

Every dataset is chunked one sequence per chunk and compressed with gzip after a byte shuffle, so
reading one sequence decompresses one chunk. A file is written under a temporary name in the
destination folder and renamed over the destination only once complete: a crash or Ctrl-C leaves
no half-written file behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

import seqlvm

__all__ = ["FORMAT_VERSION", "SequenceWriter", "write_sequences"]

FORMAT_VERSION = 1
_RESERVED = {"format_version", "seqlvm_version", "env_id", "env_kwargs", "seed"}
_COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}


def _attr_value(name: str, value: Any) -> Any:
    if isinstance(value, (str, bool, int, float, np.integer, np.floating, np.bool_)):
        return value
    try:
        return json.dumps(value)
    except TypeError:
        raise TypeError(f"{name}: attribute value of type {type(value).__name__} is not JSON-serialisable") from None


class SequenceWriter:
    """Streams sequences into a new file in the format above.

    ``obs_shape`` is the per-step shape: ``(H, W, C)`` for uint8 video, ``(D,)`` for float32
    vectors. ``action_dim`` / ``state_dim`` of ``None`` leave that dataset out. Rows are written with
    :meth:`write` in any order; leaving the ``with`` block renames the file into place when every
    row was written, and otherwise (an exception or missing rows) deletes it.

    Example::

        with SequenceWriter("box.h5", 100, 20, (32, 32, 1), np.uint8, 2, 4, env_id=...) as w:
            w.write(0, observations, actions, states)       # arrays of 100 sequences
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        num_sequences: int,
        seq_len: int,
        obs_shape: tuple[int, ...],
        obs_dtype: np.dtype | type,
        action_dim: int | None = None,
        state_dim: int | None = None,
        *,
        env_id: str | None = None,
        env_kwargs: dict[str, Any] | None = None,
        seed: int | None = None,
        **attrs: Any,
    ) -> None:
        dtype = np.dtype(obs_dtype)
        if not ((dtype == np.uint8 and len(obs_shape) == 3) or (dtype == np.float32 and len(obs_shape) == 1)):
            raise ValueError(
                f"observations: got per-step shape {tuple(obs_shape)} of dtype {dtype}; expected uint8 "
                "(H, W, C) video or float32 (D,) vectors"
            )
        if num_sequences < 1 or seq_len < 1:
            raise ValueError(f"observations: got {num_sequences} sequences of {seq_len} steps; expected at least 1 of each")
        clash = _RESERVED & set(attrs)
        if clash:
            raise ValueError(f"attrs: {sorted(clash)} are set by the writer itself")
        self.path = Path(path)
        self.num_sequences, self.seq_len = int(num_sequences), int(seq_len)
        self._shapes = {"observations": (tuple(int(s) for s in obs_shape), dtype)}
        if action_dim is not None:
            self._shapes["actions"] = ((int(action_dim),), np.dtype(np.float32))
        if state_dim is not None:
            self._shapes["states"] = ((int(state_dim),), np.dtype(np.float32))
        meta: dict[str, Any] = {"format_version": FORMAT_VERSION, "seqlvm_version": seqlvm.__version__}
        if env_id is not None:
            meta["env_id"] = env_id
        if env_kwargs is not None or env_id is not None:
            meta["env_kwargs"] = json.dumps(env_kwargs or {}, sort_keys=True)
        if seed is not None:
            meta["seed"] = int(seed)
        meta.update({k: _attr_value(k, v) for k, v in attrs.items()})
        self._attrs = meta
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._file: h5py.File | None = None
        self._written = np.zeros(self.num_sequences, dtype=bool)

    def __enter__(self) -> SequenceWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = h5py.File(self._tmp, "w")
        for name, (shape, dtype) in self._shapes.items():
            full = (self.num_sequences, self.seq_len, *shape)
            self._file.create_dataset(name, shape=full, dtype=dtype, chunks=(1, *full[1:]), **_COMPRESSION)
        self._file.attrs.update(self._attrs)
        return self

    def write(
        self, start: int, observations: np.ndarray, actions: np.ndarray | None = None, states: np.ndarray | None = None
    ) -> None:
        """Write rows ``start : start + n`` from arrays of ``n`` sequences each."""
        if self._file is None:
            raise RuntimeError("SequenceWriter.write() outside its `with` block")
        n = len(observations)
        if not 0 <= start <= start + n <= self.num_sequences:
            raise ValueError(f"start: rows {start}..{start + n} fall outside 0..{self.num_sequences}")
        for name, value in (("observations", observations), ("actions", actions), ("states", states)):
            if name not in self._shapes:
                if value is not None:
                    raise ValueError(f"{name}: this file was created without {name}")
                continue
            if value is None:
                raise ValueError(f"{name}: missing; this file was created with {name}")
            shape, dtype = self._shapes[name]
            if dtype == np.uint8 and np.asarray(value).dtype != np.uint8:
                raise ValueError(f"{name}: got dtype {np.asarray(value).dtype}; expected uint8 video frames")
            expected = (n, self.seq_len, *shape)
            if np.shape(value) != expected:
                raise ValueError(f"{name}: got shape {np.shape(value)}; expected {expected}")
            self._file[name][start : start + n] = np.asarray(value, dtype=dtype)
        self._written[start : start + n] = True

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._file is not None
        self._file.close()
        self._file = None
        if exc_type is None and not self._written.all():
            self._tmp.unlink()
            missing = np.flatnonzero(~self._written)
            raise ValueError(f"{self.path}: {len(missing)} of {self.num_sequences} sequences were never written")
        if exc_type is not None:
            self._tmp.unlink(missing_ok=True)
            return
        os.replace(self._tmp, self.path)


def write_sequences(
    path: str | os.PathLike[str],
    observations: np.ndarray,
    actions: np.ndarray | None = None,
    states: np.ndarray | None = None,
    *,
    env_id: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    seed: int | None = None,
    **attrs: Any,
) -> Path:
    """Write in-memory sequences to ``path`` atomically; returns the path.

    observations: (N, T, H, W, C) uint8 video, or (N, T, D) real vectors (stored as float32).
    actions:      (N, T, A) or None;  states: (N, T, S) or None (both stored as float32).
    Extra keyword arguments become root attributes (str/number/bool as is, others as JSON).
    """
    obs = np.asarray(observations)
    if obs.ndim == 5 and obs.dtype == np.uint8:
        dtype = np.uint8
    elif obs.ndim == 3 and np.issubdtype(obs.dtype, np.number) and obs.dtype != np.uint8:
        dtype = np.float32
    else:
        raise ValueError(
            f"observations: got an array of shape {obs.shape} and dtype {obs.dtype}; expected (N, T, H, W, C) "
            "uint8 video or (N, T, D) real vectors"
        )
    dims: list[int | None] = []
    for name, value in (("actions", actions), ("states", states)):
        if value is None:
            dims.append(None)
            continue
        shape = np.shape(value)
        if len(shape) != 3 or shape[:2] != obs.shape[:2]:
            raise ValueError(f"{name}: got shape {shape}; expected ({obs.shape[0]}, {obs.shape[1]}, dim)")
        dims.append(shape[2])
    with SequenceWriter(
        path, obs.shape[0], obs.shape[1], obs.shape[2:], dtype, dims[0], dims[1],
        env_id=env_id, env_kwargs=env_kwargs, seed=seed, **attrs,
    ) as writer:
        writer.write(0, obs, actions, states)
    return Path(path)

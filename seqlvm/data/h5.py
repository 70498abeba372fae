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

import contextlib
import json
import os
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

import seqlvm

__all__ = ["FORMAT_VERSION", "MAX_SEED", "SequenceWriter", "check_output_path", "check_seed", "write_sequences"]

FORMAT_VERSION = 1
# The largest seed: the ``seed`` attribute is stored as an HDF5 uint64 (int64 below 2**63), and
# numpy's SeedSequence takes any integer >= 0, so 0 <= seed < 2**64.
MAX_SEED = 2**64 - 1
_RESERVED = {"format_version", "seqlvm_version", "env_id", "env_kwargs", "seed"}
_COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}


def check_seed(seed: Any, argument: str = "seed") -> int:
    """``seed`` as an ``int``, checked to be an integer (not a bool) with ``0 <= seed <= MAX_SEED``
    (what numpy's seeding and the file's uint64 ``seed`` attribute accept); else ``ValueError``
    naming ``argument``."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, (bool, np.bool_)) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{argument}: got {seed!r}; expected an integer with 0 <= {argument} < 2**64")
    return int(seed)


def check_output_path(path: str | os.PathLike[str], argument: str = "path") -> Path:
    """``path`` as a ``Path``, checked to be usable as a new or replaced file: not an existing
    directory, and no existing ancestor that is something other than a directory (a regular file
    in the way of its folders). Raises ``ValueError`` naming ``argument``; touches nothing."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{argument}: {str(path)!r} is a directory; expected a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{argument}: {str(path)!r} lies under {str(parent)!r}, which is a file, not a directory")
            break
    return path


def _attr_value(name: str, value: Any) -> Any:
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and not -(2**63) <= value <= MAX_SEED:
        raise ValueError(f"{name}: got the integer {value}; HDF5 attributes hold integers in [-2**63, 2**64)")
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

    The constructor checks everything it can before touching the disk: the layout, ``path`` (see
    :func:`check_output_path`), ``seed`` (see :func:`check_seed`) and the extra attributes. Whatever
    fails later (creating the temporary file, closing it, the final rename) removes the temporary
    file before the error propagates, so a failed write leaves the destination as it was and
    nothing else behind.

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
        self.path = check_output_path(path, "path")
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
            meta["seed"] = check_seed(seed)
        meta.update({k: _attr_value(k, v) for k, v in attrs.items()})
        self._attrs = meta
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._file: h5py.File | None = None
        self._written = np.zeros(self.num_sequences, dtype=bool)

    def __enter__(self) -> SequenceWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._file = h5py.File(self._tmp, "w")
            for name, (shape, dtype) in self._shapes.items():
                full = (self.num_sequences, self.seq_len, *shape)
                self._file.create_dataset(name, shape=full, dtype=dtype, chunks=(1, *full[1:]), **_COMPRESSION)
            self._file.attrs.update(self._attrs)
        except BaseException:
            self._discard()
            raise
        return self

    def _discard(self) -> None:
        """Close the temporary file if open and delete it; never raises (an error is on its way)."""
        file, self._file = self._file, None
        with contextlib.suppress(Exception):
            if file is not None:
                file.close()
        with contextlib.suppress(OSError):
            self._tmp.unlink(missing_ok=True)

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
        if self._file is None:
            raise RuntimeError("SequenceWriter.__exit__() without __enter__()")
        try:
            self._file.close()
            self._file = None
            if exc_type is not None:
                return  # the caller's exception propagates; the finally clause drops the file
            if not self._written.all():
                missing = np.flatnonzero(~self._written)
                raise ValueError(f"{self.path}: {len(missing)} of {self.num_sequences} sequences were never written")
            os.replace(self._tmp, self.path)
        finally:
            # After a successful rename the temporary name no longer exists; otherwise it goes.
            self._discard()


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

"""Polyphonic-music piano rolls (Nottingham, JSB Chorales, MuseData, Piano-midi.de) from local files.

Nothing is downloaded: point :func:`load_polyphonic` at a file or at a folder that holds one.
Two formats are read:

- ``"srnn"``: the ``.npz`` arrays prepared for the SRNN paper (``<name>_raw_batchsize16_seqlen100.npz``):
  ``x_train``/``u_train``, ``x_valid``/``u_valid`` float32 (N, 100, 88) windows of the concatenated
  songs with their one-step-shifted inputs, and ``x_test``/``u_test`` (N_songs, T_max, 88) whole
  songs with ``mask_test`` (N_songs, T_max); padding may hold NaN and is zeroed here.
- ``"json"``: ``{"train"|"valid"|"test": [song: [step: [MIDI pitch, ...]]]}`` (pitches 21..108 are
  the 88 keys), e.g. the quarter-note JSB Chorales. Each song becomes
  ``x = roll[1:]``, ``u = roll[:-1]``: the first frame is only an input, as in the SRNN test protocol.

Either way the result is a :class:`PianoRolls` whose ``x``, ``u`` and ``mask`` go straight into a
model with ``u_t = x_{t-1}`` (``SRNN.elbo(x, mask, u)``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

SPLITS = ("train", "valid", "test")
FORMATS = ("srnn", "json")
NUM_KEYS = 88
LOWEST_PITCH = 21  # MIDI A0, key 0 of the piano roll


class PianoRolls(NamedTuple):
    """One split of a piano-roll data set.

    x:    (N, T, 88) float32 binary piano rolls, the frames to score (zero where padded).
    u:    (N, T, 88) float32 the previous frame of each x_t (the model's input u_t = x_{t-1}).
    mask: (N, T) bool, True on real steps (False on padding).
    """

    x: Tensor
    u: Tensor
    mask: Tensor


def _find(folder: Path, dataset: str, fmt: str | None) -> Path:
    """The one file under ``folder`` for ``dataset`` (file name starting with it) in the format."""
    suffixes = {"srnn": (".npz",), "json": (".json",), None: (".npz", ".json")}[fmt]
    found = sorted(
        p for p in folder.rglob(f"{dataset}*") if p.is_file() and p.suffix in suffixes
    )
    if not found:
        raise ValueError(
            f"load_polyphonic: no {' or '.join(suffixes)} file named {dataset}* under {str(folder)!r}"
        )
    if len(found) > 1:
        raise ValueError(
            f"load_polyphonic: several files for dataset={dataset!r} under {str(folder)!r}: "
            f"{[str(p) for p in found]}; pass format='srnn' or 'json', or the file itself"
        )
    return found[0]


def _from_npz(path: Path, split: str) -> PianoRolls:
    with np.load(path, allow_pickle=False) as data:
        if f"x_{split}" not in data.files:
            raise ValueError(f"load_polyphonic: {str(path)!r} has no x_{split}; arrays: {data.files}")
        x = np.asarray(data[f"x_{split}"], dtype=np.float32)
        u = np.asarray(data[f"u_{split}"], dtype=np.float32)
        mask = data[f"mask_{split}"] > 0 if f"mask_{split}" in data.files else np.ones(x.shape[:2], bool)
    x = np.where(mask[..., None], np.nan_to_num(x), 0.0).astype(np.float32)
    u = np.where(mask[..., None], np.nan_to_num(u), 0.0).astype(np.float32)
    return PianoRolls(torch.from_numpy(x), torch.from_numpy(u), torch.from_numpy(mask))


def _from_json(path: Path, split: str) -> PianoRolls:
    songs = json.loads(path.read_text())
    if split not in songs:
        raise ValueError(f"load_polyphonic: {str(path)!r} has no split {split!r}; it has {sorted(songs)}")
    songs = [s for s in songs[split] if len(s) >= 2]
    T = max(len(s) for s in songs) - 1
    rolls = np.zeros((len(songs), T + 1, NUM_KEYS), np.float32)
    mask = np.zeros((len(songs), T), bool)
    for i, song in enumerate(songs):
        for t, pitches in enumerate(song):
            keys = [int(p) - LOWEST_PITCH for p in pitches]
            if any(not 0 <= k < NUM_KEYS for k in keys):
                raise ValueError(f"load_polyphonic: {str(path)!r} song {i} step {t} has a pitch outside 21..108: {pitches}")
            rolls[i, t, keys] = 1.0
        mask[i, : len(song) - 1] = True
    x = rolls[:, 1:] * mask[..., None]
    u = rolls[:, :-1] * mask[..., None]
    return PianoRolls(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(u)), torch.from_numpy(mask))


def load_polyphonic(
    path: str | Path, split: str = "train", dataset: str | None = None, format: str | None = None
) -> PianoRolls:
    """Read one split of a piano-roll data set from a local file or folder.

    path:    an ``.npz`` (SRNN arrays) or ``.json`` (pitch lists) file, or a folder searched
             recursively for the one file whose name starts with ``dataset``.
    split:   ``"train"``, ``"valid"`` or ``"test"``.
    dataset: with a folder: ``"jsb"``, ``"nottingham"``, ``"muse"``, ``"piano"`` (or any file prefix).
    format:  ``"srnn"`` or ``"json"`` to choose between files of both kinds; inferred from a file's suffix.
    Returns a :class:`PianoRolls` (x, u (N, T, 88) float32, mask (N, T) bool).
    """
    if split not in SPLITS:
        raise ValueError(f"load_polyphonic: split must be one of {SPLITS}; got {split!r}")
    if format is not None and format not in FORMATS:
        raise ValueError(f"load_polyphonic: format must be one of {FORMATS} or None; got {format!r}")
    path = Path(path)
    if path.is_dir():
        if not dataset:
            raise ValueError(f"load_polyphonic: path {str(path)!r} is a folder, so dataset (e.g. 'jsb') is required")
        path = _find(path, dataset, format)
    elif not path.is_file():
        raise ValueError(f"load_polyphonic: path {str(path)!r} is neither a file nor a folder")
    if path.suffix == ".npz":
        return _from_npz(path, split)
    if path.suffix == ".json":
        return _from_json(path, split)
    raise ValueError(f"load_polyphonic: path must end in .npz or .json; got {str(path)!r}")

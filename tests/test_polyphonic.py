"""The piano-roll loader on small files written here, and on the shipped arrays when present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seqlvm.data import load_polyphonic

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "polyphonic"


def test_json_pitch_lists_become_shifted_rolls(tmp_path):
    songs = {"train": [[[21, 60], [], [108]], [[64]]], "test": [[[60], [62], [64], [65]]]}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(songs))
    r = load_polyphonic(path, "train")
    # The one-step song is dropped: it has nothing to predict.
    assert r.x.shape == r.u.shape == (1, 2, 88) and r.mask.tolist() == [[True, True]]
    assert r.u[0, 0].nonzero().flatten().tolist() == [0, 39]   # first frame: an input only
    assert r.x[0, 0].sum() == 0 and r.x[0, 1].nonzero().flatten().tolist() == [87]
    assert torch.equal(r.u[0, 1], r.x[0, 0])


def test_npz_padding_is_zeroed_and_masked(tmp_path):
    x = np.zeros((2, 3, 88), np.float32)
    x[0, :, 5] = 1
    x[1, 2] = np.nan
    mask = np.array([[1, 1, 1], [1, 1, 0]], np.float32)
    np.savez(tmp_path / "toy_raw.npz", x_test=x, u_test=x, mask_test=mask, x_train=x[:, :2], u_train=x[:, :2])
    r = load_polyphonic(tmp_path, "test", "toy")
    assert r.mask.tolist() == [[True] * 3, [True, True, False]] and not torch.isnan(r.x).any()
    assert load_polyphonic(tmp_path / "toy_raw.npz", "train").mask.all()
    with pytest.raises(ValueError, match="x_valid"):
        load_polyphonic(tmp_path / "toy_raw.npz", "valid")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        load_polyphonic(tmp_path, "dev", "jsb")
    with pytest.raises(ValueError, match="dataset"):
        load_polyphonic(tmp_path, "train")
    with pytest.raises(ValueError, match="no .npz or .json file named jsb"):
        load_polyphonic(tmp_path, "train", "jsb")
    with pytest.raises(ValueError, match="neither a file nor a folder"):
        load_polyphonic(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="format must be"):
        load_polyphonic(tmp_path, "train", "jsb", format="midi")


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared polyphonic data not present")
def test_shipped_jsb_arrays():
    r = load_polyphonic(SHARED, "test", "jsb", format="srnn")
    assert r.x.shape == (77, 319, 88) and not torch.isnan(r.u).any()
    assert ((r.x == 0) | (r.x == 1)).all()
    m = r.mask[:, 1:]
    assert torch.equal(r.u[:, 1:][m], r.x[:, :-1][m])   # u_t = x_{t-1} on real steps
    assert load_polyphonic(SHARED, "train", "jsb", format="srnn").x.shape == (272, 100, 88)
    assert load_polyphonic(SHARED, "valid", "jsb", format="json").x.shape[0] == 76

"""SequenceDataset splits and lazy per-worker file handles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from seqlvm.data import SequenceDataset, split_indices, write_sequences


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> tuple:
    obs = np.arange(50 * 4 * 2, dtype=np.float64).reshape(50, 4, 2)
    return write_sequences(tmp_path_factory.mktemp("d") / "s.h5", obs, states=obs[..., :1]), obs


def test_splits_partition_the_rows_by_seed() -> None:
    parts = [split_indices(103, s, seed=4) for s in ("train", "valid", "test")]
    assert [len(p) for p in parts] == [82, 11, 10]  # cuts at round(82.4), round(92.7)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(103))
    np.testing.assert_array_equal(parts[0], split_indices(103, "train", seed=4))
    assert not np.array_equal(parts[0], split_indices(103, "train", seed=5))
    np.testing.assert_array_equal(split_indices(7, "all"), np.arange(7))
    with pytest.raises(ValueError, match="split_fractions"):
        split_indices(10, "train", (0.5, 0.6, 0.1))
    with pytest.raises(ValueError, match="split"):
        split_indices(10, "training")


def test_items_come_from_their_split_rows(series) -> None:
    path, obs = series
    ds = SequenceDataset(path, split="valid", seed=1)
    assert len(ds) == ds.num_sequences == 5
    for i, row in enumerate(ds.indices):
        np.testing.assert_array_equal(ds[i]["x"].numpy(), obs[row].astype(np.float32))
    with pytest.raises(IndexError):
        ds[5]
    assert SequenceDataset(path, keys="observations").keys == ("observations",)  # a name, not its letters


def test_empty_split_is_an_error(tmp_path) -> None:
    path = write_sequences(tmp_path / "tiny.h5", np.zeros((3, 2, 1)))
    with pytest.raises(ValueError, match="tiny.h5.*empty"):
        SequenceDataset(path, split="test")  # cuts at round(2.4), round(2.7): no test rows


def test_dataloader_workers_open_their_own_handles(series) -> None:
    path, obs = series
    ds = SequenceDataset(path, split="train")
    ds[0]  # the parent opens a handle first: forked workers must not reuse it
    loader = DataLoader(ds, batch_size=8, num_workers=2, shuffle=False)
    batches = list(loader)
    x = torch.cat([b["x"] for b in batches])
    assert x.shape == (40, 4, 2)
    np.testing.assert_array_equal(x.numpy(), obs[ds.indices].astype(np.float32))
    assert batches[0]["states"].shape == (8, 4, 1)
    ds.close()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(fractions=(float("nan"), 0.5, 0.5)), "split_fractions: got"),
        (dict(fractions=(float("inf"), -float("inf"), 1.0)), "split_fractions: got"),
        (dict(fractions=("a", "b", "c")), "split_fractions: got"),
        (dict(seed=-1), r"seed: got -1; expected an integer >= 0"),
        (dict(seed=1.0), r"seed: got 1.0; expected an integer >= 0"),
        (dict(seed=True), r"seed: got True; expected an integer >= 0"),
    ],
)
@pytest.mark.parametrize("split", ["train", "all"])
def test_bad_split_arguments_are_named(kwargs: dict, match: str, split: str, tmp_path) -> None:
    with pytest.raises(ValueError, match=match):
        split_indices(10, split, **kwargs)
    # SequenceDataset checks them before it looks at the file (here: there is none).
    renamed = {"split_fractions" if k == "fractions" else k: v for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=match):
        SequenceDataset(tmp_path / "absent.h5", split=split, **renamed)

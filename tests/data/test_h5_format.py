"""The HDF5 sequence format: round trips, layout, attributes, atomic writes and clear errors."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

import seqlvm
from seqlvm.data import FORMAT_VERSION, SequenceDataset, SequenceWriter, write_sequences


@pytest.fixture
def video() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "observations": rng.integers(0, 256, (6, 5, 4, 3, 2), dtype=np.uint8),
        "actions": rng.normal(size=(6, 5, 2)),
        "states": rng.normal(size=(6, 5, 4)),
    }


def test_video_round_trip(tmp_path, video) -> None:
    path = write_sequences(tmp_path / "v.h5", **video, env_id="seqlvm/Test-v0", env_kwargs={"a": 1}, seed=9, note="hi")
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["observations"][:], video["observations"])
        np.testing.assert_array_equal(f["actions"][:], video["actions"].astype(np.float32))
        for ds in f.values():
            assert ds.chunks == (1, *ds.shape[1:])
            assert ds.compression == "gzip" and ds.shuffle
        assert f["actions"].dtype == np.float32 and f["states"].dtype == np.float32
        attrs = dict(f.attrs)
    assert attrs["format_version"] == FORMAT_VERSION and attrs["seqlvm_version"] == seqlvm.__version__
    assert attrs["env_id"] == "seqlvm/Test-v0" and json.loads(attrs["env_kwargs"]) == {"a": 1}
    assert attrs["seed"] == 9 and attrs["note"] == "hi"

    ds = SequenceDataset(path, split="all")
    assert (ds.num_sequences, ds.seq_len, ds.obs_shape, ds.is_video) == (6, 5, (2, 4, 3), True)
    assert ds.attrs["env_kwargs"] == {"a": 1} and ds.attrs["seed"] == 9
    item = ds[2]
    assert item["x"].dtype == torch.float32 and item["x"].shape == (5, 2, 4, 3)
    expected = torch.from_numpy(video["observations"][2]).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(item["x"], expected, rtol=0, atol=0)
    torch.testing.assert_close(item["u"], torch.from_numpy(video["actions"][2]).float())
    torch.testing.assert_close(item["states"], torch.from_numpy(video["states"][2]).float())


def test_vector_round_trip_without_actions(tmp_path) -> None:
    obs = np.random.default_rng(1).normal(size=(4, 7, 3))
    path = write_sequences(tmp_path / "series.h5", obs)
    ds = SequenceDataset(path, split="all")
    assert ds.obs_shape == (3,) and not ds.is_video and ds.action_dim is None
    assert set(ds[0]) == {"x"}
    np.testing.assert_allclose(ds[1]["x"].numpy(), obs[1].astype(np.float32))
    with pytest.raises(ValueError, match="missing dataset.*actions"):
        SequenceDataset(path, split="all", keys=("observations", "actions"))


def test_keys_select_what_is_loaded(tmp_path, video) -> None:
    path = write_sequences(tmp_path / "v.h5", **video)
    assert set(SequenceDataset(path, split="all", keys=("observations",))[0]) == {"x"}
    assert set(SequenceDataset(path, split="all", keys=("states",))[0]) == {"x", "states"}
    with pytest.raises(ValueError, match="keys"):
        SequenceDataset(path, keys=("pixels",))


def test_write_rejects_bad_layouts(tmp_path, video) -> None:
    with pytest.raises(ValueError, match="observations"):
        write_sequences(tmp_path / "a.h5", video["observations"].astype(np.float32))  # float video
    with pytest.raises(ValueError, match="observations"):
        write_sequences(tmp_path / "a.h5", np.zeros((2, 3, 4, 5), np.uint8))  # no channel axis
    with pytest.raises(ValueError, match="actions"):
        write_sequences(tmp_path / "a.h5", video["observations"], actions=np.zeros((6, 4, 2)))
    with pytest.raises(ValueError, match="attrs"):
        write_sequences(tmp_path / "a.h5", video["observations"], format_version=3)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path, video) -> None:
    path = write_sequences(tmp_path / "v.h5", **video)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="interrupted"):
        with SequenceWriter(path, 6, 5, (4, 3, 2), np.uint8) as writer:
            writer.write(0, video["observations"][:3])
            raise RuntimeError("interrupted")
    with pytest.raises(ValueError, match="never written"):
        with SequenceWriter(path, 6, 5, (4, 3, 2), np.uint8) as writer:
            writer.write(0, video["observations"][:3])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["v.h5"]  # no temporary file left over


def test_missing_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nothere.h5"):
        SequenceDataset(tmp_path / "nothere.h5")


def test_not_hdf5_and_truncated_files(tmp_path, video) -> None:
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x00" * 4096)
    with pytest.raises(ValueError, match="junk.h5.*not a readable HDF5"):
        SequenceDataset(junk)
    whole = write_sequences(tmp_path / "whole.h5", **video).read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="cut.h5.*truncated"):
        SequenceDataset(cut, split="all")


def test_foreign_and_wrong_layout_files(tmp_path) -> None:
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["images"] = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="foreign.h5.*format_version"):
        SequenceDataset(foreign)
    wrong = tmp_path / "wrong.h5"
    with h5py.File(wrong, "w") as f:
        f.attrs["format_version"] = FORMAT_VERSION
        f["observations"] = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"wrong.h5.*/observations has shape \(2, 3, 4, 4\)"):
        SequenceDataset(wrong)
    newer = tmp_path / "newer.h5"
    with h5py.File(newer, "w") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
        f["observations"] = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="newer.h5.*format_version"):
        SequenceDataset(newer)
    mismatched = tmp_path / "mismatched.h5"
    with h5py.File(mismatched, "w") as f:
        f.attrs["format_version"] = FORMAT_VERSION
        f["observations"] = np.zeros((2, 3, 4), np.float32)
        f["actions"] = np.zeros((2, 4, 1), np.float32)
    with pytest.raises(ValueError, match="mismatched.h5.*/actions has shape"):
        SequenceDataset(mismatched, split="all")


def test_writer_checks_path_and_seed_before_touching_the_disk(tmp_path, video) -> None:
    """A directory as destination, a file in the way of its folders, or a seed HDF5 cannot store
    (numpy seeds are >= 0; the attribute is at most uint64) is a named ValueError, and nothing is written."""
    folder = tmp_path / "dir.h5"
    folder.mkdir()
    with pytest.raises(ValueError, match=r"path: .*dir.h5' is a directory"):
        write_sequences(folder, **video)
    (tmp_path / "plain").write_text("x")
    with pytest.raises(ValueError, match=r"path: .*plain/x.h5' lies under .*plain', which is a file"):
        write_sequences(tmp_path / "plain" / "x.h5", **video)
    for seed in (2**64, 2**100, -1, True, 1.5):
        with pytest.raises(ValueError, match=r"seed: got .*; expected an integer with 0 <= seed < 2\*\*64"):
            write_sequences(tmp_path / "s.h5", **video, seed=seed)
    with pytest.raises(ValueError, match="big: got the integer"):
        write_sequences(tmp_path / "s.h5", **video, big=2**70)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.h5", "plain"]
    assert list(folder.iterdir()) == []
    path = write_sequences(tmp_path / "s.h5", **video, seed=2**64 - 1)  # the largest seed round-trips
    assert SequenceDataset(path, split="all").attrs["seed"] == 2**64 - 1


def test_writer_removes_its_temporary_file_when_creating_it_fails(tmp_path, video, monkeypatch) -> None:
    path = write_sequences(tmp_path / "v.h5", **video)
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(h5py.Group, "create_dataset", disk_full)
    with pytest.raises(OSError, match="No space left"):
        with SequenceWriter(path, 6, 5, (4, 3, 2), np.uint8):
            pass
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["v.h5"]


def test_writer_removes_its_temporary_file_when_the_final_rename_fails(tmp_path, video, monkeypatch) -> None:
    import seqlvm.data.h5 as h5

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(h5.os, "replace", refuse)
    with pytest.raises(PermissionError):
        write_sequences(tmp_path / "v.h5", **video)
    assert list(tmp_path.iterdir()) == []


def test_wrong_layout_names_the_file_and_the_problem(tmp_path) -> None:
    """Groups where datasets belong, a format_version that is not an integer and env_kwargs that
    are not a JSON object are ValueErrors naming the file, not AttributeError/JSONDecodeError."""
    cases = {
        "obs_group": (lambda f: f.create_group("observations"), r"/observations is a Group, not a dataset"),
        "actions_group": (lambda f: f.create_group("actions"), r"/actions is a Group, not a dataset"),
        "version_str": (lambda f: f.attrs.__setitem__("format_version", "one"), r"format_version is 'one'; expected an integer"),
        "version_float": (lambda f: f.attrs.__setitem__("format_version", 1.5), r"format_version is .*1\.5.*; expected an integer"),
        "kwargs_json": (lambda f: f.attrs.__setitem__("env_kwargs", "{bad"), r"env_kwargs is not valid JSON"),
        "kwargs_list": (lambda f: f.attrs.__setitem__("env_kwargs", "[1]"), r"env_kwargs is '\[1\]'; expected a JSON object"),
    }
    for name, (spoil, message) in cases.items():
        path = tmp_path / f"{name}.h5"
        with h5py.File(path, "w") as f:
            f.attrs["format_version"] = FORMAT_VERSION
            if name != "obs_group":
                f["observations"] = np.zeros((4, 3, 2, 2, 1), np.uint8)
            spoil(f)
        with pytest.raises(ValueError, match=f"{name}.h5: .*{message}"):
            SequenceDataset(path, split="all")

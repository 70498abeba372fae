"""``seqlvm generate`` / ``seqlvm show``: user errors on paths, seeds and episodes, and pixels."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from PIL import Image

import seqlvm.viz
from tests.cli.helpers import assert_user_error, invoke


def _generate(out, *args: str):
    return invoke("generate", "seqlvm/BouncingBall-v0", "-n", "1", "-T", "2", "-o", out, *args)


def test_seed_out_of_range_is_a_user_error(tmp_path) -> None:
    result = _generate(tmp_path / "q.h5", "--seed", str(2**70))
    assert_user_error(result, f"--seed: got {2**70}; expected an integer with 0 <= --seed < 2**64")
    assert list(tmp_path.iterdir()) == []


def test_output_that_is_a_directory_is_a_user_error_even_with_force(tmp_path) -> None:
    folder = tmp_path / "dir.h5"
    folder.mkdir()
    assert_user_error(_generate(folder, "--force"), "--out: ")
    assert [p.name for p in tmp_path.iterdir()] == ["dir.h5"] and list(folder.iterdir()) == []


def test_output_under_a_regular_file_is_a_user_error(tmp_path) -> None:
    (tmp_path / "somefile").write_text("x")
    assert_user_error(_generate(tmp_path / "somefile" / "q.h5"), "--out: ")
    data = tmp_path / "b.h5"
    assert _generate(data).exit_code == 0
    assert_user_error(invoke("show", data, "-o", tmp_path / "somefile" / "p.gif"), "--out: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.h5", "somefile"]


def test_os_errors_are_one_line_user_errors(tmp_path, monkeypatch) -> None:
    """An OSError (here a refused write) is the user's to fix: one line naming the path, exit 2."""
    data = tmp_path / "b.h5"
    assert _generate(data).exit_code == 0

    def refuse(images, path, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(seqlvm.viz, "save_grid", refuse)
    out = tmp_path / "p.png"
    assert_user_error(invoke("show", data, "-o", out), f"{out}: Permission denied")


def test_episode_ending_early_is_a_user_error(tmp_path) -> None:
    result = invoke("generate", "CartPole-v1", "-n", "1", "-T", "60", "--policy", "random", "-o", tmp_path / "cp.h5")
    assert_user_error(result, "num_steps: got 60; 'CartPole-v1' terminated episode 0 at step")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("crop", [3, 1])
def test_show_draws_the_stored_pixels_whatever_the_frame_width(tmp_path, crop: int) -> None:
    """Frames 3 (or 1) pixels wide are not taken for channel-last: the grid holds /observations."""
    data = tmp_path / "nav.h5"
    kwargs = f'{{"image_size": 9, "crop": {crop}, "step": 3}}'
    result = invoke("generate", "seqlvm/ImageNavigation-v0", "-n", "2", "-T", "3", "-o", data, "--env-kwargs", kwargs)
    assert result.exit_code == 0, result.stderr
    png = tmp_path / "grid.png"
    assert invoke("show", data, "-e", "1", "-e", "0", "-o", png, "--scale", "1").exit_code == 0
    with h5py.File(data, "r") as f:
        obs = f["observations"][:]  # (N, T, H, W, C)
    grid = np.asarray(Image.open(png).convert("RGB"))
    assert grid.shape == (2 * (crop + 1) + 1, 3 * (crop + 1) + 1, 3)
    for r, episode in enumerate((1, 0)):
        for t in range(3):
            top, left = 1 + r * (crop + 1), 1 + t * (crop + 1)
            np.testing.assert_array_equal(grid[top : top + crop, left : left + crop], obs[episode, t])
    gif = tmp_path / "ep.gif"
    assert invoke("show", data, "-e", "0", "-o", gif, "--scale", "1").exit_code == 0
    with Image.open(gif) as img:
        assert img.n_frames == 3 and img.size == (crop, crop)

"""GIF / PNG helpers: layouts in, files with the right frames and sizes out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from seqlvm.viz import hstack_videos, make_grid, save_gif, save_grid, to_uint8_frames


def test_to_uint8_frames_accepts_every_layout() -> None:
    hwc = np.random.default_rng(0).integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    chw_float = torch.from_numpy(hwc).permute(0, 3, 1, 2).float() / 255
    np.testing.assert_array_equal(to_uint8_frames(chw_float), hwc)
    np.testing.assert_array_equal(to_uint8_frames(hwc), hwc)
    grey = np.zeros((5, 6, 7), bool)
    grey[:, 1, 2] = True
    out = to_uint8_frames(grey)
    assert out.shape == (5, 6, 7, 1) and out[0, 1, 2, 0] == 255 and out.sum() == 5 * 255
    with pytest.raises(ValueError, match="channels"):
        to_uint8_frames(np.zeros((2, 3, 4, 5), np.uint8), channel_first=False)


def test_save_gif_round_trip(tmp_path) -> None:
    video = np.zeros((4, 8, 8, 1), np.uint8)
    for t in range(4):
        video[t, t, t] = 255
    path = save_gif(video, tmp_path / "a.gif", fps=10, scale=3)
    with Image.open(path) as img:
        assert img.n_frames == 4 and img.size == (24, 24)
        img.seek(2)
        frame = np.asarray(img.convert("L"))
    assert frame[6:9, 6:9].min() == 255 and frame.sum() == 9 * 255


def test_grid_and_side_by_side() -> None:
    images = np.ones((5, 4, 3, 1), np.uint8)
    assert make_grid(images, ncols=2, pad=1).shape == (3 * 5 + 1, 2 * 4 + 1, 1)
    assert make_grid(np.ones((2, 3, 4, 3, 3), np.uint8), pad=0).shape == (8, 9, 3)
    both = hstack_videos([np.zeros((6, 4, 5, 1), np.uint8), np.ones((6, 4, 3, 3), np.float32)], pad=2)
    assert both.shape == (6, 4, 10, 3) and both[0, 0, -1].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match="videos"):
        hstack_videos([np.zeros((6, 4, 5, 1)), np.zeros((5, 4, 5, 1))])


def test_save_grid_png(tmp_path) -> None:
    path = save_grid(np.zeros((3, 2, 2, 3), np.uint8), tmp_path / "g.png", scale=2, pad=1)
    with Image.open(path) as img:
        assert img.size == (3 * (4 + 1) + 1, 4 + 2) and img.mode == "RGB"  # 2×2 images at scale 2, 1-px pad


@pytest.mark.parametrize("write", ["gif", "grid"])
def test_a_failed_write_leaves_the_old_picture(write, tmp_path, monkeypatch) -> None:
    path = tmp_path / f"a.{'gif' if write == 'gif' else 'png'}"
    frames = np.zeros((2, 4, 4, 1), np.uint8)
    save = save_gif if write == "gif" else save_grid
    save(frames, path)
    before = path.read_bytes()

    def full_disk(self, fp, *args, **kwargs):  # half a file, then the disk is full
        with open(fp, "wb") as handle:
            handle.write(b"GIF8")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save(frames + 255, path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [path.name]

"""Writing frames and videos to GIF and PNG (generic: data sets, reconstructions, forecasts).

Every function takes frames as numpy arrays or torch tensors, uint8 in [0, 255] or float in
[0, 1], channel-last ``(..., H, W, C)`` or channel-first ``(..., C, H, W)`` with C ∈ {1, 3}
(see :func:`to_uint8_frames`), so model outputs can be saved without conversion.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from seqlvm.io import atomic_path

__all__ = ["hstack_videos", "make_grid", "save_gif", "save_grid", "to_uint8_frames"]


def to_uint8_frames(frames: Any, channel_first: bool | None = None) -> np.ndarray:
    """Frames ``(..., H, W)``, ``(..., H, W, C)`` or ``(..., C, H, W)`` as uint8 ``(..., H, W, C)``.

    Floats are taken to lie in [0, 1] (clipped, then ×255 and rounded). ``channel_first=None``
    guesses: channel-last when the last axis has size 1 or 3, else channel-first when the third
    axis from the end has size 1 or 3, else a single grey channel is added.
    """
    if hasattr(frames, "detach"):  # a torch tensor, without importing torch here
        frames = frames.detach().cpu().numpy()
    arr = np.asarray(frames)
    if arr.ndim < 2:
        raise ValueError(f"frames: got shape {arr.shape}; expected (..., H, W[, C])")
    if channel_first is None:
        if arr.ndim >= 3 and arr.shape[-1] in (1, 3):
            channel_first = False
        elif arr.ndim >= 3 and arr.shape[-3] in (1, 3):
            channel_first = True
        else:
            arr = arr[..., None]
            channel_first = False
    if channel_first:
        arr = np.moveaxis(arr, -3, -1)
    if arr.shape[-1] not in (1, 3):
        raise ValueError(f"frames: got {arr.shape[-1]} channels; expected 1 or 3")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * np.uint8(255)
    return np.round(np.clip(arr.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def _upscale(img: np.ndarray, scale: int) -> np.ndarray:
    if scale < 1:
        raise ValueError(f"scale: got {scale}; expected an integer >= 1")
    return img if scale == 1 else img.repeat(scale, axis=-3).repeat(scale, axis=-2)


def _to_pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(img[..., 0], "L") if img.shape[-1] == 1 else Image.fromarray(img, "RGB")


def hstack_videos(videos: Sequence[Any], pad: int = 1, pad_value: int = 128) -> np.ndarray:
    """Videos ``(T, H, W, C)`` (any accepted layout) side by side as one uint8 ``(T, H, ΣW + pad, C)``
    video, e.g. ground truth beside a reconstruction. They must share T and H; grey ones are
    broadcast to RGB when mixed with colour ones."""
    vids = [to_uint8_frames(v) for v in videos]
    if not vids:
        raise ValueError("videos: got none; expected at least one (T, H, W, C) video")
    if len({v.shape[:2] for v in vids}) != 1 or any(v.ndim != 4 for v in vids):
        raise ValueError(f"videos: got shapes {[v.shape for v in vids]}; expected (T, H, W, C) with equal T and H")
    channels = max(v.shape[-1] for v in vids)
    parts: list[np.ndarray] = []
    for i, v in enumerate(vids):
        if i:
            parts.append(np.full((*v.shape[:2], pad, channels), pad_value, np.uint8))
        parts.append(np.broadcast_to(v, (*v.shape[:3], channels)))
    return np.concatenate(parts, axis=2)


def save_gif(frames: Any, path: str | os.PathLike[str], fps: float = 5.0, scale: int = 1, loop: bool = True) -> Path:
    """Write a video ``(T, H, W[, C])`` as an animated GIF at ``fps`` frames per second, each pixel
    enlarged to ``scale × scale`` (nearest neighbour: tiny binary frames stay crisp)."""
    video = to_uint8_frames(frames)
    if video.ndim != 4 or len(video) == 0:
        raise ValueError(f"frames: got shape {video.shape} after conversion; expected (T, H, W, C) with T >= 1")
    if fps <= 0:
        raise ValueError(f"fps: got {fps}; expected > 0")
    images = [_to_pil(_upscale(f, scale)) for f in video]
    path = Path(path)
    # GIF stores delays in 1/100 s; loop=0 means forever, omitting it plays once.
    extra = {"loop": 0} if loop else {}
    with atomic_path(path) as tmp:
        images[0].save(tmp, save_all=True, append_images=images[1:], duration=max(20, round(1000 / fps)), optimize=True, **extra)
    return path


def make_grid(images: Any, ncols: int | None = None, pad: int = 1, pad_value: int = 128) -> np.ndarray:
    """Tile images into one uint8 ``(H', W', C)`` picture.

    ``(N, H, W, C)`` fills rows of ``ncols`` (default: one row); ``(R, K, H, W, C)`` puts row r of
    the grid from ``images[r]`` (e.g. episodes × time). Any layout of :func:`to_uint8_frames`.
    """
    arr = to_uint8_frames(images)
    if arr.ndim == 4:
        n = len(arr)
        ncols = n if ncols is None else ncols
        if ncols < 1:
            raise ValueError(f"ncols: got {ncols}; expected >= 1")
        nrows = -(-n // ncols)
        blank = np.full((nrows * ncols - n, *arr.shape[1:]), pad_value, np.uint8)
        arr = np.concatenate([arr, blank]).reshape(nrows, ncols, *arr.shape[1:])
    elif arr.ndim != 5:
        raise ValueError(f"images: got shape {arr.shape}; expected (N, H, W, C) or (rows, cols, H, W, C)")
    rows, cols, h, w, c = arr.shape
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), pad_value, np.uint8)
    for r in range(rows):
        for k in range(cols):
            top, left = pad + r * (h + pad), pad + k * (w + pad)
            out[top : top + h, left : left + w] = arr[r, k]
    return out


def save_grid(
    images: Any, path: str | os.PathLike[str], ncols: int | None = None, scale: int = 1, pad: int = 1, pad_value: int = 128
) -> Path:
    """Write :func:`make_grid` of ``images`` as a PNG (pixels enlarged ``scale ×``)."""
    grid = make_grid(_upscale(to_uint8_frames(images), scale), ncols=ncols, pad=pad, pad_value=pad_value)
    path = Path(path)
    with atomic_path(path) as tmp:
        _to_pil(grid).save(tmp)
    return path

"""Image navigation (the GTM-SM 2-D task): an agent walks over an image and sees only a crop.

The agent's position is a cell ``(row, col)`` of a grid whose crops tile the image: the crop of
cell ``(i, j)`` has its top-left pixel at ``(step·i, step·j)``, so there are
``n = (image_size − crop) // step + 1`` cells per axis (9 for the default 32/8/3, as in models.md §5.4).
"""

from __future__ import annotations

import math
import os
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from PIL import Image

from seqlvm.envs.policies import Policy, RandomWalkPolicy

__all__ = ["ImageNavigationEnv", "procedural_image", "load_image"]


def load_image(path: str | os.PathLike[str], size: int) -> np.ndarray:
    """An image file as RGB ``(size, size, 3)`` uint8: centre-cropped to a square, then resized."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image: no such file {os.fspath(path)!r}")
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
    except OSError as err:
        raise ValueError(f"image: cannot read {os.fspath(path)!r} as an image ({err})") from None
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def procedural_image(rng: np.random.Generator, size: int = 32, num_shapes: int | None = None) -> np.ndarray:
    """A random RGB world ``(size, size, 3)`` uint8: a textured two-colour gradient with coloured
    discs, rectangles and rings on it, so that most crops are distinct landmarks.

    All randomness comes from ``rng``; ``num_shapes`` defaults to a draw from U{6, …, 10}.
    """
    coords = (np.arange(size) + 0.5) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    theta = rng.uniform(0.0, 2.0 * math.pi)
    ramp = (np.cos(theta) * (xx - 0.5) + np.sin(theta) * (yy - 0.5)) / math.sqrt(0.5) + 0.5
    low, high = _hsv_to_rgb(rng.uniform(), 0.5, 0.35), _hsv_to_rgb(rng.uniform(), 0.5, 0.75)
    img = low + (high - low) * ramp[..., None]
    freq = rng.uniform(2.0, 5.0, size=2)
    phase = rng.uniform(0.0, 2.0 * math.pi, size=2)
    texture = np.sin(2 * math.pi * freq[0] * xx + phase[0]) * np.sin(2 * math.pi * freq[1] * yy + phase[1])
    img = img + 0.08 * texture[..., None]
    for _ in range(int(rng.integers(6, 11)) if num_shapes is None else num_shapes):
        colour = _hsv_to_rgb(rng.uniform(), rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
        cy, cx = rng.uniform(0.0, 1.0, size=2)
        extent = rng.uniform(0.06, 0.18)
        kind = rng.integers(3)
        if kind == 0:
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= extent**2
        elif kind == 1:
            aspect = rng.uniform(0.5, 2.0)
            inside = (np.abs(yy - cy) <= extent * aspect) & (np.abs(xx - cx) <= extent / aspect)
        else:
            r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            inside = np.abs(r - extent) <= 0.35 * extent
        img[inside] = colour
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


class ImageNavigationEnv(gym.Env[np.ndarray, np.int64]):
    """An agent on a grid over an RGB image that observes the ``crop × crop`` patch at its cell.

    Actions: ``Discrete(5)`` = 0 stay, 1 up (row − 1), 2 down (row + 1), 3 left (col − 1),
    4 right (col + 1). The image border is a wall: a move that would leave the grid leaves the
    agent where it is. (The GTM-SM re-implementation numbered the moves right, left, up, down,
    stay; only the order differs.)

    Observation: ``Box(0, 255, (crop, crop, 3), uint8)``. Info: ``"position"`` = ``(row, col)``
    int64 and ``"state"`` = the same as float64 (the ground truth the data generator stores).
    Rewards are 0 and episodes never end; wrap with ``TimeLimit`` as needed.

    Args:
        image:        ``None`` (default): a new :func:`procedural_image` is drawn from the episode's
                      seed at every reset, so each episode is a new world. A path: that image file
                      (centre-cropped and resized to ``image_size``). An array: RGB
                      ``(image_size, image_size, 3)`` uint8.
        image_size:   side of the world image in pixels.
        crop:         side of the observed patch.
        step:         pixels between neighbouring cells.
        random_start: start in a uniformly drawn cell instead of the centre cell.
        exploration_blocked: what :meth:`default_policy` does when a held move meets the border:
                      ``"bump"`` (default, "with walls") keeps attempting it; ``"stay"`` ("without
                      walls") records "stay" instead, so every recorded move happens (models.md §5.4).
        render_mode:  ``None`` or ``"rgb_array"`` (the whole image with the crop outlined).
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}
    MOVES: tuple[tuple[int, int], ...] = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))
    ACTION_NAMES: tuple[str, ...] = ("stay", "up", "down", "left", "right")

    def __init__(
        self,
        image: str | os.PathLike[str] | np.ndarray | None = None,
        image_size: int = 32,
        crop: int = 8,
        step: int = 3,
        random_start: bool = False,
        exploration_blocked: str = "bump",
        render_mode: str | None = None,
    ) -> None:
        for name, value in (("image_size", image_size), ("crop", crop), ("step", step)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: got {value!r}; expected a positive integer")
        if crop > image_size:
            raise ValueError(f"crop: got {crop}; expected at most image_size = {image_size}")
        if exploration_blocked not in ("bump", "stay"):
            raise ValueError(f"exploration_blocked: got {exploration_blocked!r}; expected 'bump' or 'stay'")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode: got {render_mode!r}; expected None or 'rgb_array'")
        if image is None:
            self._fixed_image = None
        elif isinstance(image, np.ndarray):
            if image.shape != (image_size, image_size, 3) or image.dtype != np.uint8:
                raise ValueError(
                    f"image: got an array of shape {image.shape} and dtype {image.dtype}; "
                    f"expected ({image_size}, {image_size}, 3) uint8"
                )
            self._fixed_image = image.copy()
        else:
            self._fixed_image = load_image(image, image_size)
        self.image_size, self.crop, self.step_size = int(image_size), int(crop), int(step)
        self.random_start = random_start
        self.exploration_blocked = exploration_blocked
        self.render_mode = render_mode
        n = (self.image_size - self.crop) // self.step_size + 1
        self.grid_shape = (n, n)
        self.observation_space = spaces.Box(0, 255, (self.crop, self.crop, 3), np.uint8)
        self.action_space = spaces.Discrete(len(self.MOVES))
        self.image: np.ndarray | None = None
        self._position = np.zeros(2, dtype=np.int64)

    def default_policy(self, mean_hold: float = 2.0, blocked: str | None = None) -> Policy:
        """The GTM-SM exploration policy: a random walk holding each move ~Poisson(mean_hold) steps
        (see :class:`RandomWalkPolicy` for ``blocked``; default: the env's ``exploration_blocked``)."""
        return RandomWalkPolicy(self.grid_shape, self.MOVES, mean_hold, blocked or self.exploration_blocked)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start a new episode (with a new procedural image unless one was given)."""
        super().reset(seed=seed)
        if self._fixed_image is None:
            self.image = procedural_image(self.np_random, self.image_size)
        else:
            self.image = self._fixed_image
        if self.random_start:
            self._position = self.np_random.integers(0, self.grid_shape[0], size=2).astype(np.int64)
        else:
            self._position = np.array([self.grid_shape[0] // 2, self.grid_shape[1] // 2], dtype=np.int64)
        return self._observation(), self._info()

    def step(self, action: int | np.integer) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Move one cell (or stay, or bump into the border and stay)."""
        if self.image is None:
            raise RuntimeError("step() called before reset()")
        # np.int64(2.5) would be 2 and np.int64(True) 1: only genuine integers are moves.
        integer = isinstance(action, (int, np.integer)) and not isinstance(action, (bool, np.bool_))
        if not integer or not self.action_space.contains(np.int64(action)):
            raise ValueError(f"action: got {action!r}; expected an integer in [0, {len(self.MOVES)})")
        target = self._position + np.asarray(self.MOVES[int(action)], dtype=np.int64)
        if np.all((target >= 0) & (target < np.asarray(self.grid_shape))):
            self._position = target
        return self._observation(), 0.0, False, False, self._info()

    def render(self) -> np.ndarray | None:
        """The whole image ``(image_size, image_size, 3)`` with the observed crop outlined in white."""
        if self.render_mode != "rgb_array" or self.image is None:
            return None
        frame = self.image.copy()
        top, left = self._position * self.step_size
        bottom, right = top + self.crop - 1, left + self.crop - 1
        frame[top, left : right + 1] = frame[bottom, left : right + 1] = 255
        frame[top : bottom + 1, left] = frame[top : bottom + 1, right] = 255
        return frame

    def _observation(self) -> np.ndarray:
        assert self.image is not None
        top, left = self._position * self.step_size
        return self.image[top : top + self.crop, left : left + self.crop].copy()

    def _info(self) -> dict[str, Any]:
        return {"position": self._position.copy(), "state": self._position.astype(np.float64)}

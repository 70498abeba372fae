"""Bouncing-ball environments: the four KVAE video datasets (box, box_gravity, polygon, pong).

One environment class over :mod:`seqlvm.envs.physics`; the registered ids only choose the scene.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from seqlvm.envs.physics import SCENES, BallState, Rasterizer, Scene, advance, distance_to_wall, rasterize
from seqlvm.envs.policies import Policy, ZeroPolicy

__all__ = ["BouncingBallEnv"]

_INIT_TRIES = 100


class BouncingBallEnv(gym.Env[np.ndarray, np.ndarray]):
    """A ball of radius 3 bouncing elastically in a 32×32 binary video.

    Observation: ``Box(0, 255, (size, size, 1), uint8)``, pixels 0 or 255 (the original frames are
    binary: always threshold, never treat as grey levels). Frame ``x_t`` shows the world after
    ``t`` steps; the reset frame is ``x_0``.

    Action: an optional push, ``Box(-1, 1, (2,), float32)``, that changes the velocity by
    ``push_scale · a`` pixels/s (world axes, y up) before the step; the speed after a non-zero push
    is capped at ``max_speed``. ``step(None)`` or a zero action gives the passive dynamics of the
    original data, which have no controls.

    Info: ``"state"`` = ``[x, y, vx, vy]`` float64 in world coordinates (pixels, origin at the
    bottom-left of the frame, y up, velocities in pixels/s), the pymunk convention of the original
    generators; pixel ``(row, col)`` of the centre is ``(size − y, x)``. Pong adds ``"paddles"``,
    the heights of the paddle centres. Rewards are 0 and episodes never terminate (in pong the ball
    may leave through the open sides, as in the original data); wrap with ``TimeLimit`` as needed.

    Args:
        scene:        ``"box"``, ``"box_gravity"``, ``"polygon"``, ``"pong"`` or a :class:`Scene`.
        render_mode:  ``None`` or ``"rgb_array"`` (the frame as RGB ``(size, size, 3)`` uint8).
        render_walls: draw the static walls (on by default, as in the original frames).
        push_scale:   velocity change in pixels/s of a unit push.
        max_speed:    speed cap (pixels/s) after a push.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 5}

    def __init__(
        self,
        scene: str | Scene = "box",
        render_mode: str | None = None,
        render_walls: bool = True,
        push_scale: float = 2.0,
        max_speed: float = 50.0,
    ) -> None:
        if isinstance(scene, str):
            if scene not in SCENES:
                raise ValueError(f"scene: unknown name {scene!r}; expected one of {sorted(SCENES)} or a Scene")
            scene = SCENES[scene]
        if not isinstance(scene, Scene):
            raise TypeError(f"scene: expected a scene name or a Scene, got {type(scene).__name__}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode: got {render_mode!r}; expected None or 'rgb_array'")
        if not (push_scale >= 0.0 and math.isfinite(push_scale)):
            raise ValueError(f"push_scale: got {push_scale}; expected a finite number >= 0")
        if not (max_speed > 0.0 and math.isfinite(max_speed)):
            raise ValueError(f"max_speed: got {max_speed}; expected a finite number > 0")
        self.scene = scene
        self.render_mode = render_mode
        self.render_walls = render_walls
        self.push_scale = float(push_scale)
        self.max_speed = float(max_speed)
        self.metadata = {**self.metadata, "render_fps": max(1, round(1.0 / scene.dt))}

        size = scene.size
        self.observation_space = spaces.Box(0, 255, (size, size, 1), np.uint8)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._raster = Rasterizer(size)
        self._background = rasterize(size, scene.walls) if render_walls else np.zeros((size, size), bool)
        self._state: BallState | None = None

    def default_policy(self) -> Policy:
        """The behaviour policy of the original data sets: no push."""
        return ZeroPolicy(self.action_space)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Draw a new ball: direction ~ U(0, 2π), speed ~ U(speed_range), centre ~ the scene's
        clipped Gaussian (redrawn while it overlaps a wall)."""
        super().reset(seed=seed)
        scene, rng = self.scene, self.np_random
        paddle_y = [p.y0 for p in scene.paddles]
        obstacles = scene.walls + tuple(p.wall(y) for p, y in zip(scene.paddles, paddle_y))
        angle = rng.uniform(0.0, 2.0 * math.pi)
        speed = rng.uniform(*scene.speed_range)
        for _ in range(_INIT_TRIES):
            x, y = np.clip(np.asarray(scene.init_mean) + scene.init_std * rng.normal(size=2), *scene.init_clip)
            if all(distance_to_wall(x, y, w) >= scene.radius + w.radius for w in obstacles):
                break
        else:
            raise RuntimeError(f"no initial position clear of the walls in {_INIT_TRIES} draws; check the Scene")
        self._state = BallState(float(x), float(y), speed * math.cos(angle), speed * math.sin(angle), paddle_y)
        return self._observation(), self._info()

    def step(self, action: np.ndarray | None = None) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Apply the push (if any), advance ``dt`` seconds, return the new frame."""
        if self._state is None:
            raise RuntimeError("step() called before reset()")
        state = self._state
        if action is not None:
            push = np.asarray(action, dtype=np.float64).reshape(-1)
            if push.shape != (2,) or not np.isfinite(push).all():
                raise ValueError(f"action: got {action!r}; expected two finite numbers")
            push = np.clip(push, -1.0, 1.0) * self.push_scale
            if push.any():
                state.vx += push[0]
                state.vy += push[1]
                speed = math.hypot(state.vx, state.vy)
                if speed > self.max_speed:
                    state.vx *= self.max_speed / speed
                    state.vy *= self.max_speed / speed
        advance(state, self.scene)
        return self._observation(), 0.0, False, False, self._info()

    def render(self) -> np.ndarray | None:
        """The current frame as RGB ``(size, size, 3)`` uint8 in ``"rgb_array"`` mode, else None."""
        if self.render_mode != "rgb_array" or self._state is None:
            return None
        return np.repeat(self._observation(), 3, axis=2)

    def _frame(self) -> np.ndarray:
        assert self._state is not None
        state, scene = self._state, self.scene
        img = self._background | self._raster.ball(state.x, state.y, scene.radius)
        for paddle, y in zip(scene.paddles, state.paddle_y):
            img |= self._raster.wall(paddle.wall(y))
        return img

    def _observation(self) -> np.ndarray:
        return (self._frame()[:, :, None] * np.uint8(255)).astype(np.uint8)

    def _info(self) -> dict[str, Any]:
        assert self._state is not None
        info: dict[str, Any] = {"state": self._state.as_array()}
        if self.scene.paddles:
            info["paddles"] = np.asarray(self._state.paddle_y, dtype=np.float64)
        return info

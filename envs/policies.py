"""Behaviour policies for collecting data sets: no push, uniform random, and the held random walk.

A policy is reset with a seed at the start of every episode and then maps ``(observation, info)``
to an action; its randomness comes only from that seed, so a (env seed, policy seed) pair fixes an
episode bit for bit.
"""

from __future__ import annotations

import copy
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
from gymnasium import spaces

__all__ = ["Policy", "ZeroPolicy", "RandomPolicy", "RandomWalkPolicy"]


@runtime_checkable
class Policy(Protocol):
    """What the data generator needs from a behaviour policy (``isinstance`` checks only that both
    members exist)."""

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode; all later randomness comes from ``seed``."""

    def __call__(self, observation: Any, info: dict[str, Any]) -> Any:
        """The action to take after seeing ``observation`` (with the env's ``info``)."""


class ZeroPolicy:
    """Always the zero action of a ``Box`` space: the passive dynamics of the bouncing balls."""

    def __init__(self, action_space: spaces.Box) -> None:
        if not isinstance(action_space, spaces.Box):
            raise TypeError(f"action_space: ZeroPolicy needs a Box, got {type(action_space).__name__}")
        self._zero = np.zeros(action_space.shape, dtype=action_space.dtype)

    def reset(self, seed: int | None = None) -> None:
        """Nothing to reset: the policy is deterministic."""

    def __call__(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        return self._zero.copy()


class RandomPolicy:
    """Independent uniform draws from the action space (a private, seeded copy of it)."""

    def __init__(self, action_space: spaces.Space) -> None:
        self._space = copy.deepcopy(action_space)

    def reset(self, seed: int | None = None) -> None:
        """Reseed the private action space."""
        self._space.seed(seed)

    def __call__(self, observation: Any, info: dict[str, Any]) -> Any:
        return self._space.sample()


class RandomWalkPolicy:
    """The exploration policy of the GTM-SM image-navigation data (models.md §5.4).

    Every time the previous choice has run out it draws a hold length ``h ~ Poisson(mean_hold)``;
    ``h = 0`` gives a single "stay" step, otherwise a direction is drawn uniformly among the moves
    that are not blocked from the current cell and repeated ``h`` times.

    Args:
        grid_shape: ``(rows, cols)`` of the agent's positions; ``info["position"]`` is ``(row, col)``.
        moves:      the ``(d_row, d_col)`` of every discrete action; the ``(0, 0)`` one is "stay".
        mean_hold:  mean of the Poisson hold length.
        blocked:    what a held move does when it meets a wall: ``"bump"`` (default, "with walls")
                    keeps attempting it, so a model must learn that walls stop the agent;
                    ``"stay"`` ("without walls") takes the stay action instead, so every recorded
                    move happens and the dynamics are exactly linear (the first stage of the
                    GTM-SM curriculum, models.md §5.5).
    """

    def __init__(
        self, grid_shape: tuple[int, int], moves: Sequence[tuple[int, int]], mean_hold: float = 2.0, blocked: str = "bump"
    ) -> None:
        if mean_hold <= 0:
            raise ValueError(f"mean_hold: got {mean_hold}; expected > 0")
        if blocked not in ("bump", "stay"):
            raise ValueError(f"blocked: got {blocked!r}; expected 'bump' or 'stay'")
        self._shape = grid_shape
        self._moves = [tuple(m) for m in moves]
        if (0, 0) not in self._moves:
            raise ValueError(f"moves: got {moves}; expected one (0, 0) 'stay' move")
        self._stay = self._moves.index((0, 0))
        self._mean_hold = mean_hold
        self._bump = blocked == "bump"
        self._rng = np.random.default_rng()
        self._action = self._stay
        self._left = 0

    def reset(self, seed: int | None = None) -> None:
        """Reseed and forget the held action."""
        self._rng = np.random.default_rng(seed)
        self._left = 0

    def __call__(self, observation: Any, info: dict[str, Any]) -> int:
        row, col = (int(v) for v in info["position"])
        if self._left == 0:
            free = [a for a in range(len(self._moves)) if a != self._stay and self._open(row, col, a)]
            hold = int(self._rng.poisson(self._mean_hold))
            if hold == 0 or not free:
                self._action, self._left = self._stay, 1
            else:
                self._action, self._left = int(self._rng.choice(free)), hold
        self._left -= 1
        return self._action if self._bump or self._open(row, col, self._action) else self._stay

    def _open(self, row: int, col: int, action: int) -> bool:
        d_row, d_col = self._moves[action]
        return 0 <= row + d_row < self._shape[0] and 0 <= col + d_col < self._shape[1]

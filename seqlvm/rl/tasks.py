"""Tasks: a goal drawn from a context episode, a batched reward a planner can score imagined or
simulated steps with, and a success test on the real environment's ``info``.

Two tasks with a measurable success:

- :class:`GotoTask` (``seqlvm/ImageNavigation-v0``): go back to a cell seen during the context,
  shown to the agent only as the crop seen there;
- :class:`HoldTask` (``seqlvm/BouncingBall-v0`` with pushes): bring the bouncing ball into a
  square region and keep it there.

and :class:`RewardTask`, a user's reward function of observations and latents as a task (no goal,
no success test).

Observations handed to ``reward`` are in the model's format (frames ``(N, H, C, h, w)`` in
[0, 1], :func:`seqlvm.rl.spaces.to_model`), whether a model imagined them or a copy of the real
environment produced them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from seqlvm.data.generate import resolve_env_id
from seqlvm.envs.rollout import Episode

__all__ = [
    "Task", "GotoTask", "GotoGoal", "HoldTask", "HoldGoal", "RewardFn", "RewardTask", "TASKS", "make_task", "as_task",
    "check_task_env",
]


@runtime_checkable
class Task(Protocol):
    """What a planner and an evaluation need from a task.

    env_id: the real environment the task is posed in.
    budget: steps the agent may take after the context (the episode length).

    ``isinstance(obj, Task)`` checks only that these four members exist.
    """

    env_id: str
    budget: int

    def reset(self, context: Episode, rng: np.random.Generator, model: Any = None) -> Any:
        """Draw the goal of an episode from its context (randomness from ``rng`` only); ``model``
        (optional) lets the goal carry the model's own representation of it."""

    def reward(self, goal: Any, observations: Tensor, latents: Tensor | None = None) -> Tensor:
        """Rewards (N, H) of N trajectories of H steps: observations (N, H, *event) in the model's
        format, latents (N, H, L) of the model that imagined them (None for a real simulator)."""

    def success(self, goal: Any, infos: Sequence[dict[str, Any]]) -> bool:
        """Whether the episode succeeded, from the real env's ``info`` after each of its steps."""


@dataclass(frozen=True)
class GotoGoal:
    """observation: (C, h, w) the crop seen at the goal, in [0, 1]; position: (2,) int64 its true
    cell (for ``success`` only); state: (S,) the model's state there, or None."""

    observation: Tensor
    position: np.ndarray
    state: Tensor | None


@dataclass(frozen=True)
class GotoTask:
    """Image navigation: return to a cell visited during the context.

    Goal: a context step ``t`` drawn uniformly among those whose cell differs from the last one (any
    step when the agent never moved); the agent gets its crop ``x_t``.

    Reward of a step with crop ``x``: ``-mean((x - x_t)^2)`` over pixels, and, when the model has
    ``infer_states(actions: (B, T, A)) -> (B, T, S)`` (the states of an action sequence started from the
    origin, as GTM-SM) and imagined the latents, also ``- state_weight * ||l - s_t||^2`` with ``l``
    the first S entries of the imagined latent (which must begin with that state) and ``s_t`` the
    state of the context's actions at step t. Planning over the true simulator (``model=None`` at
    reset, :func:`~seqlvm.rl.planners.env_rollout`), the simulator's own state plays that part:
    ``info["state"]``, the true cell, against the goal's cell, so both planners get a dense signal.

    Success: the agent's true cell equals the goal cell after some step of the episode.
    """

    budget: int = 20
    state_weight: float = 1.0
    env_id: str = "seqlvm/ImageNavigation-v0"

    def reset(self, context: Episode, rng: np.random.Generator, model: Any = None) -> GotoGoal:
        """Draw the goal step from the context (its ``states`` are the true cells)."""
        if context.states is None:
            raise ValueError("context: the goto task needs the true cells (Episode.states); got none")
        cells = context.states.astype(np.int64)
        moved = np.flatnonzero((cells[:-1] != cells[-1]).any(-1))
        t = int(rng.choice(moved)) if moved.size else int(rng.integers(len(cells)))
        crop = torch.as_tensor(context.observations[t]).movedim(-1, 0).float() / 255.0
        state = None
        if model is None:
            state = torch.as_tensor(context.states[t], dtype=torch.float32)
        elif hasattr(model, "infer_states"):
            u = torch.as_tensor(context.actions)[None]
            with torch.no_grad():
                state = model.infer_states(u)[0, t]
        return GotoGoal(crop, cells[t], state)

    def reward(self, goal: GotoGoal, observations: Tensor, latents: Tensor | None = None) -> Tensor:
        """``-mean((x - x_goal)^2)`` per step (N, H), minus the state term of the class docstring."""
        target = goal.observation.to(observations)
        reward = -(observations - target).pow(2).flatten(2).mean(-1)
        if goal.state is not None and latents is not None:
            S = goal.state.shape[-1]
            if latents.shape[-1] < S:
                raise ValueError(f"latents: must begin with the goal's state of width {S} (infer_states); got {tuple(latents.shape)}")
            reward = reward - self.state_weight * (latents[..., :S] - goal.state.to(latents)).pow(2).sum(-1)
        return reward

    def success(self, goal: GotoGoal, infos: Sequence[dict[str, Any]]) -> bool:
        """True when ``info["position"]`` equals the goal cell after any step."""
        return any(np.array_equal(info["position"], goal.position) for info in infos)


@dataclass(frozen=True)
class HoldGoal:
    """region: (top, bottom, left, right) pixel rows/cols of the target square, ends excluded;
    distance: (h, w) each pixel's distance to the region (0 inside), the reward's weights."""

    region: tuple[int, int, int, int]
    distance: Tensor


@dataclass(frozen=True)
class HoldTask:
    """Controllable bouncing ball: push the ball into a square region and hold it there.

    Goal: a ``side × side`` pixel square placed uniformly at random inside the pixels at least
    ``margin`` from the frame's edge.

    Reward of a frame x (h, w pixels): minus the intensity-weighted mean distance of the ball's
    pixels to the region, ``-sum_p x_p d(p, R) / sum_p x_p`` over the pixels p at least ``border``
    from the edge (the walls lie outside them), with ``d`` the Euclidean distance from the pixel's
    centre to the square (0 inside); the mass is counted as at least one pixel. It is 0 when the
    whole ball lies in the square.

    Success: the ball's true centre (``info["state"]`` = ``[x, y, vx, vy]``, pixel ``(row, col) =
    (size - y, x)``) lies in the closed square ``[top, bottom] × [left, right]`` after at least
    ``ceil(fraction · window)`` of the last ``window`` steps of the episode.
    """

    budget: int = 30
    side: int = 10
    window: int = 10
    fraction: float = 0.8
    size: int = 32
    margin: int = 6
    border: int = 3
    env_id: str = "seqlvm/BouncingBall-v0"

    def __post_init__(self) -> None:
        if not 1 <= self.window <= self.budget:
            raise ValueError(f"HoldTask: window must lie in [1, budget = {self.budget}]; got {self.window}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"HoldTask: fraction must lie in (0, 1]; got {self.fraction}")
        if self.side < 1 or self.size - 2 * self.margin < self.side:
            raise ValueError(f"HoldTask: side must lie in [1, size - 2 margin = {self.size - 2 * self.margin}]; got {self.side}")
        if not 0 <= 2 * self.border < self.size:
            raise ValueError(f"HoldTask: border must lie in [0, size / 2 = {self.size / 2}), leaving pixels to weigh; got {self.border}")

    def reset(self, context: Episode, rng: np.random.Generator, model: Any = None) -> HoldGoal:
        """Place the square (the context and the model are not needed)."""
        top, left = (int(v) for v in rng.integers(self.margin, self.size - self.margin - self.side + 1, size=2))
        region = (top, top + self.side, left, left + self.side)
        centres = torch.arange(self.size, dtype=torch.float32) + 0.5
        dy = (top - centres).clamp_min(0) + (centres - region[1]).clamp_min(0)
        dx = (left - centres).clamp_min(0) + (centres - region[3]).clamp_min(0)
        distance = (dy[:, None] ** 2 + dx[None, :] ** 2).sqrt()
        return HoldGoal(region, distance)

    def reward(self, goal: HoldGoal, observations: Tensor, latents: Tensor | None = None) -> Tensor:
        """The weighted mean distance of the class docstring, negated, per frame: (N, H)."""
        if observations.shape[-2:] != (self.size, self.size):
            raise ValueError(f"observations: expected frames (N, H, C, {self.size}, {self.size}); got {tuple(observations.shape)}")
        b = self.border
        mass = observations.sum(-3)[..., b : self.size - b, b : self.size - b]
        weights = goal.distance[b : self.size - b, b : self.size - b].to(observations)
        return -(mass * weights).flatten(-2).sum(-1) / mass.flatten(-2).sum(-1).clamp_min(1.0)

    def success(self, goal: HoldGoal, infos: Sequence[dict[str, Any]]) -> bool:
        """The window rule of the class docstring over the last ``window`` infos."""
        if len(infos) < self.window:
            return False
        top, bottom, left, right = goal.region
        inside = 0
        for info in infos[-self.window :]:
            x, y = info["state"][:2]
            row, col = self.size - y, x
            inside += int(top <= row <= bottom and left <= col <= right)
        return inside >= math.ceil(self.fraction * self.window)


RewardFn = Callable[[Tensor, Tensor | None], Tensor]
"""A user's reward: observations (N, H, *event) in the model's format and latents (N, H, L) or None
-> rewards (N, H)."""


@dataclass(frozen=True)
class RewardTask:
    """A reward function of observations and latents as a :class:`Task`, for a goal-free objective.

    ``r_{n,h} = reward_fn(x, l)[n, h]`` for observations ``x`` (N, H, *event) in the model's format
    and latents ``l`` (N, H, L) of the model that imagined them (None when a real simulator without
    ``info["state"]`` produced the observations). The function must return a Tensor (N, H).

    Goal: none (``reset`` returns None). Success: none either; ``success`` is always False, so a
    success rate of :func:`~seqlvm.rl.run_episodes` means nothing for this task (compare returns
    instead).

    reward_fn: the reward, batched as above.
    budget:    steps the agent may take after the context (the episode length), >= 1.
    env_id:    the real environment the task is posed in ("" when not given; informational only).
    """

    reward_fn: RewardFn
    budget: int = 20
    env_id: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.reward_fn, type) or not callable(self.reward_fn):
            raise ValueError(f"RewardTask: reward_fn must be a function (observations, latents) -> rewards (N, H); got {self.reward_fn!r}")
        if not isinstance(self.budget, int) or isinstance(self.budget, bool) or self.budget < 1:
            raise ValueError(f"RewardTask: budget must be an int >= 1; got {self.budget!r}")

    def reset(self, context: Episode, rng: np.random.Generator, model: Any = None) -> None:
        """No goal: the reward function is the whole task."""

    def reward(self, goal: None, observations: Tensor, latents: Tensor | None = None) -> Tensor:
        """``reward_fn(observations, latents)``, checked to be a Tensor (N, H)."""
        reward = self.reward_fn(observations, latents)
        want = tuple(observations.shape[:2])
        if not isinstance(reward, Tensor) or tuple(reward.shape) != want:
            got = tuple(reward.shape) if isinstance(reward, Tensor) else type(reward).__name__
            raise ValueError(f"reward_fn: must return a Tensor (N, H) = {want}, one reward per step; got {got}")
        return reward

    def success(self, goal: None, infos: Sequence[dict[str, Any]]) -> bool:
        """Always False: a reward function alone defines no success."""
        return False


TASKS: dict[str, type] = {"goto": GotoTask, "hold": HoldTask}


def make_task(name: str, **kwargs: Any) -> Task:
    """A task by name (``"goto"`` or ``"hold"``) with its keyword options."""
    if name not in TASKS:
        raise ValueError(f"task: unknown name {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name](**kwargs)


def as_task(task: Task | str | RewardFn, env_id: str = "") -> Task:
    """``task`` itself when it is a :class:`Task` instance, the task of that name (:func:`make_task`)
    for a string, or a reward function (:data:`RewardFn`) wrapped as ``RewardTask(task, env_id=env_id)``."""
    if isinstance(task, str):
        return make_task(task)
    if isinstance(task, Task) and not isinstance(task, type):
        return task
    if callable(task) and not isinstance(task, type):
        return RewardTask(task, env_id=env_id)
    raise ValueError(f"task: expected a Task instance, a task name {sorted(TASKS)} or a reward function "
                     f"(observations, latents) -> rewards (N, H); got {task!r}")


def check_task_env(task: Task, env_id: str, argument: str = "env_id") -> None:
    """Refuse an environment the task is not posed in: ``env_id`` must be registered as
    ``task.env_id`` is (the same entry point and keyword arguments; any alias passes). A task
    without an ``env_id`` (a :class:`RewardTask` not given one) takes any environment. Errors name
    ``argument``."""
    if not task.env_id:
        return
    spec, want = gym.spec(resolve_env_id(env_id, argument)), gym.spec(resolve_env_id(task.env_id, "task.env_id"))
    if (spec.entry_point, spec.kwargs) != (want.entry_point, want.kwargs):
        raise ValueError(f"{argument}: the {type(task).__name__} is posed in {task.env_id!r}; got {env_id!r}")

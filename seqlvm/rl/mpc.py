"""Evaluating an agent on a task in the real environment: a context under the env's default
policy, then ``task.budget`` steps chosen by the agent, then the task's success test.

Agents: :class:`RandomAgent` (uniform actions, the floor) and :class:`PlanningAgent` (a planner over
a learned model, or over copies of the real environment when no model is given: the ceiling).
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple, Protocol

import gymnasium as gym
import numpy as np
import torch

from seqlvm.data.h5 import check_seed
from seqlvm.envs.rollout import Episode, encode_action, make_policy, rollout
from seqlvm.models import SequenceModel
from seqlvm.rl.planners import CEMPlanner, RandomShootingPlanner, check_particles, env_rollout, model_rollout
from seqlvm.rl.spaces import decode_actions, to_model, uniform_actions
from seqlvm.rl.tasks import Task

__all__ = ["AGENTS", "Agent", "RandomAgent", "PlanningAgent", "EpisodeResult", "make_agent", "run_episode", "run_episodes"]

AGENTS = ("cem", "shooting", "true", "random")
"""cem: CEM over the model; shooting: random shooting over the model; true: CEM over copies of the
real environment (the ceiling); random: uniform actions (the floor)."""


class Agent(Protocol):
    """Chooses the real env's next action from the episode so far.

    model: the learned model the agent plans with (the task may read it for its goal), or None.
    """

    model: SequenceModel | None

    def reset(self) -> None:
        """Start a new episode."""

    def act(self, env: gym.Env, history: Episode, goal: Any, rng: np.random.Generator) -> Any:
        """The next action for ``env`` (in its current state) after ``history`` (observations
        (T, *obs), encoded actions (T, A)), towards ``goal``; randomness from ``rng``."""


class RandomAgent:
    """Uniform random actions."""

    model = None

    def __init__(self, action_space: gym.Space) -> None:
        self.action_space = action_space

    def reset(self) -> None:
        """Nothing to forget."""

    def act(self, env: gym.Env, history: Episode, goal: Any, rng: np.random.Generator) -> Any:
        return decode_actions(self.action_space, uniform_actions(self.action_space, rng, ()))


class PlanningAgent:
    """Model-predictive control: re-plan at every step with ``planner`` over :func:`model_rollout`
    of ``model`` conditioned on the whole episode so far (its mean path, or P = ``num_particles``
    sampled paths with ``noise``), or over :func:`env_rollout` of the real env when ``model`` is None."""

    def __init__(
        self,
        planner: CEMPlanner | RandomShootingPlanner,
        task: Task,
        model: SequenceModel | None = None,
        num_particles: int = 1,
        noise: bool = False,
    ) -> None:
        check_particles(num_particles, noise)
        self.planner, self.task, self.model, self.num_particles, self.noise = planner, task, model, num_particles, noise

    def reset(self) -> None:
        """Reset the planner's warm start."""
        self.planner.reset()

    def act(self, env: gym.Env, history: Episode, goal: Any, rng: np.random.Generator) -> Any:
        if self.model is None:
            return self.planner.plan(env_rollout(env, self.task, goal), rng)
        dtype = next(self.model.parameters()).dtype
        x = to_model(env.observation_space, history.observations, dtype)[None]
        u = torch.as_tensor(history.actions, dtype=dtype)[None] if self.model.config.control_dim else None
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        rollout_fn = model_rollout(self.model, self.task, goal, x, u, self.num_particles, generator, self.noise)
        return self.planner.plan(rollout_fn, rng)


class EpisodeResult(NamedTuple):
    """success: the task's verdict; frames: (context_steps + budget, *obs) the real observations;
    plan_seconds: wall time the agent took to choose the budget's actions, in total."""

    success: bool
    frames: np.ndarray
    plan_seconds: float


def run_episode(env: gym.Env, task: Task, agent: Agent, context_steps: int, rng: np.random.Generator) -> EpisodeResult:
    """Roll ``context_steps`` observations under the env's default policy (env and policy seeded from
    ``rng``), draw the goal, then let ``agent`` take ``task.budget`` steps in ``env``."""
    if not isinstance(context_steps, int) or context_steps < 1:
        raise ValueError(f"context_steps: must be an int >= 1; got {context_steps!r}")
    env_seed, policy_seed = (int(s) for s in rng.integers(2**31, size=2))
    history = rollout(env, make_policy(env), context_steps, env_seed, policy_seed)
    goal = task.reset(history, rng, agent.model)
    agent.reset()
    infos, plan_seconds = [], 0.0
    for _ in range(task.budget):
        start = time.perf_counter()
        action = agent.act(env, history, goal, rng)
        plan_seconds += time.perf_counter() - start
        obs, _, _, _, info = env.step(action)
        infos.append(info)
        history = Episode(
            np.concatenate([history.observations, obs[None]]),
            np.concatenate([history.actions, encode_action(env.action_space, action)[None]]),
            None,
        )
    return EpisodeResult(task.success(goal, infos), history.observations, plan_seconds)


def make_agent(
    kind: str,
    task: Task,
    action_space: gym.Space,
    model: SequenceModel | None = None,
    horizon: int = 8,
    population: int = 100,
    elites: int = 10,
    iterations: int = 3,
    num_particles: int = 1,
    noise: bool = False,
) -> Agent:
    """An agent of :data:`AGENTS` by name; ``model`` is required by ``"cem"`` and ``"shooting"``.
    ``"shooting"`` draws ``population`` sequences once and ignores ``elites`` and ``iterations``;
    ``num_particles`` and ``noise`` are :func:`~seqlvm.rl.planners.model_rollout`'s."""
    if kind not in AGENTS:
        raise ValueError(f"planner: unknown name {kind!r}; expected one of {AGENTS}")
    if kind in ("cem", "shooting") and model is None:
        raise ValueError(f"planner: {kind!r} plans with a learned model; got none")
    if kind == "random":
        return RandomAgent(action_space)
    if kind == "shooting":
        planner: CEMPlanner | RandomShootingPlanner = RandomShootingPlanner(action_space, horizon, population)
    else:
        planner = CEMPlanner(action_space, horizon, population, elites, iterations)
    return PlanningAgent(planner, task, None if kind == "true" else model, num_particles, noise)


def run_episodes(
    env: gym.Env, task: Task, agent: Agent, episodes: int, context_steps: int, seed: int
) -> list[EpisodeResult]:
    """``episodes`` runs of :func:`run_episode`, episode i drawing from ``numpy.random.default_rng([seed, i])``."""
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes: must be an int >= 1; got {episodes!r}")
    check_seed(seed, "seed")
    return [run_episode(env, task, agent, context_steps, np.random.default_rng([seed, i])) for i in range(episodes)]

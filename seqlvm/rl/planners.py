"""Model-predictive control by sampling: the cross-entropy method and random shooting.

A planner never sees a model or an environment, only a *rollout function*: encoded action
sequences ``(J, H, A)`` (one-hot for ``Discrete``) -> rewards ``(J, H)``. Two build one:

- :func:`model_rollout`: the learned model imagines them (:func:`seqlvm.rl.imagine`) from the
  episode so far, along its mean path (the default) or averaged over sampled particles;
- :func:`env_rollout`: copies of the real environment in its current state play them (the
  ceiling a perfect model would reach).

``plan(rollout, rng)`` returns the first action of the best sequence it scored (by the sum of its
H rewards), in the env's format; randomness comes from ``rng`` only.
"""

from __future__ import annotations

import abc
import copy
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from seqlvm.envs.rollout import action_dim
from seqlvm.models import SequenceModel
from seqlvm.rl.imagine import imagine
from seqlvm.rl.spaces import check_observation_space, decode_actions, to_model, uniform_actions
from seqlvm.rl.tasks import Task

__all__ = ["RolloutFn", "model_rollout", "env_rollout", "check_particles", "CEMPlanner", "RandomShootingPlanner"]

RolloutFn = Callable[[Tensor], Tensor]
"""Encoded action sequences (J, H, A) float32 -> rewards (J, H)."""


def check_particles(num_particles: int, noise: bool) -> None:
    """P sampled paths per sequence need ``noise``; the mean path is one path."""
    if not isinstance(num_particles, int) or isinstance(num_particles, bool) or num_particles < 1:
        raise ValueError(f"num_particles: must be an int >= 1; got {num_particles!r}")
    if num_particles > 1 and not noise:
        raise ValueError(f"num_particles: got {num_particles} without noise, where every particle follows "
                         "the one mean path; expected 1, or noise=True to average sampled paths")


def model_rollout(
    model: SequenceModel,
    task: Task,
    goal: Any,
    x_context: Tensor,
    u_context: Tensor | None,
    num_particles: int = 1,
    generator: torch.Generator | None = None,
    noise: bool = False,
) -> RolloutFn:
    """Score sequences with the model: ``imagine`` from the context x (1, T, *event) (u (1, T, A)),
    then the task's reward of the observations and latents.

    By default each sequence is scored on the model's mean path (``noise=False``): one sampled path
    carries noise that can swamp the differences between sequences (for the bouncing-ball KVAE the
    spread of one path is larger than its error). With ``noise=True`` the reward is averaged over
    ``num_particles`` sampled paths."""
    check_particles(num_particles, noise)

    @torch.no_grad()  # a reward with parameters of its own (a learned head) must not record a graph
    def rollout(actions: Tensor) -> Tensor:
        im = imagine(model, x_context, actions.to(x_context.dtype), num_particles, u_context, generator, noise=noise)
        J, P, H = im.log_probs.shape
        return task.reward(goal, im.observations.flatten(0, 1), im.latents.flatten(0, 1)).view(J, P, H).mean(1)

    return rollout


def env_rollout(env: gym.Env, task: Task, goal: Any) -> RolloutFn:
    """Score sequences with the true simulator: each plays in a deep copy of ``env`` (its current
    state, random generator included); the task rewards the observations as a model would see them,
    and the simulator's ``info["state"]`` (when it reports one) as the latents."""
    space = check_observation_space(env.observation_space)

    @torch.no_grad()
    def rollout(actions: Tensor) -> Tensor:
        raw = decode_actions(env.action_space, actions.numpy())
        J, H = actions.shape[:2]
        frames = np.empty((J, H, *space.shape), space.dtype)
        states: list[list[np.ndarray]] = []
        for j in range(J):
            sim = copy.deepcopy(env)
            steps = [sim.step(raw[j, h]) for h in range(H)]
            frames[j] = np.stack([step[0] for step in steps])
            if all("state" in step[4] for step in steps):
                states.append([np.asarray(step[4]["state"], np.float32) for step in steps])
        latents = torch.from_numpy(np.asarray(states)) if len(states) == J else None
        return task.reward(goal, to_model(space, frames), latents)

    return rollout


class _SamplingPlanner(abc.ABC):
    """Shared loop: ``iterations`` rounds of sampling ``population`` sequences, scoring them with the
    rollout function and refitting the sampling distribution; returns the best sequence's first action."""

    def __init__(self, action_space: spaces.Space, horizon: int, population: int, iterations: int) -> None:
        for name, value in (("horizon", horizon), ("population", population), ("iterations", iterations)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be an int >= 1; got {value!r}")
        if isinstance(action_space, spaces.Box) and not (np.isfinite(action_space.low).all() and np.isfinite(action_space.high).all()):
            raise ValueError(f"{type(self).__name__}: action_space must be Discrete or a bounded Box; got {action_space}")
        action_dim(action_space)  # rejects other spaces by name
        self.action_space = action_space
        self.horizon, self.population, self.iterations = horizon, population, iterations

    def reset(self) -> None:
        """Forget what was learned in the previous episode."""

    @abc.abstractmethod
    def _sample(self, rng: np.random.Generator) -> np.ndarray:
        """(population, horizon, A) encoded candidate sequences."""

    def _fit(self, candidates: np.ndarray, returns: np.ndarray) -> None:
        """Update the sampling distribution from the scored candidates."""

    def plan(self, rollout: RolloutFn, rng: np.random.Generator) -> Any:
        """The first action (env format) of the highest-return sequence sampled in any iteration.

        A sequence whose return is NaN counts as the worst (-inf): one diverging imagined path
        must not hide the others."""
        best, best_return = None, -np.inf
        for _ in range(self.iterations):
            candidates = self._sample(rng)
            rewards = rollout(torch.from_numpy(candidates))
            want = candidates.shape[:2]
            if not isinstance(rewards, Tensor) or tuple(rewards.shape) != want:
                got = tuple(rewards.shape) if isinstance(rewards, Tensor) else type(rewards).__name__
                raise ValueError(f"rollout: must return rewards (J, H) = {want}, one per step of each sequence; got {got}")
            returns = rewards.detach().sum(1).double().cpu().numpy()
            returns[np.isnan(returns)] = -np.inf
            i = int(np.argmax(returns))
            if returns[i] > best_return:
                best, best_return = candidates[i], float(returns[i])
            self._fit(candidates, returns)
        if best is None:
            raise ValueError("plan: the rollout function returned no finite return for any sequence")
        return decode_actions(self.action_space, best[0])


class RandomShootingPlanner(_SamplingPlanner):
    """Random shooting: ``population`` sequences drawn uniformly from the action space, once; the
    first action of the best one."""

    def __init__(self, action_space: spaces.Space, horizon: int = 10, population: int = 200) -> None:
        super().__init__(action_space, horizon, population, 1)

    def _sample(self, rng: np.random.Generator) -> np.ndarray:
        return uniform_actions(self.action_space, rng, (self.population, self.horizon))


class CEMPlanner(_SamplingPlanner):
    """The cross-entropy method (MPC, re-planned at every step).

    Sampling distribution, independent over the H steps: ``Discrete(n)``: a categorical per step,
    initially uniform; ``Box``: a Gaussian per step and entry, initially centred in the box with std
    half its width, draws clipped to the box. Each iteration keeps the ``elites`` best of
    ``population`` draws and refits: categorical probabilities = the elites' action frequencies,
    Gaussian = their mean and std, each mixed with the old value by ``momentum``
    (``new = (1 - momentum) fit + momentum old``).

    warm_start: start the next step's search from this one's fit shifted by a step (the new last
                step from the initial distribution) instead of from the initial distribution.
    """

    def __init__(
        self,
        action_space: spaces.Space,
        horizon: int = 10,
        population: int = 100,
        elites: int = 10,
        iterations: int = 4,
        momentum: float = 0.1,
        warm_start: bool = True,
    ) -> None:
        super().__init__(action_space, horizon, population, iterations)
        if not isinstance(elites, int) or not 1 <= elites <= population:
            raise ValueError(f"CEMPlanner: elites must be an int in [1, population = {population}]; got {elites!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"CEMPlanner: momentum must lie in [0, 1); got {momentum!r}")
        self.elites, self.momentum, self.warm_start = elites, momentum, warm_start
        self.discrete = isinstance(action_space, spaces.Discrete)
        if self.discrete:
            n = int(action_space.n)
            self._initial = (np.full((horizon, n), 1.0 / n),)
        else:
            low, high = action_space.low.reshape(-1).astype(np.float64), action_space.high.reshape(-1).astype(np.float64)
            self._low, self._high = low, high
            self._initial = (np.tile((low + high) / 2, (horizon, 1)), np.tile((high - low) / 2, (horizon, 1)))
        self.reset()

    def reset(self) -> None:
        """Back to the initial distribution."""
        self._params = tuple(p.copy() for p in self._initial)

    def _sample(self, rng: np.random.Generator) -> np.ndarray:
        J, H = self.population, self.horizon
        if self.discrete:
            (probs,) = self._params
            cumulative = probs.cumsum(-1)
            index = (rng.random((J, H, 1)) > cumulative).sum(-1).clip(max=probs.shape[-1] - 1)
            return np.eye(probs.shape[-1], dtype=np.float32)[index]
        mean, std = self._params
        return np.clip(mean + std * rng.standard_normal((J, *mean.shape)), self._low, self._high).astype(np.float32)

    def _fit(self, candidates: np.ndarray, returns: np.ndarray) -> None:
        elite = candidates[np.argsort(-returns, kind="stable")[: self.elites]].astype(np.float64)
        fitted = (elite.mean(0),) if self.discrete else (elite.mean(0), elite.std(0))
        self._params = tuple((1 - self.momentum) * f + self.momentum * old for f, old in zip(fitted, self._params))

    def plan(self, rollout: RolloutFn, rng: np.random.Generator) -> Any:
        """Search (starting from the warm start or the initial distribution), then shift for the next step."""
        if not self.warm_start:
            self.reset()
        action = super().plan(rollout, rng)
        self._params = tuple(np.concatenate([p[1:], init[-1:]]) for p, init in zip(self._params, self._initial))
        return action

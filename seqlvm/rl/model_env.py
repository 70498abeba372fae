"""A trained model as a gymnasium environment (``seqlvm/LearnedModel-v0``)."""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from seqlvm.data.generate import resolve_env_id
from seqlvm.envs.policies import Policy
from seqlvm.envs.rollout import Episode, action_dim, encode_action, make_policy, rollout
from seqlvm.models import SequenceModel
from seqlvm.rl.spaces import check_observation_space, is_video, to_env, to_model
from seqlvm.rl.tasks import RewardFn, Task, as_task, check_task_env
from seqlvm.train.checkpoint import load_model

__all__ = ["ModelEnv", "check_model_fits"]


def check_model_fits(model: SequenceModel, observation_space: gym.Space, action_space: gym.Space) -> None:
    """Raise a ValueError unless the model observes and acts in these spaces: frames (H, W, C) <->
    ``obs_shape = (C, H, W)`` (vectors (D,) <-> ``obs_dim = D``; other shapes are refused) and
    ``control_dim = A`` (the encoded action width, one-hot for ``Discrete``)."""
    space = check_observation_space(observation_space)
    config = model.config
    if is_video(space):
        name, want = "obs_shape", (space.shape[2], space.shape[0], space.shape[1])
        got = getattr(config, name, None)
        got = None if got is None else tuple(got)
    else:
        if len(space.shape) != 1:
            raise ValueError(f"observation_space: expected uint8 frames (H, W, C) with C in {{1, 3}} or vectors (D,); got {space}")
        name, want = "obs_dim", space.shape[0]
        got = getattr(config, name, None)
    if got != want:
        raise ValueError(f"model: the environment's observations need {name} = {want}; the model has {name} = {got}")
    A = action_dim(action_space)
    if config.control_dim != A:
        raise ValueError(f"model: the environment's actions are {A} wide encoded; the model has control_dim = {config.control_dim}")


class ModelEnv(gym.Env):
    """A learned simulator of a real environment, driven by a task.

    ``reset`` conditions the model (``rollout_start``, one particle) on a context episode of T
    observations: by default it rolls ``context_steps`` of them in the real env under its default
    policy (or ``options["policy"]``, a :class:`seqlvm.envs.Policy`); ``options["context"]``, a
    :class:`seqlvm.envs.Episode`, gives one instead (observations (T, *obs) in the real env's
    format, actions (T, A) encoded as ``seqlvm.envs.rollout`` encodes them, ``actions[0]`` unused;
    its length T >= 1 need not be ``context_steps``). The task's goal is drawn from the context and
    the reset observation is the context's last one. ``step(action)`` encodes the action the same
    way, advances the model (``rollout_step``) and returns its decoded observation in the real
    env's format (uint8 ``(H, W, C)`` for video, rounded and clipped), the task's reward of it,
    ``terminated`` False and ``truncated`` after ``task.budget`` steps. ``info`` holds the step's
    ``latent`` (L,) and ``log_prob``.

    The reward of a step is ``task.reward(goal, x, l)[0, 0]`` with ``x`` the model's observation
    (1, 1, *event) in the model's format (frames in [0, 1], before rounding) and ``l`` its latent
    (1, 1, L); a plain function ``reward_fn(x, l) -> (N, H)`` given as ``task`` is wrapped as
    ``RewardTask(reward_fn, env_id=env_id)`` (no goal, a budget of 20 steps; wrap it yourself for
    another budget).

    All randomness comes from ``self.np_random``: the rolled context's env and policy seeds (not
    drawn when a context is given), the goal, and the seed ``rollout_seed`` of the torch generator
    the model draws from.

    Args:
        model:         a model, or a checkpoint file or run folder (``seqlvm.train.load_model``).
        env_id:        the real environment, e.g. ``"seqlvm/BouncingBall-v0"``.
        task:          a :class:`~seqlvm.rl.tasks.Task`, a task name (``"goto"``, ``"hold"``) or a
                       reward function of observations and latents (:data:`~seqlvm.rl.tasks.RewardFn`).
        context_steps: observations of a rolled context (>= 1).
        env_kwargs:    keyword arguments of the real environment.
        noise:         draw the model's transitions (the default); ``False`` steps along its mean
                       path, a deterministic simulator.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        model: SequenceModel | str | os.PathLike[str],
        env_id: str,
        task: Task | str | RewardFn,
        context_steps: int = 10,
        env_kwargs: dict[str, Any] | None = None,
        noise: bool = True,
    ) -> None:
        if not isinstance(context_steps, int) or context_steps < 1:
            raise ValueError(f"context_steps: must be an int >= 1; got {context_steps!r}")
        if not isinstance(model, (SequenceModel, str, os.PathLike)):
            raise ValueError(f"model: expected a seqlvm model, a checkpoint file or a run folder; got {type(model).__name__}")
        self.task = as_task(task, env_id)
        check_task_env(self.task, env_id, "env_id")
        self.model = model if isinstance(model, SequenceModel) else load_model(model)[0]
        self.real_env = gym.make(resolve_env_id(env_id), **(env_kwargs or {})).unwrapped
        check_model_fits(self.model, self.real_env.observation_space, self.real_env.action_space)
        self.observation_space = self.real_env.observation_space
        self.action_space = self.real_env.action_space
        self.context_steps = context_steps
        self.noise = noise
        self.context: Episode | None = None
        self.goal: Any = None
        self.rollout_seed: int | None = None
        self._dtype = next(self.model.parameters()).dtype
        self._carry: Any = None
        self._generator = torch.Generator()
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Condition the model on a context (``options["context"]``, else one rolled in the real env)."""
        options = options or {}
        unknown = sorted(set(options) - {"policy", "context"})
        if unknown:
            raise ValueError(f"options: unknown key(s) {unknown}; expected some of ['context', 'policy']")
        if options.get("context") is not None and options.get("policy") is not None:
            raise ValueError("options: got both 'context' and 'policy'; a given context is not rolled, so expected only one")
        policy = options.get("policy")
        if policy is not None and not isinstance(policy, Policy):
            raise ValueError(f'options["policy"]: expected a seqlvm.envs.Policy (reset(seed), __call__(observation, info)); got {policy!r}')
        context = None if options.get("context") is None else self._check_context(options["context"])
        # Until this reset has succeeded the old episode is over: step() refuses to go on with it.
        self._carry = None
        super().reset(seed=seed)
        if context is None:
            env_seed, policy_seed = (int(s) for s in self.np_random.integers(2**31, size=2))
            policy = policy if policy is not None else make_policy(self.real_env)
            context = rollout(self.real_env, policy, self.context_steps, env_seed, policy_seed)
        goal = self.task.reset(context, self.np_random, self.model)
        rollout_seed = int(self.np_random.integers(2**62))
        self._generator.manual_seed(rollout_seed)
        x = to_model(self.observation_space, context.observations, self._dtype)[None]
        u = torch.as_tensor(context.actions, dtype=self._dtype)[None] if self.model.config.control_dim else None
        with torch.no_grad():
            carry = self.model.rollout_start(x, u, num_particles=1, generator=self._generator, noise=self.noise)
        self.context, self.goal, self.rollout_seed, self._carry, self._steps = context, goal, rollout_seed, carry, 0
        return context.observations[-1].copy(), {"rollout_seed": rollout_seed}

    def _check_context(self, context: Any) -> Episode:
        """``options["context"]`` as an Episode of arrays, after checking it against the spaces:
        observations (T >= 1, *obs), integers for an integer space, inside its bounds,
        actions (T, control_dim) finite, states None or (T, S)."""
        name = 'options["context"]'
        if not isinstance(context, Episode):
            raise ValueError(f"{name}: expected a seqlvm.envs.Episode(observations, actions, states); got {type(context).__name__}")
        space = self.observation_space
        observations = np.asarray(context.observations)
        if observations.ndim != 1 + len(space.shape) or observations.shape[1:] != space.shape or len(observations) < 1:
            raise ValueError(f"{name}: observations must have shape (T >= 1, {', '.join(map(str, space.shape))}), "
                             f"one observation of the space {space} per step; got {observations.shape}")
        integer = np.issubdtype(space.dtype, np.integer)
        if not np.issubdtype(observations.dtype, np.integer if integer else np.number):
            raise ValueError(f"{name}: observations must be {'integers' if integer else 'numbers'} as the real env returns "
                             f"them ({space.dtype}); got {observations.dtype}")
        if not (np.all(observations >= space.low) and np.all(observations <= space.high)):
            raise ValueError(f"{name}: observations must lie in the observation space's bounds [{space.low.min()}, {space.high.max()}]; "
                             f"got values in [{observations.min()}, {observations.max()}]")
        T, A = len(observations), self.model.config.control_dim
        actions = np.asarray(context.actions, dtype=np.float32)
        if actions.shape != (T, A):
            raise ValueError(f"{name}: actions must have shape (T, A) = ({T}, {A}), one encoded action per observation "
                             f"(actions[0] unused); got {actions.shape}")
        if not np.isfinite(actions).all():
            raise ValueError(f"{name}: actions must be finite; got {int((~np.isfinite(actions)).sum())} non-finite entries")
        states = None if context.states is None else np.asarray(context.states, dtype=np.float32)
        if states is not None and (states.ndim != 2 or len(states) != T):
            raise ValueError(f"{name}: states must be None or of shape (T, S) with T = {T}; got {states.shape}")
        # In the space's dtype, as the real env would have returned them (reset returns the last).
        return Episode(observations.astype(space.dtype), actions, states)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One imagined step under ``action``."""
        if self._carry is None:
            raise RuntimeError("step() called before reset()")
        if not self.action_space.contains(action):
            raise ValueError(f"action: got {action!r}; expected a member of {self.action_space}")
        u = None
        if self.model.config.control_dim:
            u = torch.as_tensor(encode_action(self.action_space, action), dtype=self._dtype)[None]
        with torch.no_grad():
            self._carry, out = self.model.rollout_step(self._carry, u, self._generator, noise=self.noise)
            reward = float(self.task.reward(self.goal, out.observation[:, None], out.latent[:, None])[0, 0])
        self._steps += 1
        info = {"latent": out.latent[0].numpy(), "log_prob": float(out.log_prob[0])}
        return to_env(self.observation_space, out.observation[0]), reward, False, self._steps >= self.task.budget, info

"""Rolling environments under behaviour policies into fixed-length arrays (data-set episodes).

Episode ``i`` of a collection with seed ``S`` resets the environment and the policy with two seeds
drawn from ``numpy.random.SeedSequence(S, spawn_key=(i,))`` (:func:`episode_seeds`), so episodes are
independent and a data set does not depend on how many processes rolled it.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from seqlvm.envs.policies import Policy, RandomPolicy, ZeroPolicy

__all__ = ["POLICIES", "Episode", "action_dim", "encode_action", "episode_seeds", "make_policy", "roll_episodes", "rollout"]

POLICIES = ("default", "zero", "random")


class Episode(NamedTuple):
    """One episode of ``T`` steps, aligned with the models' ``z_t = A z_{t-1} + B u_t``.

    observations: (T, *obs_shape) as the env returns them (uint8 ``(T, H, W, C)`` for video);
                  ``observations[0]`` is the reset observation.
    actions:      (T, A) float32; ``actions[t]`` is the action that led from ``x_{t-1}`` to ``x_t``
                  (one-hot for ``Discrete`` spaces) and ``actions[0] = 0`` since nothing precedes
                  ``x_0``. (GTM-SM's ``a_{t-1}`` is ``actions[t]``.)
    states:       (T, S) float32, ``info["state"]`` after each observation, or None when the env
                  reports no ``"state"``.
    """

    observations: np.ndarray
    actions: np.ndarray
    states: np.ndarray | None


def action_dim(space: spaces.Space) -> int:
    """Width ``A`` of an encoded action: ``n`` for ``Discrete(n)``, the flat size for a ``Box``."""
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.Box):
        return int(np.prod(space.shape))
    raise TypeError(f"action_space: only Discrete and Box are stored, got {type(space).__name__}")


def encode_action(space: spaces.Space, action: object) -> np.ndarray:
    """An action as a float32 vector of length :func:`action_dim`: one-hot for ``Discrete``."""
    if isinstance(space, spaces.Discrete):
        out = np.zeros(int(space.n), dtype=np.float32)
        out[int(action) - int(space.start)] = 1.0  # type: ignore[call-overload]
        return out
    return np.asarray(action, dtype=np.float32).reshape(action_dim(space))


def rollout(
    env: gym.Env, policy: Policy, num_steps: int, seed: int, policy_seed: int, *, episode: int | None = None
) -> Episode:
    """Reset ``env`` with ``seed`` and ``policy`` with ``policy_seed``, then take ``num_steps − 1``
    steps; returns ``num_steps`` observations (and the ground truth ``info["state"]`` if the env has one).

    Episodes have a fixed length (data sets store ``(N, T, ...)`` arrays), and stepping an env after
    it returned ``terminated`` or ``truncated`` is undefined in gymnasium. So an episode that ends
    before its last observation (``terminated`` or ``truncated`` at step ``t < num_steps − 1``) raises
    ``ValueError`` naming the env, the step and ``num_steps`` (and ``episode``, the index within a
    collection, when given); an end at the last step is fine, since nothing is stepped after it.
    Nothing is padded or cut silently.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps: got {num_steps}; expected >= 1")
    obs, info = env.reset(seed=seed)
    policy.reset(policy_seed)
    observations = np.empty((num_steps, *np.shape(obs)), dtype=np.asarray(obs).dtype)
    actions = np.zeros((num_steps, action_dim(env.action_space)), dtype=np.float32)
    states = np.empty((num_steps, np.size(info["state"])), dtype=np.float32) if "state" in info else None
    observations[0] = obs
    for t in range(num_steps):
        if t:
            action = policy(obs, info)
            obs, _, terminated, truncated, info = env.step(action)
            observations[t], actions[t] = obs, encode_action(env.action_space, action)
            if (terminated or truncated) and t < num_steps - 1:
                how = "terminated" if terminated else "truncated"
                which = f"episode {episode}" if episode is not None else f"the episode of reset seed {seed}"
                raise ValueError(
                    f"num_steps: got {num_steps}; {_env_name(env)} {how} {which} at step {t}, after {t + 1} "
                    f"observations; episodes have a fixed length, so use fewer steps or an environment "
                    f"whose episodes last {num_steps} observations"
                )
        if states is not None:
            states[t] = info["state"]
    return Episode(observations, actions, states)


def _env_name(env: gym.Env) -> str:
    spec = env.spec if env.spec is not None else env.unwrapped.spec
    return repr(spec.id) if spec is not None else type(env.unwrapped).__name__


def episode_seeds(seed: int, episode: int) -> tuple[int, int]:
    """``(env_seed, policy_seed)`` of one episode, from ``SeedSequence(seed, spawn_key=(episode,))``."""
    env_seed, policy_seed = np.random.SeedSequence(seed, spawn_key=(episode,)).generate_state(2, np.uint32)
    return int(env_seed), int(policy_seed)


def make_policy(env: gym.Env, name: str = "default") -> Policy:
    """A behaviour policy by name: ``"default"`` is the env's ``default_policy()`` (uniform random
    when it has none), ``"zero"`` the zero push of a ``Box`` space, ``"random"`` uniform draws."""
    if name not in POLICIES:
        raise ValueError(f"policy: got {name!r}; expected one of {POLICIES}")
    if name == "default":
        maker = getattr(env.unwrapped, "default_policy", None)
        return maker() if maker is not None else RandomPolicy(env.action_space)
    if name == "zero":
        if not isinstance(env.action_space, spaces.Box):
            raise ValueError(f"policy: 'zero' needs a Box action space; this env has {env.action_space}")
        return ZeroPolicy(env.action_space)
    return RandomPolicy(env.action_space)


# Per-process cache so a worker builds its environment once, not once per block of episodes.
_CACHE: dict[str, Any] = {}


def roll_episodes(
    env_id: str, env_kwargs: dict[str, Any], policy: str, seed: int, start: int, stop: int, num_steps: int
) -> Episode:
    """Episodes ``start … stop − 1`` of the collection ``(env_id, env_kwargs, policy, seed)``,
    stacked: observations ``(n, T, *obs_shape)``, actions ``(n, T, A)``, states ``(n, T, S)`` or None."""
    key = json.dumps([env_id, env_kwargs, policy], sort_keys=True)
    if _CACHE.get("key") != key:
        # The unwrapped env: gymnasium's passive checker and order enforcer only cost time here.
        env = gym.make(env_id, **env_kwargs).unwrapped
        _CACHE.update(key=key, env=env, policy=make_policy(env, policy))
    env, pol = _CACHE["env"], _CACHE["policy"]
    episodes = [rollout(env, pol, num_steps, *episode_seeds(seed, i), episode=i) for i in range(start, stop)]
    return Episode(*(None if arrays[0] is None else np.stack(arrays) for arrays in zip(*episodes)))

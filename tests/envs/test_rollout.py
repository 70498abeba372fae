"""``rollout`` records fixed-length episodes and refuses to step past an episode's end."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from seqlvm.envs import rollout
from seqlvm.envs.policies import RandomPolicy


def _end_of_episode(env: gym.Env, seed: int, policy_seed: int) -> tuple[int, bool, bool]:
    """The step at which ``env`` ends the episode under the same policy, and how."""
    policy = RandomPolicy(env.action_space)
    obs, info = env.reset(seed=seed)
    policy.reset(policy_seed)
    for t in range(1, 10_000):
        obs, _, terminated, truncated, info = env.step(policy(obs, info))
        if terminated or truncated:
            return t, terminated, truncated
    raise AssertionError("the episode never ended")


def test_terminated_before_the_last_step_is_an_error() -> None:
    """CartPole (gymnasium's own) terminates once the pole falls: an episode of that length or
    shorter is recorded, a longer one raises instead of stepping a finished episode."""
    env = gym.make("CartPole-v1")
    end, terminated, _ = _end_of_episode(env, seed=3, policy_seed=4)
    assert terminated and 5 < end < 60
    policy = RandomPolicy(env.action_space)
    episode = rollout(env, policy, end + 1, seed=3, policy_seed=4)  # the terminal observation is the last
    assert episode.observations.shape == (end + 1, 4) and episode.actions.shape == (end + 1, 2)
    assert not np.isnan(episode.observations).any()
    with pytest.raises(ValueError, match=rf"num_steps: got {end + 2}; 'CartPole-v1' terminated the episode of reset seed 3 at step {end}, after {end + 1} observations"):
        rollout(env, policy, end + 2, seed=3, policy_seed=4)
    with pytest.raises(ValueError, match=rf"terminated episode 7 at step {end}"):
        rollout(env, policy, 60, seed=3, policy_seed=4, episode=7)


def test_truncated_before_the_last_step_is_an_error() -> None:
    env = gym.make("CartPole-v1", max_episode_steps=3)
    policy = RandomPolicy(env.action_space)
    assert len(rollout(env, policy, 4, seed=0, policy_seed=0).observations) == 4  # truncated at the last step
    with pytest.raises(ValueError, match=r"num_steps: got 5; 'CartPole-v1' truncated .* at step 3"):
        rollout(env, policy, 5, seed=0, policy_seed=0)

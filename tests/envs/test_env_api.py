"""Every registered environment against gymnasium's own checker, vectorisation and seeding."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import seqlvm.envs
from seqlvm.envs import ENV_IDS


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker's warnings count as failures too
        check_env(env.unwrapped, skip_render_check=False)
    assert env.metadata["render_fps"] > 0
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3


def test_make_with_module_prefix() -> None:
    env = gym.make("seqlvm.envs:seqlvm/BouncingBall-v0")
    assert isinstance(env.unwrapped, seqlvm.envs.BouncingBallEnv)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_make_vec_sync(env_id: str) -> None:
    envs = gym.make_vec(env_id, num_envs=3, vectorization_mode="sync")
    obs, info = envs.reset(seed=7)
    assert obs.shape == (3, *envs.single_observation_space.shape)
    assert info["state"].shape[0] == 3
    for _ in range(5):
        obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
    assert envs.observation_space.contains(obs)
    envs.close()


def _episode(env_id: str, seed: int, steps: int = 30) -> tuple[list[np.ndarray], list[np.ndarray]]:
    env = gym.make(env_id)
    env.action_space.seed(seed)
    obs, info = env.reset(seed=seed)
    frames, states = [obs], [info["state"]]
    for _ in range(steps):
        obs, _, _, _, info = env.step(env.action_space.sample())
        frames.append(obs)
        states.append(info["state"])
    return frames, states


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_episode_bit_for_bit(env_id: str) -> None:
    frames_a, states_a = _episode(env_id, 3)
    frames_b, states_b = _episode(env_id, 3)
    frames_c, _ = _episode(env_id, 4)
    assert all(np.array_equal(a, b) for a, b in zip(frames_a, frames_b))
    assert all(np.array_equal(a, b) for a, b in zip(states_a, states_b))
    assert not all(np.array_equal(a, c) for a, c in zip(frames_a, frames_c))

"""ModelEnv: gymnasium's checker, agreement with imagine for the same seed and actions, the task's
reward and budget, registration, and errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from seqlvm.envs import RandomPolicy, encode_action
from seqlvm.rl import HoldTask, ModelEnv, imagine
from seqlvm.rl.spaces import to_env, to_model
from tests.rl.conftest import tiny_kvae


CASES = [
    ("seqlvm/BouncingBall-v0", "hold", "ball_kvae"),
    ("seqlvm/ImageNavigation-v0", "goto", "nav_kvae"),
    ("seqlvm/ImageNavigation-v0", "goto", "nav_gtmsm"),
]


@pytest.mark.parametrize("env_id, task, fixture", CASES)
def test_model_env_passes_the_env_checker(env_id, task, fixture, request):
    model = request.getfixturevalue(fixture)
    check_env(ModelEnv(model, env_id, task, context_steps=6), skip_render_check=True)


def test_made_from_a_checkpoint_by_its_registered_id(ball_checkpoint):
    env = gym.make("seqlvm/LearnedModel-v0", model=ball_checkpoint, env_id="seqlvm/BouncingBall-v0", task="hold")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (32, 32, 1) and obs.dtype == np.uint8
    obs, reward, terminated, truncated, info = env.step(np.array([1.0, 0.0], np.float32))
    assert env.observation_space.contains(obs) and np.isfinite(reward) and not terminated and not truncated
    assert info["latent"].shape == (4 + 2,) and np.isfinite(info["log_prob"])


@pytest.mark.parametrize("noise", [True, False], ids=["sampled", "mean-path"])
@pytest.mark.parametrize("env_id, task, fixture", CASES)
def test_stepping_agrees_with_imagine_for_the_same_seed(env_id, task, fixture, noise, request):
    model = request.getfixturevalue(fixture)
    env = ModelEnv(model, env_id, task, context_steps=5, noise=noise)
    env.reset(seed=11)
    actions = [env.action_space.sample() for _ in range(4)]
    stepped = [env.step(a) for a in actions]
    space = env.observation_space
    u = torch.as_tensor(np.stack([encode_action(env.action_space, a) for a in actions]))[None]
    im = imagine(
        model, to_model(space, env.context.observations)[None], u, 1,
        u_context=torch.as_tensor(env.context.actions)[None], generator=torch.Generator().manual_seed(env.rollout_seed),
        noise=noise,
    )
    for h, (obs, reward, _, _, info) in enumerate(stepped):
        np.testing.assert_array_equal(obs, to_env(space, im.observations[0, 0, h]))
        np.testing.assert_allclose(info["latent"], im.latents[0, 0, h].numpy(), rtol=1e-6, atol=1e-6)
        expected = env.task.reward(env.goal, im.observations[:, :, h], im.latents[:, :, h])
        assert reward == pytest.approx(float(expected), rel=1e-5, abs=1e-6)
        assert (info["log_prob"] == 0.0) == (not noise)


def test_reset_is_seeded_and_budget_truncates(ball_kvae):
    env = ModelEnv(ball_kvae, "seqlvm/BouncingBall-v0", HoldTask(budget=3, window=2), context_steps=3)
    first, info = env.reset(seed=5)
    again, info_again = env.reset(seed=5)
    np.testing.assert_array_equal(first, again)
    assert info == info_again
    truncated = [env.step(np.zeros(2, np.float32))[3] for _ in range(3)]
    assert truncated == [False, False, True]
    assert not env.context.actions.any()  # the ball's default policy does not push
    env.reset(seed=5, options={"policy": RandomPolicy(env.action_space)})
    assert env.context.actions[1:].all()


def test_bad_input_raises_before_any_work(ball_kvae):
    with pytest.raises(ValueError, match=r"obs_shape = \(3, 8, 8\); the model has obs_shape = \(1, 32, 32\)"):
        ModelEnv(ball_kvae, "seqlvm/ImageNavigation-v0", "goto")
    with pytest.raises(ValueError, match="actions are 2 wide encoded; the model has control_dim = 5"):
        ModelEnv(tiny_kvae((1, 32, 32), 5), "seqlvm/BouncingBall-v0", "hold")
    with pytest.raises(ValueError, match="task: unknown name 'fly'"):
        ModelEnv(ball_kvae, "seqlvm/BouncingBall-v0", "fly")
    with pytest.raises(ValueError, match="context_steps: must be an int >= 1; got 0"):
        ModelEnv(ball_kvae, "seqlvm/BouncingBall-v0", "hold", context_steps=0)
    env = ModelEnv(ball_kvae, "seqlvm/BouncingBall-v0", "hold")
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(np.zeros(2, np.float32))
    with pytest.raises(ValueError, match=r"options: unknown key\(s\) \['speed'\]"):
        env.reset(seed=0, options={"speed": 1})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action: got"):
        env.step(np.zeros(3, np.float32))

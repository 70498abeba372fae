"""ModelEnv: gymnasium's checker, agreement with imagine for the same seed and actions (on a rolled
or a given context), the task's reward and budget, a plain reward function as the task,
registration, and errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from seqlvm.envs import Episode, RandomPolicy, encode_action, rollout
from seqlvm.models import LGSSM, LGSSMConfig
from seqlvm.rl import HoldTask, ModelEnv, RewardTask, check_model_fits, imagine
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
    with pytest.raises(ValueError, match="model: expected a seqlvm model, a checkpoint file or a run folder; got int"):
        ModelEnv(5, "seqlvm/BouncingBall-v0", "hold")
    with pytest.raises(ValueError, match="env_id: the HoldTask is posed in 'seqlvm/BouncingBall-v0'; got 'seqlvm/Pong-v0'"):
        ModelEnv(ball_kvae, "seqlvm/Pong-v0", "hold")
    env = ModelEnv(ball_kvae, "seqlvm/BouncingBall-v0", "hold")
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(np.zeros(2, np.float32))
    with pytest.raises(ValueError, match=r"options: unknown key\(s\) \['speed'\]"):
        env.reset(seed=0, options={"speed": 1})
    with pytest.raises(ValueError, match=r'options\["policy"\]: expected a seqlvm.envs.Policy .* got \'random\''):
        env.reset(seed=0, options={"policy": "random"})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action: got"):
        env.step(np.zeros(3, np.float32))


def walk(env_id: str, steps: int, seed: int) -> Episode:
    """An episode of the real env under uniform random actions, rolled outside any ModelEnv."""
    env = gym.make(env_id).unwrapped
    return rollout(env, RandomPolicy(env.action_space), steps, seed, seed + 1)


@pytest.mark.parametrize("noise", [True, False], ids=["sampled", "mean-path"])
@pytest.mark.parametrize("env_id, task, fixture", CASES)
def test_a_given_context_conditions_the_model(env_id, task, fixture, noise, request):
    model = request.getfixturevalue(fixture)
    env = ModelEnv(model, env_id, task, context_steps=3, noise=noise)
    context = walk(env_id, 7, seed=4)  # not context_steps long: it is not rolled
    obs, _ = env.reset(seed=2, options={"context": context})
    np.testing.assert_array_equal(obs, context.observations[-1])
    if task == "goto":  # the goal is a cell of the given context
        assert any(np.array_equal(env.goal.position, s) for s in context.states)
    actions = [env.action_space.sample() for _ in range(3)]
    stepped = [env.step(a) for a in actions]
    space = env.observation_space
    u = torch.as_tensor(np.stack([encode_action(env.action_space, a) for a in actions]))[None]
    im = imagine(
        model, to_model(space, context.observations)[None], u, 1, u_context=torch.as_tensor(context.actions)[None],
        generator=torch.Generator().manual_seed(env.rollout_seed), noise=noise,
    )
    for h, (obs, _, _, _, info) in enumerate(stepped):
        np.testing.assert_array_equal(obs, to_env(space, im.observations[0, 0, h]))
        np.testing.assert_allclose(info["latent"], im.latents[0, 0, h].numpy(), rtol=1e-6, atol=1e-6)


def test_the_mean_path_depends_on_the_context_only(ball_kvae):
    """Handing a rolled context back reproduces its steps; another context changes them."""
    env = ModelEnv(ball_kvae, "seqlvm/BouncingBall-v0", "hold", context_steps=4, noise=False)
    push = np.array([0.5, -0.5], np.float32)
    env.reset(seed=1, options={"policy": RandomPolicy(env.action_space)})
    rolled, first = env.context, env.step(push)[0]
    env.reset(seed=9, options={"context": rolled})
    np.testing.assert_array_equal(env.step(push)[0], first)
    env.reset(seed=1, options={"context": walk("seqlvm/BouncingBall-v0", 4, seed=8)})
    assert not np.array_equal(env.step(push)[0], first)
    one = walk("seqlvm/BouncingBall-v0", 1, seed=8)  # a single observation is a context too
    np.testing.assert_array_equal(env.reset(seed=1, options={"context": one})[0], one.observations[0])
    assert env.observation_space.contains(env.step(push)[0])


def test_bad_contexts_raise_naming_the_option(ball_kvae, nav_kvae):
    env = ModelEnv(ball_kvae, "seqlvm/BouncingBall-v0", "hold", context_steps=3)
    env.reset(seed=0)
    before = env.context
    good = walk("seqlvm/BouncingBall-v0", 4, seed=0)
    frames, actions = good.observations, good.actions
    bad = {
        r"expected a seqlvm.envs.Episode\(observations, actions, states\); got tuple": tuple(good),
        r"observations must have shape \(T >= 1, 32, 32, 1\), .* got \(4, 8, 8, 3\)": good._replace(observations=np.zeros((4, 8, 8, 3), np.uint8)),
        r"observations must have shape \(T >= 1, 32, 32, 1\), .* got \(32, 32, 1\)": good._replace(observations=frames[0]),
        r"observations must have shape \(T >= 1, 32, 32, 1\), .* got \(0, 32, 32, 1\)": Episode(frames[:0], actions[:0], None),
        r"observations must be integers as the real env returns them \(uint8\); got float32": good._replace(observations=frames / np.float32(255)),
        r"observations must lie in the observation space's bounds \[0, 255\]; got values in \[-1, ": good._replace(observations=frames.astype(np.int64) - 1),
        r"actions must have shape \(T, A\) = \(4, 2\), .* got \(4, 5\)": good._replace(actions=np.zeros((4, 5), np.float32)),
        r"actions must have shape \(T, A\) = \(4, 2\), .* got \(3, 2\)": good._replace(actions=actions[1:]),
        r"actions must be finite; got 1 non-finite entries": good._replace(actions=np.where(np.arange(8).reshape(4, 2) == 5, np.nan, actions)),
        r"states must be None or of shape \(T, S\) with T = 4; got \(3, 4\)": good._replace(states=good.states[1:]),
    }
    for message, context in bad.items():
        with pytest.raises(ValueError, match=r'options\["context"\]: ' + message):
            env.reset(seed=1, options={"context": context})
        assert env.context is before  # raised before any work
    with pytest.raises(ValueError, match="options: got both 'context' and 'policy'"):
        env.reset(seed=1, options={"context": good, "policy": RandomPolicy(env.action_space)})
    nav = ModelEnv(nav_kvae, "seqlvm/ImageNavigation-v0", "goto")
    nav.reset(seed=0)
    nav.step(0)
    with pytest.raises(ValueError, match=r"context: the goto task needs the true cells \(Episode.states\)"):
        nav.reset(seed=0, options={"context": walk("seqlvm/ImageNavigation-v0", 4, seed=0)._replace(states=None)})
    with pytest.raises(RuntimeError, match="before reset"):  # the failed reset ended the old episode
        nav.step(0)


def test_a_given_context_of_any_integer_type_resets_into_the_space(ball_kvae):
    env = ModelEnv(ball_kvae, "seqlvm/BouncingBall-v0", "hold", context_steps=3)
    context = walk("seqlvm/BouncingBall-v0", 4, seed=0)
    for frames in (context.observations.astype(np.int64), context.observations.tolist()):
        obs, _ = env.reset(seed=0, options={"context": context._replace(observations=frames)})
        assert obs.dtype == np.uint8 and env.observation_space.contains(obs)
        np.testing.assert_array_equal(obs, context.observations[-1])


def test_observations_must_be_frames_or_vectors():
    model = LGSSM(LGSSMConfig(state_dim=2, obs_dim=6, control_dim=1))
    with pytest.raises(ValueError, match=r"observation_space: expected uint8 frames \(H, W, C\) .* or vectors \(D,\); got Box"):
        check_model_fits(model, gym.spaces.Box(-1.0, 1.0, (2, 3), np.float32), gym.spaces.Box(-1.0, 1.0, (1,), np.float32))


def test_a_reward_function_is_the_task(ball_kvae):
    seen = []

    def brightness(observations, latents):
        seen.append(latents)
        return -observations.flatten(2).mean(-1)

    env = ModelEnv(ball_kvae, "seqlvm/BouncingBall-v0", brightness, context_steps=3)
    assert env.task == RewardTask(brightness, env_id="seqlvm/BouncingBall-v0")
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert env.goal is None
    seen.clear()
    for _ in range(3):
        obs, reward, _, _, info = env.step(np.array([1.0, 0.0], np.float32))
        # The reward sees the model's frame in [0, 1]; the returned frame is it rounded to uint8.
        assert reward == pytest.approx(-obs.mean() / 255.0, abs=0.5 / 255.0)
        np.testing.assert_array_equal(seen[-1].numpy(), info["latent"][None, None])
    env = ModelEnv(ball_kvae, "seqlvm/BouncingBall-v0", RewardTask(brightness, budget=2), context_steps=3)
    env.reset(seed=0)
    assert [env.step(np.zeros(2, np.float32))[3] for _ in range(2)] == [False, True]


def test_a_task_must_be_a_task_a_name_or_a_function(ball_kvae):
    for task in (3, HoldTask):
        with pytest.raises(ValueError, match=r"task: expected a Task instance, a task name \['goto', 'hold'\] or a reward function"):
            ModelEnv(ball_kvae, "seqlvm/BouncingBall-v0", task)
    env = ModelEnv(ball_kvae, "seqlvm/BouncingBall-v0", lambda x, l: x.mean(), context_steps=2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"reward_fn: must return a Tensor \(N, H\) = \(1, 1\), one reward per step; got \(\)"):
        env.step(np.zeros(2, np.float32))

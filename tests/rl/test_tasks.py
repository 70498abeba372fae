"""Tasks: goals drawn from the context, rewards against hand-computed values, the success rules
on hand-made infos, a user's reward function scoring both rollout functions, and a real MPC
episode through run_episode."""

from __future__ import annotations

import copy
import gymnasium as gym
import numpy as np
import pytest
import torch

from seqlvm.envs import Episode, make_policy, rollout
from seqlvm.rl import (
    CEMPlanner, GotoTask, HoldTask, PlanningAgent, RandomAgent, RewardTask, check_task_env, env_rollout, imagine, make_task,
    model_rollout, run_episode,
)
from seqlvm.rl.spaces import to_model


def nav_context(steps: int = 12, seed: int = 0) -> Episode:
    env = gym.make("seqlvm/ImageNavigation-v0").unwrapped
    return rollout(env, make_policy(env), steps, seed, seed + 1)


def test_goto_goal_is_a_cell_of_the_context_away_from_the_last_one():
    context = nav_context()
    for seed in range(5):
        goal = GotoTask().reset(context, np.random.default_rng(seed))
        t = [i for i, s in enumerate(context.states) if np.array_equal(s, goal.position)]
        assert t and not np.array_equal(goal.position, context.states[-1])
        np.testing.assert_allclose(goal.observation.permute(1, 2, 0).numpy() * 255, context.observations[t[0]])
        # Without a model (the true simulator plans), the goal's state is its true cell.
        np.testing.assert_array_equal(goal.state.numpy(), goal.position)


def test_goto_reward_and_success():
    context = nav_context()
    task = GotoTask(state_weight=0.5)
    goal = task.reset(context, np.random.default_rng(0))
    crops = torch.stack([goal.observation, torch.zeros_like(goal.observation)])[None]  # (1, 2, C, h, w)
    reward = task.reward(goal, crops)
    assert reward[0, 0] == 0.0
    assert reward[0, 1] == pytest.approx(-float(goal.observation.pow(2).mean()))
    elsewhere = {"position": goal.position + 1}
    assert task.success(goal, [elsewhere, {"position": goal.position.copy()}, elsewhere])
    assert not task.success(goal, [elsewhere, elsewhere])


class Walker:
    """A model whose state is the running sum of the moves of its one-hot actions (GTM-SM's
    ``infer_states`` contract), for the optional state term of the goto reward."""

    moves = torch.tensor([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=torch.float32)

    def infer_states(self, actions: torch.Tensor) -> torch.Tensor:
        return (actions @ self.moves).cumsum(1)


def test_goto_uses_the_models_state_when_it_has_one():
    context = nav_context(seed=3)
    task = GotoTask(state_weight=0.5)
    goal = task.reset(context, np.random.default_rng(0), Walker())
    # Without bumps into the border (none in this context) the walker's state is the cell minus the start.
    torch.testing.assert_close(goal.state, torch.as_tensor(goal.position - context.states[0], dtype=torch.float32))
    crops = goal.observation.expand(1, 1, *goal.observation.shape)
    latents = (goal.state + torch.tensor([1.0, 2.0]))[None, None]
    assert task.reward(goal, crops, latents)[0, 0] == pytest.approx(-0.5 * 5.0)
    wider = torch.cat([latents, torch.full((1, 1, 3), 9.0)], -1)  # only the first 2 entries are the state
    assert task.reward(goal, crops, wider)[0, 0] == pytest.approx(-0.5 * 5.0)
    with pytest.raises(ValueError, match=r"latents: must begin with the goal's state of width 2 \(infer_states\); got \(1, 1, 1\)"):
        task.reward(goal, crops, torch.zeros(1, 1, 1))


def test_hold_reward_is_the_mean_distance_of_the_ball_mass():
    task = HoldTask()
    goal = task.reset(Episode(np.zeros((1, 32, 32, 1), np.uint8), np.zeros((1, 2), np.float32), None), np.random.default_rng(0))
    top, bottom, left, right = goal.region
    assert bottom - top == right - left == 10 and 6 <= top and bottom <= 26 and 6 <= left and right <= 26
    frames = torch.zeros(1, 2, 1, 32, 32)
    frames[0, 0, 0, top : top + 3, left : left + 3] = 1.0  # inside
    frames[0, 1, 0, top + 2, right + 3] = 1.0  # one pixel whose centre is 3.5 px right of the square
    frames[0, 1, 0, 0, 0] = 1.0  # on the wall band, ignored
    torch.testing.assert_close(task.reward(goal, frames), torch.tensor([[0.0, -3.5]]))


def test_hold_success_counts_the_last_window():
    task = HoldTask(budget=6, window=4, fraction=0.75)
    goal = task.reset(Episode(np.zeros((1, 32, 32, 1), np.uint8), np.zeros((1, 2), np.float32), None), np.random.default_rng(1))
    top, bottom, left, right = goal.region
    inside = {"state": np.array([left, 32 - top, 0.0, 0.0])}  # the square's corner: closed, so inside
    outside = {"state": np.array([right + 1.0, 32 - top, 0.0, 0.0])}
    assert task.success(goal, [outside, outside, inside, inside, outside, inside])
    assert not task.success(goal, [inside, inside, inside, outside, outside, inside])
    assert not task.success(goal, [inside, inside, inside])
    with pytest.raises(ValueError, match=r"HoldTask: window must lie in \[1, budget = 5\]; got 6"):
        HoldTask(budget=5, window=6)
    with pytest.raises(ValueError, match=r"HoldTask: border must lie in \[0, size / 2 = 16.0\), leaving pixels to weigh; got 16"):
        HoldTask(border=16)
    with pytest.raises(ValueError, match="task: unknown name 'fly'"):
        make_task("fly")


def test_a_reward_task_scores_model_and_simulator_rollouts(ball_kvae):
    """The user's function gets the model's frames and latents, or the real frames and
    ``info["state"]``, and its (N, H) values are the rollout's rewards."""
    def reward_fn(observations, latents):
        return latents[..., 0] - observations.flatten(2).mean(-1)

    task = RewardTask(reward_fn, budget=4, env_id="seqlvm/BouncingBall-v0")
    env = gym.make(task.env_id).unwrapped
    context = rollout(env, make_policy(env), 3, 0, 1)
    assert task.reset(context, np.random.default_rng(0)) is None and not task.success(None, [{}] * 4)
    actions = torch.tensor([[[1.0, 0.0], [0.0, -1.0]], [[-1.0, 1.0], [0.5, 0.5]]])  # (J, H, A) = (2, 2, 2)
    x = to_model(env.observation_space, context.observations)[None]
    u = torch.as_tensor(context.actions)[None]
    im = imagine(ball_kvae, x, actions, u_context=u, noise=False)
    expected = im.latents[:, 0, :, 0] - im.observations[:, 0].flatten(2).mean(-1)
    torch.testing.assert_close(model_rollout(ball_kvae, task, None, x, u)(actions), expected)
    sim = copy.deepcopy(env)
    steps = [sim.step(a) for a in actions[1].numpy()]
    true = [step[4]["state"][0] - step[0].mean() / 255.0 for step in steps]
    np.testing.assert_allclose(env_rollout(env, task, None)(actions)[1].numpy(), true, rtol=1e-5)
    with pytest.raises(ValueError, match="RewardTask: budget must be an int >= 1; got 0"):
        RewardTask(reward_fn, budget=0)
    with pytest.raises(ValueError, match="RewardTask: reward_fn must be a function"):
        RewardTask("brightness")


def test_planning_with_the_true_simulator_beats_random_on_hold():
    """The ceiling agent (CEM over copies of the real env) holds the ball where random pushes do not."""
    task = HoldTask(budget=24, window=6, side=12)
    env = gym.make(task.env_id).unwrapped
    planner = CEMPlanner(env.action_space, horizon=6, population=24, elites=4, iterations=2)
    results = {
        name: [run_episode(env, task, agent, 3, np.random.default_rng(seed)) for seed in range(3)]
        for name, agent in (("random", RandomAgent(env.action_space)), ("true", PlanningAgent(planner, task)))
    }
    assert sum(r.success for r in results["true"]) >= 2 > sum(r.success for r in results["random"])
    assert results["true"][0].frames.shape == (3 + 24, 32, 32, 1)


def test_a_task_takes_only_its_own_environment():
    check_task_env(HoldTask(), "seqlvm.envs:seqlvm/BouncingBall-v0")  # an alias of its id
    check_task_env(RewardTask(lambda x, l: x.flatten(2).mean(-1)), "seqlvm/Pong-v0")  # no env of its own
    with pytest.raises(ValueError, match="--env: the GotoTask is posed in 'seqlvm/ImageNavigation-v0'; got 'seqlvm/BouncingBall-v0'"):
        check_task_env(GotoTask(), "seqlvm/BouncingBall-v0", "--env")
    with pytest.raises(ValueError, match="env_id: the HoldTask is posed in 'seqlvm/BouncingBall-v0'; got 'seqlvm/BouncingBallPolygon-v0'"):
        check_task_env(HoldTask(), "seqlvm/BouncingBallPolygon-v0")

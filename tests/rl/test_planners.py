"""Planners: MPC over a linear model with known dynamics drives its state to a target far better
than random actions, for Box and Discrete actions; the true-simulator rollout plays copies of the
env without touching it; errors."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from seqlvm.envs import encode_action
from seqlvm.models import LGSSM, LGSSMConfig
from seqlvm.rl import CEMPlanner, GotoGoal, GotoTask, RandomShootingPlanner, env_rollout, model_rollout
from seqlvm.rl.spaces import to_model, uniform_actions

TARGET = torch.tensor([3.0, -2.0], dtype=torch.float64)
MOVES = torch.tensor([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=torch.float64)  # ImageNavigation's


class Reach:
    """Reward -||x - target||^2 of every step (a Task's reward; the planners need no more)."""

    def reward(self, goal, observations, latents=None):
        return -(observations - goal).pow(2).sum(-1)


def known_model(action_matrix: torch.Tensor) -> LGSSM:
    """z' = z + M u + N(0, 1e-4 I), x = z + N(0, 1e-4 I), z_0 ~ N(0, 1e-4 I)."""
    k = action_matrix.shape[1]
    model = LGSSM(LGSSMConfig(state_dim=2, obs_dim=2, control_dim=k)).double()
    eye = torch.eye(2, dtype=torch.float64)
    model.A, model.B, model.C = eye, action_matrix, eye.clone()
    model.Q, model.R, model.P0 = 1e-4 * eye, 1e-4 * eye, 1e-4 * eye
    return model


def final_distance(space: spaces.Space, model: LGSSM, choose, steps: int = 8) -> float:
    """Run the true (noise-free) system z' = z + M u from 0 for ``steps`` steps with actions from
    ``choose(x_history, u_history)``; the final distance to the target."""
    M = model.B.detach()
    xs, us = [torch.zeros(2, dtype=torch.float64)], [torch.zeros(M.shape[1], dtype=torch.float64)]
    for _ in range(steps):
        action = choose(torch.stack(xs)[None], torch.stack(us)[None])
        u = torch.as_tensor(encode_action(space, action), dtype=torch.float64)
        xs.append(xs[-1] + M @ u)
        us.append(u)
    return float((xs[-1] - TARGET).norm())


@pytest.mark.parametrize("noise", [False, True], ids=["mean-path", "two-sampled-paths"])
@pytest.mark.parametrize("discrete", [False, True])
def test_mpc_with_a_known_model_reaches_the_target_far_better_than_random(discrete, noise):
    space = spaces.Discrete(5) if discrete else spaces.Box(-1.0, 1.0, (2,), np.float32)
    model = known_model(MOVES.T.contiguous() if discrete else torch.eye(2, dtype=torch.float64))
    rng = np.random.default_rng(0)
    cem = CEMPlanner(space, horizon=6, population=60, elites=6, iterations=3)
    shooting = RandomShootingPlanner(space, horizon=6, population=200)

    def planned(planner):
        def choose(x, u):
            rollout_fn = model_rollout(model, Reach(), TARGET, x, u, 2 if noise else 1, torch.Generator().manual_seed(0), noise)
            return planner.plan(rollout_fn, rng)
        return choose

    def random(x, u):
        return space.sample()

    space.seed(0)
    random_distance = np.mean([final_distance(space, model, random) for _ in range(5)])
    cem_distance = final_distance(space, model, planned(cem))
    shooting_distance = final_distance(space, model, planned(shooting))
    assert random_distance > 2.0
    assert cem_distance < (0.01 if discrete else 0.3), cem_distance
    assert shooting_distance < 1.0, shooting_distance


def test_env_rollout_plays_copies_and_leaves_the_env_alone():
    env = gym.make("seqlvm/ImageNavigation-v0").unwrapped
    env.reset(seed=3)
    before = copy.deepcopy(env._position)
    task = GotoTask()
    goal_crop = to_model(env.observation_space, env.image[0:8, 0:8])
    goal = GotoGoal(goal_crop, np.zeros(2, np.int64), torch.zeros(2))  # the true cell (0, 0) as the state
    actions = torch.from_numpy(uniform_actions(env.action_space, np.random.default_rng(1), (3, 4)))
    rewards = env_rollout(env, task, goal)(actions)
    np.testing.assert_array_equal(env._position, before)
    for j in range(3):
        sim = copy.deepcopy(env)
        steps = [sim.step(int(a.argmax())) for a in actions[j]]
        crops = np.stack([step[0] for step in steps])
        cells = torch.tensor(np.stack([step[4]["state"] for step in steps]), dtype=torch.float32)
        expected = -(to_model(env.observation_space, crops) - goal_crop).pow(2).flatten(1).mean(-1)
        torch.testing.assert_close(rewards[j], expected - cells.pow(2).sum(-1))


@pytest.mark.parametrize("kwargs, match", [
    (dict(horizon=0), "CEMPlanner: horizon must be an int >= 1; got 0"),
    (dict(population=10, elites=11), r"CEMPlanner: elites must be an int in \[1, population = 10\]; got 11"),
    (dict(momentum=1.0), r"CEMPlanner: momentum must lie in \[0, 1\); got 1.0"),
])
def test_bad_planner_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CEMPlanner(spaces.Discrete(3), **kwargs)


def test_several_particles_without_noise_are_refused():
    model = known_model(torch.eye(2, dtype=torch.float64))
    x, u = torch.zeros(1, 1, 2, dtype=torch.float64), torch.zeros(1, 1, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="num_particles: got 3 without noise"):
        model_rollout(model, Reach(), TARGET, x, u, 3, noise=False)


def test_unbounded_action_spaces_are_refused():
    with pytest.raises(ValueError, match="action_space must be Discrete or a bounded Box"):
        RandomShootingPlanner(spaces.Box(-np.inf, np.inf, (2,)))


def test_a_reward_with_parameters_of_its_own_plans():
    """A learned reward head (an nn.Module) scores imagined steps; planning records no graph."""
    model = known_model(torch.eye(2, dtype=torch.float64))
    head = torch.nn.Linear(2, 1).double()

    class Learned:
        def reward(self, goal, observations, latents=None):
            return head(observations).squeeze(-1)

    x, u = torch.zeros(1, 1, 2, dtype=torch.float64), torch.zeros(1, 1, 2, dtype=torch.float64)
    space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    for planner in (CEMPlanner(space, horizon=3, population=8, elites=2, iterations=2), RandomShootingPlanner(space, 3, 8)):
        assert space.contains(planner.plan(model_rollout(model, Learned(), None, x, u), np.random.default_rng(0)))


def test_a_nan_return_counts_as_the_worst():
    """One sequence scored NaN must not hide the best finite one (np.argmax would pick the NaN)."""
    space = spaces.Box(-1.0, 1.0, (1,), np.float32)
    seen = []

    def rollout(actions):
        seen.append(actions)
        rewards = -(actions[..., 0] - 0.5).pow(2)
        rewards[0] = float("nan")
        return rewards

    action = RandomShootingPlanner(space, horizon=2, population=20).plan(rollout, np.random.default_rng(0))
    returns = -(seen[0][1:, :, 0] - 0.5).pow(2).sum(1)  # the finite ones, by hand
    np.testing.assert_array_equal(action, seen[0][1 + int(returns.argmax()), 0].numpy())
    with pytest.raises(ValueError, match="no finite return for any sequence"):
        RandomShootingPlanner(space, horizon=2, population=3).plan(lambda a: torch.full(a.shape[:2], float("nan")), np.random.default_rng(0))


def test_a_rollout_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"rollout: must return rewards \(J, H\) = \(4, 2\), .* got \(4,\)"):
        RandomShootingPlanner(spaces.Discrete(3), horizon=2, population=4).plan(lambda a: a.sum((1, 2)), np.random.default_rng(0))

"""A trained model as a simulator: imagined rollouts, tasks, a gymnasium environment and planners.

- :func:`imagine`: batched rollouts of many action sequences and particles through a model's
  ``rollout_start`` / ``rollout_step`` (``seqlvm.models.base``);
- :mod:`seqlvm.rl.tasks`: goals, batched rewards and success tests (:class:`GotoTask`,
  :class:`HoldTask`), and :class:`RewardTask`, a user's reward function as a task;
- :class:`ModelEnv`: the model as a gymnasium ``Env``, registered on import as
  ``seqlvm/LearnedModel-v0`` (``gymnasium.make("seqlvm/LearnedModel-v0", model=CKPT,
  env_id="seqlvm/BouncingBall-v0", task="hold")``);
- :class:`CEMPlanner`, :class:`RandomShootingPlanner`: MPC over a rollout function, of a model
  (:func:`model_rollout`) or of copies of the real env (:func:`env_rollout`);
- :func:`run_episode`: an agent (:class:`PlanningAgent`, :class:`RandomAgent`) on a task in the
  real environment.
"""

from gymnasium.envs.registration import register, registry

from seqlvm.rl.imagine import Imagination, imagine
from seqlvm.rl.model_env import ModelEnv, check_model_fits
from seqlvm.rl.mpc import AGENTS, Agent, EpisodeResult, PlanningAgent, RandomAgent, make_agent, run_episode, run_episodes
from seqlvm.rl.planners import CEMPlanner, RandomShootingPlanner, RolloutFn, env_rollout, model_rollout
from seqlvm.rl.tasks import (
    TASKS, GotoGoal, GotoTask, HoldGoal, HoldTask, RewardFn, RewardTask, Task, as_task, check_task_env, make_task,
)

__all__ = [
    "Imagination", "imagine", "ModelEnv", "check_model_fits", "AGENTS", "Agent", "EpisodeResult",
    "PlanningAgent", "RandomAgent", "make_agent", "run_episode", "run_episodes", "CEMPlanner", "RandomShootingPlanner", "RolloutFn", "env_rollout",
    "model_rollout", "TASKS", "Task", "GotoTask", "GotoGoal", "HoldTask", "HoldGoal", "RewardFn", "RewardTask", "make_task",
    "as_task", "check_task_env",
]

if "seqlvm/LearnedModel-v0" not in registry:  # importlib.reload must not trigger gymnasium's override warning
    register(id="seqlvm/LearnedModel-v0", entry_point="seqlvm.rl.model_env:ModelEnv")

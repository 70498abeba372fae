"""Roll gymnasium environments into sequence files (the ``seqlvm generate`` command).

The episodes and their seeding are :func:`seqlvm.envs.roll_episodes`'s; this module checks the
arguments, farms blocks of episodes out to worker processes and streams them into the file.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np

import seqlvm.envs
from seqlvm.data.h5 import SequenceWriter, check_output_path, check_seed
from seqlvm.envs.rollout import POLICIES, Episode, action_dim, make_policy, roll_episodes

__all__ = ["POLICIES", "Generation", "generate_dataset", "plan_generation", "resolve_env_id"]

_BLOCK = 50  # episodes per work item: big enough to amortise IPC, small enough for a smooth progress bar


def resolve_env_id(env_id: str, argument: str = "env_id") -> str:
    """The registered id for ``env_id``, importing ``module`` first for ``"module:id"`` strings;
    errors name ``argument``."""
    name = env_id
    if ":" in env_id:
        module, name = env_id.split(":", 1)
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ValueError(f"{argument}: cannot import module {module!r} of {env_id!r} ({err})") from None
    if name not in gym.registry:
        raise ValueError(
            f"{argument}: unknown environment {env_id!r}; expected one of {list(seqlvm.envs.ENV_IDS)} "
            "or another registered id"
        )
    return name


def _roll_block(job: tuple[str, dict[str, Any], str, int, int, int, int]) -> tuple[int, Episode]:
    return job[4], roll_episodes(*job)


@dataclass(frozen=True)
class Generation:
    """A checked generation request (from :func:`plan_generation`); :meth:`run` rolls and writes it."""

    env_id: str
    out: Path
    num_episodes: int
    num_steps: int
    seed: int
    workers: int
    env_kwargs: dict[str, Any]
    policy: str
    obs_shape: tuple[int, ...]
    obs_dtype: np.dtype
    action_dim: int
    state_dim: int | None

    def run(self, progress: Callable[[int], None] | None = None) -> Path:
        """Roll every episode into ``out`` (atomically); ``progress(n)`` is called as blocks finish."""
        jobs = [
            (self.env_id, self.env_kwargs, self.policy, self.seed, start, min(start + _BLOCK, self.num_episodes), self.num_steps)
            for start in range(0, self.num_episodes, _BLOCK)
        ]
        # The pool forks before the output file is opened, so no child inherits an HDF5 handle.
        with _pool(min(self.workers, len(jobs))) as pool, SequenceWriter(
            self.out, self.num_episodes, self.num_steps, self.obs_shape, self.obs_dtype, self.action_dim, self.state_dim,
            env_id=self.env_id, env_kwargs=self.env_kwargs, seed=self.seed, policy=self.policy,
        ) as writer:
            blocks = map(_roll_block, jobs) if pool is None else pool.imap_unordered(_roll_block, jobs)
            for start, episodes in blocks:
                writer.write(start, *episodes)
                if progress is not None:
                    progress(len(episodes.observations))
        return self.out


def plan_generation(
    env_id: str,
    out: str | os.PathLike[str],
    *,
    num_episodes: int,
    num_steps: int,
    seed: int = 0,
    workers: int = 1,
    env_kwargs: dict[str, Any] | None = None,
    policy: str = "default",
) -> Generation:
    """Check every argument of :func:`generate_dataset` (building and resetting one environment)
    without rolling anything; raises ``ValueError`` naming the argument at fault.

    Checked: ``num_episodes``, ``num_steps`` and ``workers`` are integers >= 1; ``seed`` is an
    integer with ``0 <= seed < 2**64`` (:func:`seqlvm.data.h5.check_seed`); ``out`` is not a
    directory and has no regular file among its ancestors (:func:`seqlvm.data.h5.check_output_path`);
    ``policy`` and ``env_kwargs`` are accepted by the environment; the observations are frames or
    vectors; and ``num_steps - 1`` steps fit in the env's time limit (``max_episode_steps``), since
    every episode of a file has exactly ``num_steps`` observations. An episode that the environment
    itself terminates early can only be found by rolling it: :func:`seqlvm.envs.rollout` raises then.
    """
    for name, value, low in (("num_episodes", num_episodes, 1), ("num_steps", num_steps, 1), ("workers", workers, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name}: got {value!r}; expected an integer >= {low}")
    seed = check_seed(seed, "seed")
    out = check_output_path(out, "out")
    if policy not in POLICIES:
        raise ValueError(f"policy: got {policy!r}; expected one of {POLICIES}")
    env_kwargs = dict(env_kwargs or {})
    if "render_mode" in env_kwargs:
        raise ValueError("env_kwargs: 'render_mode' is not stored in data sets; leave it out")
    try:
        json.dumps(env_kwargs)
    except TypeError as err:
        raise ValueError(f"env_kwargs: {env_kwargs!r} is not JSON-serialisable ({err})") from None
    name = resolve_env_id(env_id)
    try:
        probe = gym.make(name, **env_kwargs)
    except TypeError as err:
        raise ValueError(f"env_kwargs: {env_kwargs} rejected by {name!r}: {err}") from None
    obs, info = probe.reset(seed=0)
    obs = np.asarray(obs)
    if obs.dtype == np.uint8 and obs.ndim == 3:
        obs_dtype = np.dtype(np.uint8)
    elif obs.ndim == 1 and obs.dtype.kind in "fiu":
        obs_dtype = np.dtype(np.float32)
    else:
        raise ValueError(
            f"env_id: {name!r} observes {obs.dtype} {obs.shape}; expected uint8 (H, W, C) frames or a real vector (D,)"
        )
    limit = probe.spec.max_episode_steps if probe.spec is not None else None
    if limit is not None and num_steps - 1 > limit:
        probe.close()
        raise ValueError(
            f"num_steps: got {num_steps}; {name!r} ends every episode after {limit} steps (max_episode_steps), "
            f"so at most {limit + 1} observations fit in one episode"
        )
    make_policy(probe, policy)
    generation = Generation(
        name, out, int(num_episodes), int(num_steps), int(seed), int(workers), env_kwargs, policy,
        obs.shape, obs_dtype, action_dim(probe.action_space), int(np.size(info["state"])) if "state" in info else None,
    )
    probe.close()
    return generation


def generate_dataset(
    env_id: str,
    out: str | os.PathLike[str],
    *,
    num_episodes: int,
    num_steps: int,
    seed: int = 0,
    workers: int = 1,
    env_kwargs: dict[str, Any] | None = None,
    policy: str = "default",
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Roll ``num_episodes`` episodes of ``num_steps`` observations into the HDF5 file ``out``.

    Writes ``/observations`` (``(N, T, H, W, C)`` uint8 for image observations, ``(N, T, D)``
    float32 for vector ones), ``/actions (N, T, A)`` and, when the env reports ``info["state"]``,
    ``/states (N, T, S)``, with attributes ``env_id``, ``env_kwargs``, ``seed`` and ``policy``; see
    :mod:`seqlvm.data.h5` for the layout and :class:`seqlvm.envs.Episode` for the time alignment.
    Episode ``i`` is seeded by ``SeedSequence(seed, spawn_key=(i,))``: the file is the same for any
    number of workers. Every episode has exactly ``num_steps`` observations: an environment that
    ends an episode earlier (terminated, or truncated by its time limit) is an error
    (``ValueError`` naming the env, the episode and the step), never a padded or overrun episode.

    Args:
        env_id:      a registered gymnasium id (``"module:id"`` imports ``module`` first).
        out:         destination file, replaced atomically when complete; on any error (or
                     Ctrl-C) the previous file is kept and no temporary file is left.
        workers:     processes that roll episodes in parallel (1 = in this process).
        env_kwargs:  keyword arguments for ``gymnasium.make``.
        policy:      ``"default"`` (the env's ``default_policy()``: no push for the bouncing balls,
                     the held random walk for image navigation; uniform random if it has none),
                     ``"zero"`` or ``"random"``.
        progress:    called with the number of episodes finished since the previous call.

    Everything is checked by :func:`plan_generation` before any episode is rolled.
    """
    return plan_generation(
        env_id, out, num_episodes=num_episodes, num_steps=num_steps, seed=seed, workers=workers,
        env_kwargs=env_kwargs, policy=policy,
    ).run(progress)


def _pool(workers: int) -> contextlib.AbstractContextManager[Any]:
    if workers == 1:
        return contextlib.nullcontext()
    # fork where the OS has it: children start at once and share the imported modules (spawn would
    # re-import torch and the whole CLI in every worker); nothing here holds threads or file handles.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    return mp.get_context(method).Pool(workers)

"""Model-based RL: MPC with a learned model against random actions and the true simulator.

For each task whose checkpoint is given (the other is skipped, saying so):

- ``goto`` in ``seqlvm/ImageNavigation-v0`` with ``--nav-checkpoint`` (e.g. a GTM-SM run);
- ``hold`` in ``seqlvm/BouncingBall-v0`` with ``--ball-checkpoint`` (a KVAE with control_dim = 2
  trained on pushes, e.g. ``seqlvm generate seqlvm/BouncingBall-v0 --policy random``),

it runs ``--episodes`` episodes in the real environment (a context under the env's default policy,
then the task's budget of steps) with three agents on the same episode seeds: CEM-MPC over the
learned model, uniform random actions (the floor) and CEM-MPC over copies of the real environment
(the ceiling, same planner settings). It reports each agent's success rate (with its binomial
standard error), the fraction of the random -> ceiling gap the model closes,
``(model - random) / (true - random)``, the planning time per real step, and the imagined steps per
second of :func:`seqlvm.rl.imagine` (``--imagine-batch`` action sequences x ``--horizon`` steps,
one batched call). It writes a GIF of the first four model-MPC episodes per task (their task steps) to ``--gif-dir``.

Run:  python benchmarks/model_based_rl.py --nav-checkpoint runs/gtmsm --ball-checkpoint runs/kvae_ball_push   (one CPU thread)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from seqlvm.envs import make_policy, rollout
from seqlvm.rl import check_model_fits, imagine, make_agent, make_task, run_episodes
from seqlvm.rl.spaces import to_model, uniform_actions
from seqlvm.train import load_model
from seqlvm.viz import hstack_videos, save_gif

TASKS = (("goto", "nav"), ("hold", "ball"))
AGENTS = (("model", "cem"), ("random", "random"), ("true", "true"))


def imagined_steps_per_second(model, env, batch: int, horizon: int, context_steps: int, repeats: int) -> float:
    """batch x horizon / the median seconds (over ``repeats``) of one ``imagine`` call from a real context."""
    context = rollout(env, make_policy(env), context_steps, 0, 1)
    dtype = next(model.parameters()).dtype
    x = to_model(env.observation_space, context.observations, dtype)[None]
    u = torch.as_tensor(context.actions, dtype=dtype)[None] if model.config.control_dim else None
    rng = np.random.default_rng(0)
    actions = torch.from_numpy(uniform_actions(env.action_space, rng, (batch, horizon))).to(dtype)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        imagine(model, x, actions, 1, u, torch.Generator().manual_seed(0))
        times.append(time.perf_counter() - start)
    return batch * horizon / float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nav-checkpoint", type=Path, help="run folder or checkpoint of a model of ImageNavigation-v0")
    ap.add_argument("--ball-checkpoint", type=Path, help="run folder or checkpoint of a KVAE of BouncingBall-v0 with pushes")
    ap.add_argument("--episodes", type=int, default=100, help="episodes per agent and task")
    ap.add_argument("--quick", action="store_true", help="10 episodes and 3 timing repeats (a smoke run)")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables")
    ap.add_argument("--nav-context", type=int, default=256, help="goto: context observations (GTM-SM's memory) before the task")
    ap.add_argument("--ball-context", type=int, default=10, help="hold: context observations before the task")
    ap.add_argument("--nav-env-kwargs", default='{"exploration_blocked": "stay"}',
                    help="goto: JSON keyword arguments of ImageNavigation-v0 (default: the no-bump walks the GTM-SM recipe trains on)")
    ap.add_argument("--ball-env-kwargs", default="{}", help="hold: JSON keyword arguments of BouncingBall-v0")
    ap.add_argument("--horizon", type=int, default=8)
    ap.add_argument("--population", type=int, default=100)
    ap.add_argument("--elites", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--particles", type=int, default=1, help="sampled model paths per sequence (with --noise)")
    ap.add_argument("--noise", action="store_true", help="plan on sampled model paths instead of the mean path")
    ap.add_argument("--imagine-batch", type=int, default=1000, help="action sequences of the imagine timing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gif-dir", type=Path, default=Path("."), help="folder of model_based_rl_<task>.gif")
    args = ap.parse_args()
    torch.set_num_threads(1)
    episodes, repeats = (10, 3) if args.quick else (args.episodes, 7)
    rows = []
    for task_name, prefix in TASKS:
        checkpoint = getattr(args, f"{prefix}_checkpoint")
        if checkpoint is None:
            print(f"{task_name}: skipped (no --{prefix}-checkpoint given)")
            continue
        context = getattr(args, f"{prefix}_context")
        task = make_task(task_name)
        model, _ = load_model(checkpoint)
        env = gym.make(task.env_id, **json.loads(getattr(args, f"{prefix}_env_kwargs"))).unwrapped
        check_model_fits(model, env.observation_space, env.action_space)
        results = {}
        for name, kind in AGENTS:
            agent = make_agent(kind, task, env.action_space, model, args.horizon, args.population, args.elites, args.iterations,
                               args.particles, args.noise)
            start = time.perf_counter()
            results[name] = run_episodes(env, task, agent, episodes, context, args.seed)
            print(f"{task_name}/{name}: {episodes} episodes in {time.perf_counter() - start:.0f} s", flush=True)
        rate = {name: float(np.mean([r.success for r in res])) for name, res in results.items()}
        ms = {name: 1000.0 * sum(r.plan_seconds for r in res) / (episodes * task.budget) for name, res in results.items()}
        gap = rate["true"] - rate["random"]
        closed = (rate["model"] - rate["random"]) / gap if gap > 0 else math.nan
        speed = imagined_steps_per_second(model, env, args.imagine_batch, args.horizon, context, repeats)
        rows.append((task_name, episodes, rate, ms, closed, speed, context))
        # The task part of each episode: the last context frame, then the budget's steps.
        frames = hstack_videos([r.frames[-(task.budget + 1):] for r in results["model"][:4]])
        gif = save_gif(frames, args.gif_dir / f"model_based_rl_{task_name}.gif", fps=5, scale=max(1, 96 // frames.shape[1]))
        print(f"{task_name}: GIF written to {gif}")
    if not rows:
        return
    header = ["task", "episodes", "context", "model CEM", "random", "true CEM", "gap closed", "ms/step model", "ms/step true", "imagined steps/s"]

    def pct(p: float, n: int) -> str:
        return f"{100 * p:.0f}% ± {100 * math.sqrt(p * (1 - p) / n):.0f}"

    table = [
        [t, str(n), str(k), pct(r["model"], n), pct(r["random"], n), pct(r["true"], n), f"{c:.2f}", f"{m['model']:.0f}", f"{m['true']:.0f}", f"{s:,.0f}"]
        for t, n, r, m, c, s, k in rows
    ]
    if args.markdown:
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for line in table:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(h), *(len(line[i]) for line in table)) for i, h in enumerate(header)]
        for line in [header, *table]:
            print("  ".join(v.rjust(w) for v, w in zip(line, widths)))
    print(f"CEM: horizon {args.horizon}, population {args.population}, elites {args.elites}, "
          f"iterations {args.iterations}, " + (f"{args.particles} sampled paths" if args.noise else "mean path") + f"; seed {args.seed}")


if __name__ == "__main__":
    main()

"""``seqlvm plan CKPT --task hold --episodes 20 --out plan.gif``: model-predictive control in the
real environment with a learned model."""

from __future__ import annotations

from pathlib import Path

import typer

from seqlvm.cli.app import command
from seqlvm.cli.common import load_trained, parse_env_kwargs, print_table


@command("plan")
def plan(
    checkpoint: Path = typer.Argument(..., help="Run folder (uses ckpt/best.pt) or checkpoint file."),
    task: str = typer.Option(..., "--task", help="goto (ImageNavigation) or hold (BouncingBall with pushes)."),
    env_id: str = typer.Option("", "--env", help="Real environment id (default: the task's)."),
    env_kwargs: str = typer.Option(
        "{}", "--env-kwargs",
        help='JSON keyword arguments of the real env, e.g. \'{"exploration_blocked": "stay"}\' for a GTM-SM '
        "trained on no-bump walks (the context is walked by the env's default policy).",
    ),
    episodes: int = typer.Option(10, "--episodes", help="Episodes to run."),
    out: Path = typer.Option(..., "--out", help="GIF of the first episodes (up to 4, side by side)."),
    planner: str = typer.Option(
        "cem", "--planner",
        help="cem: CEM over the model; shooting: random shooting over the model; true: CEM over copies "
        "of the real env (the ceiling); random: uniform actions.",
    ),
    horizon: int = typer.Option(8, "--horizon", help="Planning horizon (steps)."),
    population: int = typer.Option(100, "--population", help="Action sequences per iteration."),
    elites: int = typer.Option(10, "--elites", help="Elite sequences CEM refits to."),
    iterations: int = typer.Option(3, "--iterations", help="CEM iterations per step."),
    noise: bool = typer.Option(
        False, "--noise/--mean-path",
        help="Score each action sequence on --particles sampled model paths, or on the model's mean path (the default).",
    ),
    particles: int = typer.Option(1, "--particles", help="Sampled model paths per action sequence (with --noise)."),
    context: int = typer.Option(10, "--context", help="Observations under the env's default policy before the task starts."),
    seed: int = typer.Option(0, "--seed", help="Seed of the episodes (episode i uses default_rng([seed, i]))."),
) -> None:
    """Run --episodes episodes of the task with MPC and print the success rate and the planning time."""
    import gymnasium as gym

    from seqlvm.data.generate import resolve_env_id
    from seqlvm.data.h5 import check_output_path, check_seed
    from seqlvm.rl import check_model_fits, check_task_env, make_agent, make_task, run_episodes
    from seqlvm.viz import hstack_videos, save_gif

    if out.suffix.lower() != ".gif":
        raise ValueError(f"--out: the episodes are written as .gif, got {str(out)!r}")
    check_output_path(out, "--out")
    if episodes < 1 or context < 1:
        raise ValueError(f"--episodes and --context: must be at least 1, got {episodes} and {context}")
    check_seed(seed, "--seed")
    the_task = make_task(task)
    real_id = resolve_env_id(env_id or the_task.env_id, "--env")
    check_task_env(the_task, real_id, "--env")
    kwargs = parse_env_kwargs(env_kwargs)
    model, _, _ = load_trained(checkpoint)
    env = gym.make(real_id, **kwargs).unwrapped
    check_model_fits(model, env.observation_space, env.action_space)
    agent = make_agent(planner, the_task, env.action_space, model, horizon, population, elites, iterations, particles, noise)
    results = run_episodes(env, the_task, agent, episodes, context, seed)
    steps = episodes * the_task.budget
    print_table(f"{planner} on {task} in {env_id or the_task.env_id}, {episodes} episodes", {
        "success rate": sum(r.success for r in results) / episodes,
        "planning ms per step": 1000.0 * sum(r.plan_seconds for r in results) / steps,
        "steps per episode": the_task.budget,
    })
    frames = hstack_videos([r.frames for r in results[:4]])
    save_gif(frames, out, fps=5, scale=max(1, 96 // frames.shape[1]))
    typer.echo(f"episodes written to {out}")

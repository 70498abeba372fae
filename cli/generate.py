"""``seqlvm generate``: roll an environment into an HDF5 sequence file."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from seqlvm.cli.app import command
from seqlvm.cli.common import parse_env_kwargs

_SUFFIXES = (".h5", ".hdf5")


@command("generate")
def generate(
    env_id: str = typer.Argument(..., help="Registered environment id, e.g. seqlvm/BouncingBall-v0."),
    episodes: int = typer.Option(..., "--episodes", "-n", help="Number of episodes N."),
    steps: int = typer.Option(20, "--steps", "-T", help="Observations per episode T."),
    seed: int = typer.Option(0, "--seed", help="Seed of the whole file (episode i uses SeedSequence(seed, i))."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file (.h5 or .hdf5)."),
    workers: int = typer.Option(1, "--workers", "-j", help="Worker processes rolling episodes."),
    env_kwargs: str = typer.Option("{}", "--env-kwargs", help='JSON keyword arguments for the env, e.g. \'{"render_walls": false}\'.'),
    policy: str = typer.Option("default", "--policy", help="Behaviour policy: default, zero or random."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace OUT if it exists."),
) -> None:
    """Roll N episodes of T steps into one HDF5 file (observations, actions, states).

    The KVAE data sets (models.md §3.1), one command each:

        seqlvm generate seqlvm/BouncingBall-v0 -n 5000 -T 20 --seed 1234 -o data/box.h5 -j 2

        seqlvm generate seqlvm/BouncingBall-v0 -n 1000 -T 20 --seed 5678 -o data/box_test.h5 -j 2

    and likewise BouncingBallGravity-v0 (box_gravity), BouncingBallPolygon-v0 (polygon), Pong-v0 (pong).
    """
    from seqlvm.data.generate import plan_generation
    from seqlvm.data.h5 import check_output_path, check_seed

    for flag, value, low in (("--episodes", episodes, 1), ("--steps", steps, 1), ("--workers", workers, 1)):
        if value < low:
            raise ValueError(f"{flag}: got {value}; expected an integer >= {low}")
    check_seed(seed, "--seed")
    if out.suffix.lower() not in _SUFFIXES:
        raise ValueError(f"--out: got {str(out)!r}; expected a file name ending in {' or '.join(_SUFFIXES)}")
    check_output_path(out, "--out")  # not a directory, no file in the way of its folders
    if out.exists() and not force:
        raise ValueError(f"--out: {str(out)!r} exists; pass --force to replace it")
    kwargs = parse_env_kwargs(env_kwargs)
    generation = plan_generation(
        env_id, out, num_episodes=episodes, num_steps=steps, seed=seed, workers=workers, env_kwargs=kwargs, policy=policy
    )

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # auto_refresh=False keeps rich from starting a refresh thread before the worker pool forks.
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        auto_refresh=False, transient=False,
    ) as bar:
        task = bar.add_task(f"{env_id} → {out.name}", total=episodes)

        def advance(n: int) -> None:
            bar.advance(task, n)
            bar.refresh()

        start = time.perf_counter()
        generation.run(progress=advance)
    typer.echo(f"wrote {out}: {episodes} episodes × {steps} steps in {time.perf_counter() - start:.1f} s")

"""Regenerate the GIFs in docs/: four episodes of every environment, as the data sets store them.

    .venv/bin/python docs/make_gifs.py

Bouncing balls: the frames of `seqlvm generate ... --seed 0` (what `seqlvm show` draws). Image
navigation: the whole world with the agent's crop outlined (``render()``) beside the 8×8 crop it
observes, enlarged to the same height, under the data sets' random-walk policy.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np

from seqlvm.data import SequenceDataset, generate_dataset
from seqlvm.envs import ENV_IDS, episode_seeds
from seqlvm.viz import hstack_videos, save_gif

DOCS = Path(__file__).parent
EPISODES, STEPS, SCALE = 4, 20, 3


def bouncing(env_id: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = generate_dataset(env_id, Path(tmp) / "d.h5", num_episodes=EPISODES, num_steps=STEPS, seed=0)
        data = SequenceDataset(path, split="all")
        save_gif(hstack_videos([data[i]["x"] for i in range(EPISODES)], pad=2), out, fps=5, scale=SCALE)


def navigation(env_id: str, out: Path, episodes: int = 2, steps: int = 30) -> None:
    env = gym.make(env_id, render_mode="rgb_array")
    policy = env.unwrapped.default_policy()
    videos = []
    for i in range(episodes):
        env_seed, policy_seed = episode_seeds(0, i)
        obs, info = env.reset(seed=env_seed)
        policy.reset(policy_seed)
        frames = []
        for _ in range(steps):
            zoom = env.render().shape[0] // obs.shape[0]
            frames.append(np.concatenate([env.render(), obs.repeat(zoom, 0).repeat(zoom, 1)], axis=1))
            obs, _, _, _, info = env.step(policy(obs, info))
        videos.append(np.stack(frames))
    save_gif(hstack_videos(videos, pad=2), out, fps=5, scale=2)  # colour GIFs are large: 2 episodes, scale 2


def main() -> None:
    for env_id in ENV_IDS:
        out = DOCS / f"{env_id.split('/')[1].removesuffix('-v0').lower()}.gif"
        (navigation if "Navigation" in env_id else bouncing)(env_id, out)
        print(f"{out.name}: {out.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()

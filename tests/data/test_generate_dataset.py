"""Rolling environments into files: contents checked against the environments themselves."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import h5py
import numpy as np
import pytest

from seqlvm.data import SequenceDataset, generate_dataset, write_sequences
from seqlvm.envs import ImageNavigationEnv, episode_seeds


def test_file_holds_the_envs_own_episodes(tmp_path) -> None:
    path = generate_dataset("seqlvm/BouncingBallGravity-v0", tmp_path / "g.h5", num_episodes=4, num_steps=6, seed=21)
    with h5py.File(path, "r") as f:
        obs, actions, states = f["observations"][:], f["actions"][:], f["states"][:]
        attrs = dict(f.attrs)
    assert obs.shape == (4, 6, 32, 32, 1) and actions.shape == (4, 6, 2) and states.shape == (4, 6, 4)
    assert attrs["env_id"] == "seqlvm/BouncingBallGravity-v0" and attrs["seed"] == 21 and attrs["policy"] == "default"
    assert not actions.any()  # the passive data sets
    env = gym.make("seqlvm/BouncingBallGravity-v0")
    for i in range(4):
        frame, info = env.reset(seed=episode_seeds(21, i)[0])
        for t in range(6):
            np.testing.assert_array_equal(obs[i, t], frame)
            np.testing.assert_array_equal(states[i, t], info["state"].astype(np.float32))
            frame, _, _, _, info = env.step(None)


def test_navigation_actions_are_aligned_with_the_moves(tmp_path) -> None:
    path = generate_dataset("seqlvm/ImageNavigation-v0", tmp_path / "nav.h5", num_episodes=3, num_steps=40, seed=0)
    ds = SequenceDataset(path, split="all")
    assert ds.action_dim == 5 and ds.state_dim == 2 and ds.obs_shape == (3, 8, 8)
    for i in range(3):
        item = ds[i]
        u, pos = item["u"].numpy(), item["states"].numpy()
        assert not u[0].any() and (u[1:].sum(axis=1) == 1).all()  # u_0 = 0, then one-hot
        for t in range(1, 40):
            move = np.array(ImageNavigationEnv.MOVES[int(u[t].argmax())])
            target = pos[t - 1] + move
            expected = target if ((0 <= target) & (target < 9)).all() else pos[t - 1]
            np.testing.assert_array_equal(pos[t], expected)
    assert len({ds[i]["x"][0].numpy().tobytes() for i in range(3)}) == 3  # a new world per episode


def test_same_file_for_any_number_of_workers(tmp_path) -> None:
    kwargs = dict(num_episodes=120, num_steps=3, seed=5)
    one = generate_dataset("seqlvm/Pong-v0", tmp_path / "one.h5", workers=1, **kwargs)
    two = generate_dataset("seqlvm/Pong-v0", tmp_path / "two.h5", workers=2, **kwargs)
    with h5py.File(one, "r") as a, h5py.File(two, "r") as b:
        for key in ("observations", "actions", "states"):
            np.testing.assert_array_equal(a[key][:], b[key][:])


def test_env_kwargs_and_policy_are_stored(tmp_path) -> None:
    path = generate_dataset(
        "seqlvm.envs:seqlvm/BouncingBall-v0", tmp_path / "r.h5", num_episodes=2, num_steps=4,
        env_kwargs={"render_walls": False}, policy="random",
    )
    ds = SequenceDataset(path, split="all")
    assert ds.attrs["env_kwargs"] == {"render_walls": False} and ds.attrs["policy"] == "random"
    assert ds[0]["u"][1:].abs().sum() > 0 and ds[0]["x"][0].sum() < 40  # pushes; a ball and no border


def test_vector_envs_without_state(tmp_path) -> None:
    """Any registered env: CartPole observes a float vector and reports no ``info["state"]``."""
    path = generate_dataset("CartPole-v1", tmp_path / "cp.h5", num_episodes=3, num_steps=8, seed=2, policy="random")
    ds = SequenceDataset(path, split="all")
    assert ds.obs_shape == (4,) and ds.action_dim == 2 and ds.state_dim is None
    assert set(ds[0]) == {"x", "u"}
    env = gym.make("CartPole-v1")
    np.testing.assert_array_equal(ds[1]["x"][0].numpy(), env.reset(seed=episode_seeds(2, 1)[0])[0])


def test_import_layering() -> None:
    """seqlvm.data leaves gymnasium to its generator; envs (imported by workers) leave torch out."""
    code = (
        "import sys, seqlvm.data; assert 'gymnasium' not in sys.modules, 'data'; "
        "import seqlvm.envs; assert not any(m.startswith('seqlvm.models') for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    subprocess.run([sys.executable, "-c", "import sys, seqlvm.envs; assert 'torch' not in sys.modules"], check=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(env_id="seqlvm/Nope-v0"), "env_id: unknown"),
        (dict(env_id="nosuchmodule:seqlvm/X-v0"), "env_id: cannot import"),
        (dict(num_episodes=0), "num_episodes"),
        (dict(num_steps=2.5), "num_steps"),
        (dict(seed=-1), "seed"),
        (dict(workers=0), "workers"),
        (dict(policy="greedy"), "policy"),
        (dict(env_kwargs={"gravity": 3}), "env_kwargs"),
        (dict(env_kwargs={"render_mode": "rgb_array"}), "env_kwargs"),
        (dict(env_id="seqlvm/ImageNavigation-v0", policy="zero"), "policy"),
    ],
)
def test_bad_arguments_fail_before_any_work(tmp_path, kwargs: dict, match: str) -> None:
    args = dict(env_id="seqlvm/BouncingBall-v0", out=tmp_path / "x.h5", num_episodes=2, num_steps=3) | kwargs
    with pytest.raises(ValueError, match=match):
        generate_dataset(**args)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("seed", [2**64, 2**100, np.int64(-3)])
def test_seed_out_of_range_fails_before_any_work(tmp_path, seed) -> None:
    """Seeds live in [0, 2**64): numpy seeds are >= 0 and the ``seed`` attribute is an HDF5 uint64."""
    with pytest.raises(ValueError, match=r"seed: got .*; expected an integer with 0 <= seed < 2\*\*64"):
        generate_dataset("seqlvm/BouncingBall-v0", tmp_path / "x.h5", num_episodes=1, num_steps=2, seed=seed)
    assert list(tmp_path.iterdir()) == []
    path = generate_dataset("seqlvm/BouncingBall-v0", tmp_path / "x.h5", num_episodes=1, num_steps=2, seed=2**64 - 1)
    assert SequenceDataset(path, split="all").attrs["seed"] == 2**64 - 1


def test_output_path_in_the_way_fails_before_any_work(tmp_path, monkeypatch) -> None:
    import seqlvm.data.generate as generate

    def never(*args):
        raise AssertionError("rolled episodes for an output path that cannot be written")

    monkeypatch.setattr(generate, "roll_episodes", never)
    folder = tmp_path / "dir.h5"
    folder.mkdir()
    with pytest.raises(ValueError, match=r"out: .*dir.h5' is a directory"):
        generate_dataset("seqlvm/BouncingBall-v0", folder, num_episodes=1, num_steps=2)
    (tmp_path / "plain").write_text("x")
    with pytest.raises(ValueError, match=r"out: .*plain/x.h5' lies under .*which is a file"):
        generate_dataset("seqlvm/BouncingBall-v0", tmp_path / "plain" / "x.h5", num_episodes=1, num_steps=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.h5", "plain"] and list(folder.iterdir()) == []


@pytest.mark.parametrize(
    "workers, episodes, which",
    [(1, 3, "episode 0 at step 24"), (2, 60, r"episode \d+ at step \d+")],  # 2 blocks: either may fail first
)
def test_episode_ending_early_is_an_error_and_leaves_nothing(tmp_path, workers: int, episodes: int, which: str) -> None:
    """CartPole terminates when the pole falls (episode 0 of seed 0 at step 24 under the random
    policy); a fixed-length file cannot hold it, and stepping on is undefined in gymnasium."""
    old = write_sequences(tmp_path / "cp.h5", np.zeros((1, 2, 4)))
    before = old.read_bytes()
    with pytest.raises(ValueError, match=f"num_steps: got 60; 'CartPole-v1' terminated {which}"):
        generate_dataset("CartPole-v1", old, num_episodes=episodes, num_steps=60, seed=0, policy="random", workers=workers)
    assert old.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["cp.h5"]


def test_num_steps_beyond_the_envs_time_limit_fails_before_any_work(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"num_steps: got 502; 'CartPole-v1' ends every episode after 500 steps"):
        generate_dataset("CartPole-v1", tmp_path / "cp.h5", num_episodes=1, num_steps=502)
    with pytest.raises(ValueError, match=r"num_steps: got 4; .* after 2 steps \(max_episode_steps\)"):
        generate_dataset("seqlvm/BouncingBall-v0", tmp_path / "b.h5", num_episodes=1, num_steps=4, env_kwargs={"max_episode_steps": 2})
    assert list(tmp_path.iterdir()) == []
    path = generate_dataset("seqlvm/BouncingBall-v0", tmp_path / "b.h5", num_episodes=1, num_steps=3, env_kwargs={"max_episode_steps": 2})
    assert SequenceDataset(path, split="all").seq_len == 3

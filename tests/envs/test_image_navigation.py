"""Image navigation: grid geometry, walls, crops against the full image, images from files, the
random-walk behaviour policy."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from seqlvm.envs import ImageNavigationEnv, RandomWalkPolicy, procedural_image


def test_default_geometry_is_the_gtm_sm_grid() -> None:
    env = ImageNavigationEnv()
    obs, info = env.reset(seed=0)
    assert env.grid_shape == (9, 9) and obs.shape == (8, 8, 3)
    np.testing.assert_array_equal(info["position"], [4, 4])


@pytest.mark.parametrize("image_size, crop, step", [(32, 8, 3), (48, 16, 4), (20, 5, 2)])
def test_never_leaves_the_image_and_sees_the_right_crop(image_size: int, crop: int, step: int) -> None:
    env = ImageNavigationEnv(image_size=image_size, crop=crop, step=step, random_start=True, render_mode="rgb_array")
    obs, info = env.reset(seed=1)
    rng = np.random.default_rng(1)
    rows, cols = env.grid_shape
    visited = set()
    for _ in range(1500):
        prev = info["position"].copy()
        action = int(rng.integers(5))
        obs, _, _, _, info = env.step(action)
        row, col = info["position"]
        assert 0 <= row < rows and 0 <= col < cols
        top, left = row * step, col * step
        assert top + crop <= image_size and left + crop <= image_size
        np.testing.assert_array_equal(obs, env.image[top : top + crop, left : left + crop])
        d_row, d_col = env.MOVES[action]
        target = prev + [d_row, d_col]
        inside = 0 <= target[0] < rows and 0 <= target[1] < cols
        np.testing.assert_array_equal(info["position"], target if inside else prev)
        visited.add((row, col))
    assert len(visited) == rows * cols  # the random actions explored every cell


def test_moving_into_a_wall_leaves_the_agent_in_place() -> None:
    env = ImageNavigationEnv()
    env.reset(seed=0)
    for _ in range(10):
        env.step(1)  # up
    np.testing.assert_array_equal(env.step(1)[4]["position"], [0, 4])
    for _ in range(10):
        env.step(3)  # left
    np.testing.assert_array_equal(env.step(3)[4]["position"], [0, 0])
    np.testing.assert_array_equal(env.step(0)[4]["position"], [0, 0])  # stay
    np.testing.assert_array_equal(env.step(4)[4]["position"], [0, 1])  # right
    for bad in (2.5, True, 5, -1):  # np.int64 would have read 2.5 as 2 and True as 1
        with pytest.raises(ValueError, match=rf"action: got {bad!r}; expected an integer in \[0, 5\)"):
            env.step(bad)
    np.testing.assert_array_equal(env.step(np.int64(2))[4]["position"], [1, 1])  # down


def test_procedural_worlds_are_seeded_and_varied() -> None:
    env = ImageNavigationEnv()
    env.reset(seed=3)
    first = env.image.copy()
    env.reset(seed=3)
    np.testing.assert_array_equal(env.image, first)
    env.reset(seed=4)
    assert not np.array_equal(env.image, first)
    # Landmarks: most of the 81 crops differ from each other.
    crops = {env.image[3 * i : 3 * i + 8, 3 * j : 3 * j + 8].tobytes() for i in range(9) for j in range(9)}
    assert len(crops) >= 73
    img = procedural_image(np.random.default_rng(0), 64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and img.std() > 20


def test_image_from_file_is_centre_cropped_and_fixed(tmp_path) -> None:
    wide = np.zeros((40, 60, 3), np.uint8)
    wide[:, 10:50] = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    path = tmp_path / "world.png"
    Image.fromarray(wide).save(path)
    env = ImageNavigationEnv(image=path, image_size=40, crop=8, step=4)
    env.reset(seed=0)
    np.testing.assert_array_equal(env.image, wide[:, 10:50])  # same size: the centre square exactly
    first = env.image.copy()
    env.reset(seed=1)
    np.testing.assert_array_equal(env.image, first)
    with pytest.raises(FileNotFoundError, match="image"):
        ImageNavigationEnv(image=tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="image"):
        ImageNavigationEnv(image=tmp_path / "bad.png")


def test_image_from_array() -> None:
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    obs, _ = ImageNavigationEnv(image=image).reset(seed=0)
    np.testing.assert_array_equal(obs, image[12:20, 12:20])
    with pytest.raises(ValueError, match="image"):
        ImageNavigationEnv(image=image[:16])


def test_bad_geometry() -> None:
    with pytest.raises(ValueError, match="crop"):
        ImageNavigationEnv(crop=40)
    with pytest.raises(ValueError, match="step"):
        ImageNavigationEnv(step=0)


def test_random_walk_policy_holds_moves_and_starts_unblocked() -> None:
    env = ImageNavigationEnv()
    policy = env.default_policy()
    assert isinstance(policy, RandomWalkPolicy)
    runs, stays = [], 0
    for episode in range(20):
        obs, info = env.reset(seed=episode)
        policy.reset(seed=episode)
        previous, length = None, 0
        for _ in range(100):
            left_before = policy._left  # noqa: SLF001  (0 means the policy is about to choose)
            position = info["position"].copy()
            action = policy(obs, info)
            if left_before == 0 and action != 0:
                d_row, d_col = env.MOVES[action]
                assert 0 <= position[0] + d_row < 9 and 0 <= position[1] + d_col < 9  # chosen moves are open
            stays += action == 0
            if action == previous:
                length += 1
            else:
                if previous is not None:
                    runs.append(length)
                previous, length = action, 1
            obs, _, _, _, info = env.step(action)
    assert 1.5 < np.mean(runs) < 4.0  # Poisson(2) holds (merged when a move is drawn twice in a row)
    assert stays > 0


def test_random_walk_policy_is_seeded() -> None:
    env = ImageNavigationEnv()
    actions = []
    for _ in range(2):
        policy = env.default_policy()
        obs, info = env.reset(seed=0)
        policy.reset(seed=11)
        seq = []
        for _ in range(50):
            a = policy(obs, info)
            seq.append(a)
            obs, _, _, _, info = env.step(a)
        actions.append(seq)
    assert actions[0] == actions[1]


@pytest.mark.parametrize("blocked", ["bump", "stay"])
@pytest.mark.parametrize("through_env", [False, True])
def test_random_walk_walls_modes(blocked: str, through_env: bool) -> None:
    """"bump" records moves into walls (that leave the agent in place); "stay" never does. The
    mode is the policy's argument or, for data generation, the env's ``exploration_blocked``."""
    if through_env:
        env = ImageNavigationEnv(exploration_blocked=blocked)
        policy = env.default_policy(mean_hold=6.0)
    else:
        env = ImageNavigationEnv()
        policy = env.default_policy(mean_hold=6.0, blocked=blocked)
    bumps = 0
    for episode in range(10):
        obs, info = env.reset(seed=episode)
        policy.reset(seed=episode)
        for _ in range(100):
            before = info["position"].copy()
            action = policy(obs, info)
            obs, _, _, _, info = env.step(action)
            bumps += action != 0 and np.array_equal(before, info["position"])
    assert (bumps > 0) if blocked == "bump" else (bumps == 0)
    with pytest.raises(ValueError, match="blocked"):
        env.default_policy(blocked="wrap")
    with pytest.raises(ValueError, match="exploration_blocked"):
        ImageNavigationEnv(exploration_blocked="wrap")

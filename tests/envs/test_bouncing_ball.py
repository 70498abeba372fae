"""Physics invariants of the bouncing-ball family, checked against geometry written out here."""

from __future__ import annotations

import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest

from seqlvm.envs import SCENES, BouncingBallEnv, Scene
from seqlvm.envs.physics import BallState, Paddle, Wall, advance

HEXAGON = [(3.0, 1.0), (1.0, 15.0), (8.0, 30.0), (25.0, 30.0), (30.0, 8.0), (15.0, 1.0)]
RADIUS = 3.0


def _states(env: BouncingBallEnv, steps: int, actions: np.ndarray | None = None) -> np.ndarray:
    out = []
    for t in range(steps):
        out.append(env.step(None if actions is None else actions[t])[4]["state"])
    return np.array(out)


def _hexagon_clearance(xy: np.ndarray) -> np.ndarray:
    """Distance from each centre to the nearest hexagon edge line, positive inside (convex polygon)."""
    v = np.array(HEXAGON)
    edges = np.roll(v, -1, axis=0) - v
    normals = np.stack([-edges[:, 1], edges[:, 0]], axis=1) / np.linalg.norm(edges, axis=1, keepdims=True)
    centroid = v.mean(axis=0)
    normals *= np.sign(((centroid - v) * normals).sum(axis=1, keepdims=True))  # point inward
    return (((xy[:, None, :] - v[None]) * normals[None]).sum(axis=2)).min(axis=1)


@pytest.mark.parametrize("seed", range(4))
def test_box_keeps_speed_and_stays_inside(seed: int) -> None:
    env = BouncingBallEnv("box")
    state0 = env.reset(seed=seed)[1]["state"]
    states = _states(env, 1000)
    speed0 = math.hypot(*state0[2:])
    assert np.abs(np.hypot(states[:, 2], states[:, 3]) - speed0).max() < 1e-6
    # walls at 2 and 30: the ball's edge may touch them, never cross by more than rounding.
    assert states[:, :2].min() >= 2 + RADIUS - 1e-9 and states[:, :2].max() <= 30 - RADIUS + 1e-9
    assert (np.diff(np.sign(states[:, 2:]), axis=0) != 0).sum() >= 20  # it did bounce, many times


def test_no_tunnelling_at_extreme_speed() -> None:
    """Pushes up to 1000 px/s (200 px per frame, 9× the box) must still bounce, never escape."""
    env = BouncingBallEnv("box", push_scale=1000.0, max_speed=1000.0)
    env.reset(seed=0)
    states = _states(env, 2000, np.random.default_rng(0).uniform(-1, 1, size=(2000, 2)))
    assert np.hypot(states[:, 2], states[:, 3]).max() > 500
    assert states[:, :2].min() >= 5 - 1e-9 and states[:, :2].max() <= 27 + 1e-9


def _folded_flight(p: float, v: float, duration: float, lo: float = 5.0, hi: float = 27.0) -> tuple[float, float]:
    """Exact flight of one coordinate between two elastic walls: unfold, fly straight, fold back."""
    span = hi - lo
    u = (p - lo if v >= 0 else 2 * span - (p - lo)) + abs(v) * duration
    q = u % (2 * span)
    return (lo + q, abs(v)) if q <= span else (lo + 2 * span - q, -abs(v))


@pytest.mark.parametrize("speed", [5000.0, 20000.0])
def test_fast_ball_keeps_its_exact_flight(speed: float) -> None:
    """At 5000 px/s a step crosses the box ~45 times per axis: every impact must be kept, so each
    step equals the folded straight flight (before the fix the motion was cut after 64 impacts)."""
    env = BouncingBallEnv("box", push_scale=speed, max_speed=speed)
    env.reset(seed=0)
    x, y, vx, vy = env.step(np.array([1.0, 0.7], np.float32))[4]["state"]
    assert math.hypot(vx, vy) == pytest.approx(speed)
    for _ in range(10):
        (x, vx), (y, vy) = _folded_flight(x, vx, 0.2), _folded_flight(y, vy, 0.2)
        state = env.step(None)[4]["state"]
        np.testing.assert_allclose(state, [x, y, vx, vy], rtol=0, atol=1e-8)
        x, y, vx, vy = state


def test_wedged_disc_still_ends_its_step() -> None:
    """A disc touching two walls at once bounces between them in zero time: the impact budget
    stops it, and it stays where it is."""
    scene = Scene(walls=(Wall((0.0, 10.0), (32.0, 10.0)), Wall((0.0, 16.0), (32.0, 16.0))))
    state = BallState(16.0, 13.0, 0.0, 100.0)
    advance(state, scene)
    assert (state.x, state.y) == (16.0, 13.0) and abs(state.vy) == 100.0


@pytest.mark.parametrize(
    ("field", "value"),
    [("size", 0), ("size", 2.5), ("size", True), ("dt", 0.0), ("dt", -0.2), ("dt", math.nan), ("radius", 0.0),
     ("radius", -3.0), ("radius", math.inf), ("gravity", (0.0, math.nan)), ("gravity", (1.0,)),
     ("speed_range", (math.nan, 1.0)), ("speed_range", (5.0, 1.0)), ("speed_range", (-1.0, 1.0)),
     ("init_mean", (16.0, math.inf)), ("init_std", -1.0), ("init_clip", (26.0, 6.0)),
     ("ball_elasticity", 1.5), ("ball_elasticity", -0.1), ("walls", (Wall((0.0, 0.0), (1.0, 1.0), elasticity=2.0),)),
     ("walls", (Wall((0.0, math.nan), (1.0, 1.0)),)), ("walls", ((0.0, 1.0),)),
     ("paddles", (Paddle(x=0.0, speed=math.nan),)), ("paddles", (Paddle(x=0.0, elasticity=1.1),))],
)
def test_scene_rejects_bad_fields(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"Scene: {field}"):
        dataclasses.replace(SCENES["box"], **{field: value})


def test_scene_takes_lists_of_walls_as_tuples() -> None:
    scene = Scene(walls=list(SCENES["box"].walls))
    assert scene == SCENES["box"] and isinstance(scene.walls, tuple)


@pytest.mark.parametrize("seed", range(3))
def test_polygon_keeps_speed_and_stays_inside(seed: int) -> None:
    env = BouncingBallEnv("polygon")
    state0 = env.reset(seed=seed)[1]["state"]
    states = _states(env, 1000)
    assert _hexagon_clearance(state0[None, :2]).min() >= RADIUS
    assert _hexagon_clearance(states[:, :2]).min() >= RADIUS - 1e-9
    assert np.abs(np.hypot(states[:, 2], states[:, 3]) - math.hypot(*state0[2:])).max() < 1e-6


@pytest.mark.parametrize("seed", range(3))
def test_gravity_conserves_energy_and_falls_down(seed: int) -> None:
    env = BouncingBallEnv("box_gravity")
    state0 = env.reset(seed=seed)[1]["state"]
    states = _states(env, 1000)

    def energy(s: np.ndarray) -> np.ndarray:  # per unit mass, g = (0, -5) in world coordinates (y up)
        return 0.5 * (s[..., 2] ** 2 + s[..., 3] ** 2) + 5.0 * s[..., 1]

    assert np.abs(energy(states) - energy(state0)).max() < 1e-6 * energy(state0)
    assert states[:, :2].min() >= 5 - 1e-9 and states[:, :2].max() <= 27 + 1e-9
    # Free flight between frames: vy drops by |g| dt = 1 unless a floor/roof bounce flipped it.
    dvy = np.diff(states[:, 3])
    assert np.isclose(dvy[np.abs(dvy + 1.0) < 0.5], -1.0).all()


def test_gravity_pulls_toward_the_bottom_of_the_image() -> None:
    env = BouncingBallEnv("box_gravity")
    env.reset(seed=1)
    frames = np.array([env.step(None)[0][3:-3, 3:-3, 0] > 0 for _ in range(400)])  # inside the border
    rows = np.arange(frames.shape[1])[None, :, None]
    mean_row = (frames * rows).sum(axis=(1, 2)) / frames.sum(axis=(1, 2))
    assert mean_row.mean() > frames.shape[1] / 2  # more time spent low in the frame


@pytest.mark.parametrize("seed", range(3))
def test_pong_stays_between_floor_and_roof_and_loses_energy(seed: int) -> None:
    env = BouncingBallEnv("pong")
    state0, paddles0 = (lambda i: (i["state"], i["paddles"]))(env.reset(seed=seed)[1])
    speeds, paddles, ys = [math.hypot(*state0[2:])], [paddles0], []
    for _ in range(300):
        info = env.step(None)[4]
        speeds.append(math.hypot(*info["state"][2:]))
        paddles.append(info["paddles"])
        ys.append(info["state"][1])
    assert min(ys) >= 1 + RADIUS - 1e-9 and max(ys) <= 32 - RADIUS + 1e-9
    assert (np.diff(speeds) <= 1e-9).all()  # elasticities < 1: never faster
    paddles = np.array(paddles)
    assert np.abs(np.diff(paddles, axis=0)).max() <= 2.0 + 1e-12
    assert paddles.min() >= 3.0 and paddles.max() <= 29.0


def test_render_matches_state_and_original_border() -> None:
    env = BouncingBallEnv("box")
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        img = obs[:, :, 0] > 0
        assert set(np.unique(obs)) <= {0, 255}
        border = np.zeros_like(img)
        border[2, 2:31] = border[30, 2:31] = border[2:31, 2] = border[2:31, 30] = True
        assert border.sum() == 112 and (img & border).sum() == 112  # the original's 112 wall pixels
        ball = img & ~border
        assert abs(ball.sum() - math.pi * RADIUS**2) < 6
        rows, cols = np.nonzero(ball)
        x, y = info["state"][:2]
        assert abs(cols.mean() + 0.5 - x) < 0.5 and abs(32 - (rows.mean() + 0.5) - y) < 0.5


def test_render_walls_off() -> None:
    obs, _ = BouncingBallEnv("box", render_walls=False).reset(seed=0)
    assert abs((obs > 0).sum() - math.pi * RADIUS**2) < 6


def test_passive_dynamics_and_push() -> None:
    a, b = BouncingBallEnv("box"), BouncingBallEnv("box")
    a.reset(seed=5)
    b.reset(seed=5)
    for _ in range(20):
        np.testing.assert_array_equal(a.step(None)[4]["state"], b.step(np.zeros(2, np.float32))[4]["state"])
    # A push a changes v by push_scale · a before the step; in free flight p' = p + v' dt exactly.
    env = BouncingBallEnv("box", push_scale=2.0)
    for seed in range(50):
        x, y, vx, vy = env.reset(seed=seed)[1]["state"]
        v_new = np.array([vx - 2.0, vy + 1.0])
        p_new = np.array([x, y]) + 0.2 * v_new
        if p_new.min() > 6 and p_new.max() < 26:  # no wall within reach this step
            break
    state = env.step(np.array([-1.0, 0.5], np.float32))[4]["state"]
    np.testing.assert_allclose(state, np.concatenate([p_new, v_new]), rtol=0, atol=1e-12)


def test_push_speed_is_capped() -> None:
    env = BouncingBallEnv("box", push_scale=100.0, max_speed=20.0)
    env.reset(seed=0)
    state = env.step(np.ones(2, np.float32))[4]["state"]
    assert math.hypot(*state[2:]) == pytest.approx(20.0)


def test_initial_distribution_follows_the_recipe() -> None:
    env = BouncingBallEnv("box")
    states = np.array([env.reset(seed=s)[1]["state"] for s in range(400)])
    speeds = np.hypot(states[:, 2], states[:, 3])
    assert speeds.min() >= 10 and speeds.max() <= 15
    assert states[:, :2].min() >= 6 and states[:, :2].max() <= 26
    assert np.sum(states[:, :2] == 6) + np.sum(states[:, :2] == 26) > 50  # std 10: clipping is common


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="scene"):
        BouncingBallEnv("triangle")
    with pytest.raises(ValueError, match="max_speed"):
        BouncingBallEnv("box", max_speed=-1)
    with pytest.raises(ValueError, match="render_mode"):
        BouncingBallEnv("box", render_mode="human")
    env = BouncingBallEnv("box")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="action"):
        env.step(np.array([np.nan, 0.0]))


def test_scenes_registered_under_their_ids() -> None:
    expected = {
        "seqlvm/BouncingBall-v0": SCENES["box"],
        "seqlvm/BouncingBallGravity-v0": SCENES["box_gravity"],
        "seqlvm/BouncingBallPolygon-v0": SCENES["polygon"],
        "seqlvm/Pong-v0": SCENES["pong"],
    }
    for env_id, scene in expected.items():
        assert gym.make(env_id).unwrapped.scene == scene

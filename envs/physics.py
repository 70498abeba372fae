"""A dependency-free 2-D simulator of one disc among static segments (the KVAE bouncing-ball recipe).

World coordinates are pymunk's: pixel units, origin at the bottom-left corner of the frame, y up, so
the wall and hexagon coordinates of the original generators apply verbatim. The rasteriser flips y.

Between impacts the ball follows the exact ballistic flight ``p(t) = p + v t + ½ g t²``,
``v(t) = v + g t``, so ``E = |v|²/2 − g·p`` is conserved by elastic scenes (pymunk's semi-implicit
Euler differs from it by O(|g| dt²) pixels per step and lets energy drift).

Impacts use continuous collision detection: the earliest time of impact of the disc with every
wall (a capsule: a segment with a radius) is found in closed form, the disc is moved to the contact
and its velocity reflected, ``v ← v − (1 + e) (v·n) n`` with ``e`` the product of the two
elasticities (pymunk's rule), and the rest of the step continues from there. Nothing is sampled in
time, so no speed can tunnel through a wall, and the impact budget of a step grows with its path,
so a fast ball's flight is kept whole (only a wedged or settling disc runs out of it).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Wall", "Paddle", "Scene", "BallState", "SCENES", "Rasterizer", "advance", "distance_to_wall", "move_paddles",
    "rasterize",
]

# The impacts allowed in one step: this slack plus one per ball radius of the step's path (see
# _bounce_cap). Only a disc wedged in a gap narrower than about three radii, or one coming to rest on
# a wall under gravity with inelastic bounces (ever shorter hops), uses them all; the rest of the
# step's motion is then dropped, which keeps the disc inside. This bounds the work of such a step.
_MAX_BOUNCES = 64


@dataclass(frozen=True)
class Wall:
    """A static segment from ``a`` to ``b`` with thickness ``radius`` (a capsule) and an elasticity."""

    a: tuple[float, float]
    b: tuple[float, float]
    radius: float = 0.0
    elasticity: float = 1.0


@dataclass(frozen=True)
class Paddle:
    """A vertical pong paddle at column ``x``: a capsule of half-length ``half_length`` that moves
    ``speed`` pixels per step toward the ball's height whenever the ball is more than ``speed / 2``
    above or below its centre (the original generator's rule). It starts centred at ``y0``.
    """

    x: float
    y0: float = 16.0
    half_length: float = 3.0
    radius: float = 1.0
    speed: float = 2.0
    elasticity: float = 0.99

    def wall(self, y: float) -> Wall:
        """The paddle, centred at height ``y``, as a wall segment."""
        return Wall((self.x, y + self.half_length), (self.x, y - self.half_length), self.radius, self.elasticity)


@dataclass(frozen=True)
class Scene:
    """Everything that defines one bouncing-ball world.

    size:             frames are ``size × size`` pixels.
    dt:               seconds per frame.
    radius:           ball radius in pixels.
    gravity:          acceleration ``(g_x, g_y)`` in pixels/s², world coordinates (y up).
    speed_range:      initial speed ~ U(speed_range) (pixels/s); equal ends give a fixed speed.
    init_mean, init_std: initial centre ~ init_mean + init_std · N(0, I) ...
    init_clip:        ... clipped to this square range on both axes, and redrawn (at most 100
                      times) if the ball would then overlap a wall.
    ball_elasticity:  multiplied with each wall's elasticity at impact.
    walls:            static segments.
    paddles:          moving pong paddles (empty outside pong).
    """

    size: int = 32
    dt: float = 0.2
    radius: float = 3.0
    gravity: tuple[float, float] = (0.0, 0.0)
    speed_range: tuple[float, float] = (10.0, 15.0)
    init_mean: tuple[float, float] = (16.0, 16.0)
    init_std: float = 10.0
    init_clip: tuple[float, float] = (6.0, 26.0)
    ball_elasticity: float = 1.0
    walls: tuple[Wall, ...] = ()
    paddles: tuple[Paddle, ...] = ()

    def __post_init__(self) -> None:
        """Refuse a field that would give nonsense dynamics or a raw error later, naming it.

        Elasticities must lie in [0, 1]: an impact never speeds the ball up, which keeps the flight
        bounded and the per-step impact budget of :func:`advance` valid.
        """
        if not isinstance(self.size, numbers.Integral) or isinstance(self.size, bool) or self.size < 1:
            raise ValueError(f"Scene: size must be an int >= 1 (pixels); got {self.size!r}")
        _check_number("dt", self.dt, minimum=0.0, strict=True)
        _check_number("radius", self.radius, minimum=0.0, strict=True)
        _check_pair("gravity", self.gravity)
        lo, hi = _check_pair("speed_range", self.speed_range)
        if not 0.0 <= lo <= hi:
            raise ValueError(f"Scene: speed_range must be (low, high) with 0 <= low <= high; got {self.speed_range!r}")
        _check_pair("init_mean", self.init_mean)
        _check_number("init_std", self.init_std, minimum=0.0)
        lo, hi = _check_pair("init_clip", self.init_clip)
        if lo > hi:
            raise ValueError(f"Scene: init_clip must be (low, high) with low <= high; got {self.init_clip!r}")
        _check_number("ball_elasticity", self.ball_elasticity, minimum=0.0, maximum=1.0)
        for name, kind in (("walls", Wall), ("paddles", Paddle)):
            items = getattr(self, name)
            if not isinstance(items, (tuple, list)) or not all(isinstance(w, kind) for w in items):
                raise ValueError(f"Scene: {name} must be a tuple of {kind.__name__}; got {items!r}")
            object.__setattr__(self, name, tuple(items))
        for i, wall in enumerate(self.walls):
            _check_pair(f"walls[{i}].a", wall.a)
            _check_pair(f"walls[{i}].b", wall.b)
            _check_number(f"walls[{i}].radius", wall.radius, minimum=0.0)
            _check_number(f"walls[{i}].elasticity", wall.elasticity, minimum=0.0, maximum=1.0)
        for i, paddle in enumerate(self.paddles):
            for attr in ("x", "y0"):
                _check_number(f"paddles[{i}].{attr}", getattr(paddle, attr))
            for attr in ("half_length", "radius", "speed"):
                _check_number(f"paddles[{i}].{attr}", getattr(paddle, attr), minimum=0.0)
            _check_number(f"paddles[{i}].elasticity", paddle.elasticity, minimum=0.0, maximum=1.0)


def _check_number(
    name: str, value: object, minimum: float | None = None, maximum: float | None = None, strict: bool = False
) -> float:
    """``value`` as a float if it is a finite real number in the range, else a ValueError naming ``name``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if strict else value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        bounds = []
        if minimum is not None:
            bounds.append(f"{'>' if strict else '>='} {minimum:g}")
        if maximum is not None:
            bounds.append(f"<= {maximum:g}")
        expected = "a finite number" + (" " + " and ".join(bounds) if bounds else "")
        raise ValueError(f"Scene: {name} must be {expected}; got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _check_pair(name: str, value: object) -> tuple[float, float]:
    """``value`` as two finite floats, else a ValueError naming ``name``."""
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in value
    )):
        raise ValueError(f"Scene: {name} must be a pair of finite numbers; got {value!r}")
    return float(value[0]), float(value[1])


def _box_walls(size: int, inset: float) -> tuple[Wall, ...]:
    lo, hi = inset, size - inset
    corners = [(lo, lo), (hi, lo), (hi, hi), (lo, hi)]
    return tuple(Wall(corners[i], corners[(i + 1) % 4]) for i in range(4))


def _closed_polygon(vertices: list[tuple[float, float]]) -> tuple[Wall, ...]:
    return tuple(Wall(vertices[i], vertices[(i + 1) % len(vertices)]) for i in range(len(vertices)))


# The four KVAE datasets (models.md §3.1): walls inset by 2 px, ball of radius 3, dt = 0.2.
SCENES: dict[str, Scene] = {
    "box": Scene(walls=_box_walls(32, 2.0)),
    "box_gravity": Scene(gravity=(0.0, -5.0), speed_range=(5.0, 10.0), init_std=8.0, walls=_box_walls(32, 2.0)),
    "polygon": Scene(
        init_std=2.5,
        walls=_closed_polygon([(3.0, 1.0), (1.0, 15.0), (8.0, 30.0), (25.0, 30.0), (30.0, 8.0), (15.0, 1.0)]),
    ),
    "pong": Scene(
        speed_range=(10.0, 10.0),
        init_std=3.0,
        ball_elasticity=0.9,
        walls=(Wall((0.0, 1.0), (32.0, 1.0), 0.0, 0.99), Wall((0.0, 32.0), (32.0, 32.0), 0.0, 0.99)),
        paddles=(Paddle(x=0.0), Paddle(x=30.0)),
    ),
}


@dataclass
class BallState:
    """The mutable state of one simulation: ball centre, velocity and paddle heights."""

    x: float
    y: float
    vx: float
    vy: float
    paddle_y: list[float] = field(default_factory=list)

    def as_array(self) -> np.ndarray:
        """``[x, y, vx, vy]`` as float64, world coordinates."""
        return np.array([self.x, self.y, self.vx, self.vy], dtype=np.float64)


def _entry_time(a: float, b: float, c: float) -> float | None:
    """First ``t ≥ 0`` at which ``f(t) = c + b t + a t²`` (with ``c ≥ 0``) crosses down through 0.

    A parabola starting at or above 0 crosses down at most once in forward time: at the smaller
    root when it opens upward (``a > 0``), at the larger one when it opens downward.
    """
    if a == 0.0:
        return c / -b if b < 0.0 else None
    disc = b * b - 4.0 * a * c
    if disc < 0.0:
        return None
    q = -0.5 * (b + math.copysign(math.sqrt(disc), b))  # the cancellation-free pair of roots
    roots = sorted((q / a, c / q) if q != 0.0 else (0.0, 0.0))
    t = roots[0] if a > 0.0 else roots[1]
    return t if t >= 0.0 else None


def _time_of_impact(
    p: tuple[float, float], v: tuple[float, float], g: tuple[float, float], duration: float, wall: Wall, reach: float
) -> tuple[float, float, float] | None:
    """Earliest time ``t ∈ [0, duration]`` at which the centre ``p + v t + ½ g t²`` comes within
    ``reach`` of ``wall`` while approaching it, with the contact normal ``n`` (wall → centre).

    The capsule is a slab around the segment's interior plus two end discs. The slab gives the
    quadratic ``s(t) = reach`` in the signed distance ``s``, solved exactly; a disc gives a quartic,
    replaced by the chord from ``p(0)`` to ``p(duration)``: exact without gravity, within
    ``|g| duration² / 8`` of the flight otherwise (0.025 px in box_gravity, whose closed convex
    walls are only ever met on their faces). A centre that starts inside a capsule and moves inward
    (a paddle can step onto the ball) hits at ``t = 0``.
    """
    (px, py), (vx, vy), (gx, gy) = p, v, g
    (ax, ay), (bx, by) = wall.a, wall.b
    ex, ey = bx - ax, by - ay
    length = math.hypot(ex, ey)
    best: tuple[float, float, float] | None = None
    if length > 0.0:
        ex, ey = ex / length, ey / length
        nx, ny = -ey, ex
        side = (px - ax) * nx + (py - ay) * ny
        if side < 0.0:
            nx, ny, side = -nx, -ny, -side
        t = _entry_time(0.5 * (gx * nx + gy * ny), vx * nx + vy * ny, max(side - reach, 0.0))
        if t is not None and t <= duration:
            along = (px + (vx + 0.5 * gx * t) * t - ax) * ex + (py + (vy + 0.5 * gy * t) * t - ay) * ey
            if 0.0 <= along <= length:
                best = (t, nx, ny)
    # Chord of the flight over the whole interval, parametrised by the fraction u ∈ [0, 1].
    dx, dy = (vx + 0.5 * gx * duration) * duration, (vy + 0.5 * gy * duration) * duration
    dd = dx * dx + dy * dy
    for cx, cy in (wall.a, wall.b):
        fx, fy = px - cx, py - cy
        fd = fx * dx + fy * dy
        if fd >= 0.0:
            continue
        c = fx * fx + fy * fy - reach * reach
        if c <= 0.0:
            u = 0.0
        else:
            disc = fd * fd - dd * c
            if disc < 0.0:
                continue
            u = (-fd - math.sqrt(disc)) / dd
        if u <= 1.0 and (best is None or u * duration < best[0]):
            hx, hy = fx + u * dx, fy + u * dy
            norm = math.hypot(hx, hy)
            if norm > 0.0:
                best = (u * duration, hx / norm, hy / norm)
    return best


def _bounce_cap(state: BallState, scene: Scene) -> int:
    """The most impacts one step may take: ``_MAX_BOUNCES`` plus one per ball radius of the path.

    Impacts never speed the ball up (elasticities ≤ 1), so the step's path is at most
    ``L = |v| dt + ½ |g| dt²``. Between walls at least three radii apart the centre flies at least
    one radius between impacts, apart from the few quick ones in a corner, so ``L / radius`` impacts
    plus the slack cover the exact flight at any speed (in the KVAE box, 22 px of free travel per
    axis, a radius-3 ball hits at most √2 walls per 22 px of path, against 7 allowed). Only a disc
    wedged in a narrower gap or settling under gravity reaches the cap. The work per step grows
    with the speed, as the impacts do.
    """
    dt = scene.dt
    path = math.hypot(state.vx, state.vy) * dt + 0.5 * math.hypot(*scene.gravity) * dt * dt
    return _MAX_BOUNCES + math.ceil(path / scene.radius)


def _drift(state: BallState, scene: Scene, walls: tuple[Wall, ...]) -> None:
    """Fly the ball for ``scene.dt`` seconds, ``p(t) = p + v t + ½ g t²``, reflecting at every impact."""
    g = scene.gravity
    remaining = scene.dt
    for _ in range(_bounce_cap(state, scene)):
        p, v = (state.x, state.y), (state.vx, state.vy)
        hit: tuple[float, float, float] | None = None
        hit_wall: Wall | None = None
        for wall in walls:
            toi = _time_of_impact(p, v, g, remaining, wall, scene.radius + wall.radius)
            if toi is not None and (hit is None or toi[0] < hit[0]):
                hit, hit_wall = toi, wall
        t = remaining if hit is None else hit[0]
        state.x += (v[0] + 0.5 * g[0] * t) * t
        state.y += (v[1] + 0.5 * g[1] * t) * t
        state.vx += g[0] * t
        state.vy += g[1] * t
        if hit is None or hit_wall is None:
            return
        _, nx, ny = hit
        vn = state.vx * nx + state.vy * ny
        if vn < 0.0:
            restitution = 1.0 + scene.ball_elasticity * hit_wall.elasticity
            state.vx -= restitution * vn * nx
            state.vy -= restitution * vn * ny
        remaining -= t


def move_paddles(state: BallState, scene: Scene) -> None:
    """Move every paddle ``speed`` pixels toward the ball's height, keeping it inside the frame."""
    for i, paddle in enumerate(scene.paddles):
        y = state.paddle_y[i]
        if state.y < y - paddle.speed / 2:
            y -= paddle.speed
        elif state.y > y + paddle.speed / 2:
            y += paddle.speed
        state.paddle_y[i] = min(max(y, paddle.half_length), scene.size - paddle.half_length)


def advance(state: BallState, scene: Scene) -> None:
    """One frame of dynamics, in place: the paddles move, then the ball flies for ``scene.dt``."""
    if scene.paddles:
        move_paddles(state, scene)
        walls = scene.walls + tuple(p.wall(y) for p, y in zip(scene.paddles, state.paddle_y))
    else:
        walls = scene.walls
    _drift(state, scene, walls)


def distance_to_wall(x: float, y: float, wall: Wall) -> float:
    """Euclidean distance from the point ``(x, y)`` to the wall's centre segment."""
    (ax, ay), (bx, by) = wall.a, wall.b
    ex, ey = bx - ax, by - ay
    l2 = ex * ex + ey * ey
    u = 0.0 if l2 == 0.0 else min(1.0, max(0.0, ((x - ax) * ex + (y - ay) * ey) / l2))
    return math.hypot(x - ax - u * ex, y - ay - u * ey)


class Rasterizer:
    """Draws a scene into ``(size, size)`` boolean frames, pixel row 0 at the top.

    Pixel ``(i, j)`` covers world ``x ∈ [j, j+1)``, ``y ∈ (size−i−1, size−i]`` and has its centre at
    ``(j + ½, size − i − ½)``. The ball lights the pixels whose centre lies within ``radius`` of the
    ball's centre (≈ π r² ≈ 28 px; pymunk's debug renderer also drew a 1-px "rotation" line, an
    artefact left out). A wall lights the pixels its centre line passes through (a 1-px line; the
    box gives the original's 112 border pixels on rows and columns 2 and 30) plus those whose
    centre lies within its radius (the 2-px-wide paddles).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        centres = np.arange(size, dtype=np.float64) + 0.5
        self._cx = centres[None, :]
        self._cy = (size - centres)[:, None]

    def wall(self, wall: Wall) -> np.ndarray:
        """Boolean ``(size, size)`` image of one wall."""
        img = np.zeros((self.size, self.size), dtype=bool)
        (ax, ay), (bx, by) = wall.a, wall.b
        n = int(math.ceil(4 * math.hypot(bx - ax, by - ay))) + 1
        s = np.linspace(0.0, 1.0, n)
        xs, ys = ax + s * (bx - ax), ay + s * (by - ay)
        cols = np.clip(np.floor(xs).astype(int), 0, self.size - 1)
        rows = np.clip(np.floor(self.size - ys).astype(int), 0, self.size - 1)
        img[rows, cols] = True
        if wall.radius > 0.0:
            ex, ey = bx - ax, by - ay
            l2 = ex * ex + ey * ey
            u = np.clip(((self._cx - ax) * ex + (self._cy - ay) * ey) / l2, 0.0, 1.0) if l2 > 0 else 0.0
            img |= np.hypot(self._cx - ax - u * ex, self._cy - ay - u * ey) <= wall.radius
        return img

    def ball(self, x: float, y: float, radius: float) -> np.ndarray:
        """Boolean ``(size, size)`` image of a disc centred at world ``(x, y)``."""
        return (self._cx - x) ** 2 + (self._cy - y) ** 2 <= radius * radius


def rasterize(size: int, walls: tuple[Wall, ...]) -> np.ndarray:
    """Boolean ``(size, size)`` image of several walls (the static background of a scene)."""
    raster = Rasterizer(size)
    img = np.zeros((size, size), dtype=bool)
    for wall in walls:
        img |= raster.wall(wall)
    return img

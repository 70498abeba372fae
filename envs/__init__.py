"""Gymnasium environments that generate training videos (importable as ``seqlvm.envs``).

Importing this package registers:

- ``seqlvm/BouncingBall-v0``: a ball in a square box (KVAE ``box``);
- ``seqlvm/BouncingBallGravity-v0``: the box with gravity (KVAE ``box_gravity``);
- ``seqlvm/BouncingBallPolygon-v0``: a ball in a hexagon (KVAE ``polygon``);
- ``seqlvm/Pong-v0``: a ball between a floor, a roof and two paddles (KVAE ``pong``);
- ``seqlvm/ImageNavigation-v0``: an agent seeing 8×8 crops of a 32×32 image (GTM-SM).

``gymnasium.make("seqlvm.envs:seqlvm/BouncingBall-v0")`` imports and registers in one go.
"""

from gymnasium.envs.registration import register, registry

from seqlvm.envs.bouncing_ball import BouncingBallEnv
from seqlvm.envs.image_navigation import ImageNavigationEnv, load_image, procedural_image
from seqlvm.envs.physics import SCENES, Paddle, Scene, Wall
from seqlvm.envs.policies import Policy, RandomPolicy, RandomWalkPolicy, ZeroPolicy
from seqlvm.envs.rollout import POLICIES, Episode, action_dim, encode_action, episode_seeds, make_policy, roll_episodes, rollout

__all__ = [
    "ENV_IDS", "BouncingBallEnv", "ImageNavigationEnv", "Scene", "Wall", "Paddle", "SCENES",
    "Policy", "ZeroPolicy", "RandomPolicy", "RandomWalkPolicy", "POLICIES", "make_policy", "Episode", "rollout",
    "roll_episodes", "episode_seeds", "action_dim", "encode_action", "procedural_image", "load_image",
]

_BOUNCING = "seqlvm.envs.bouncing_ball:BouncingBallEnv"
_SPECS: dict[str, tuple[str, dict]] = {
    "seqlvm/BouncingBall-v0": (_BOUNCING, {"scene": "box"}),
    "seqlvm/BouncingBallGravity-v0": (_BOUNCING, {"scene": "box_gravity"}),
    "seqlvm/BouncingBallPolygon-v0": (_BOUNCING, {"scene": "polygon"}),
    "seqlvm/Pong-v0": (_BOUNCING, {"scene": "pong"}),
    "seqlvm/ImageNavigation-v0": ("seqlvm.envs.image_navigation:ImageNavigationEnv", {}),
}
ENV_IDS: tuple[str, ...] = tuple(_SPECS)

for _id, (_entry, _kwargs) in _SPECS.items():
    if _id not in registry:  # importlib.reload must not trigger gymnasium's override warning
        register(id=_id, entry_point=_entry, kwargs=_kwargs)

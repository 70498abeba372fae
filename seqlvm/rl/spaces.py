"""Moving observations and actions between a gymnasium env's spaces and a model's tensors.

Observations: an env's video frames are uint8 ``(..., H, W, C)``, a model's are float
``(..., C, H, W)`` in [0, 1] (``uint8 / 255``, as ``seqlvm.data`` feeds them in training); vector
observations are float ``(..., D)`` on both sides. Actions: the encoding of ``seqlvm.envs.rollout``
(one-hot for ``Discrete``, the flat vector for ``Box``), which the models were trained on.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from seqlvm.envs.rollout import action_dim
from seqlvm.viz import to_uint8_frames

__all__ = ["check_observation_space", "is_video", "to_model", "to_env", "decode_actions", "uniform_actions"]


def check_observation_space(space: spaces.Space) -> spaces.Box:
    """The env's observation space, which must be a ``Box`` with finite bounds."""
    if not isinstance(space, spaces.Box) or not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
        raise ValueError(f"observation_space: expected a Box with finite bounds; got {space}")
    return space


def is_video(space: spaces.Box) -> bool:
    """Whether observations are uint8 frames ``(H, W, C)`` with C in {1, 3}."""
    return space.dtype == np.uint8 and len(space.shape) == 3 and space.shape[-1] in (1, 3)


def to_model(space: spaces.Box, observations: np.ndarray, dtype: torch.dtype = torch.float32) -> Tensor:
    """Env observations ``(..., *space.shape)`` -> model inputs: frames ``(..., C, H, W)`` / 255, else ``(..., D)``."""
    x = torch.as_tensor(np.asarray(observations))
    if is_video(space):
        return x.movedim(-1, -3).to(dtype) / 255.0
    return x.to(dtype)


def to_env(space: spaces.Box, x: Tensor) -> np.ndarray:
    """Model observations -> env observations in ``space``: frames ``(..., C, H, W)`` in [0, 1] ->
    uint8 ``(..., H, W, C)`` (clipped, rounded); vectors clipped to the bounds, in the space's dtype."""
    if is_video(space):
        return to_uint8_frames(x, channel_first=True)
    return np.clip(x.detach().cpu().numpy(), space.low, space.high).astype(space.dtype)


def decode_actions(space: spaces.Space, encoded: np.ndarray) -> np.ndarray:
    """Encoded actions ``(..., A)`` -> env actions: the index of the one-hot entry for ``Discrete``
    (``(...)`` int64), the vector clipped to the bounds for ``Box`` (``(..., *shape)``)."""
    encoded = np.asarray(encoded)
    if isinstance(space, spaces.Discrete):
        return encoded.argmax(-1).astype(np.int64) + int(space.start)
    return np.clip(encoded, space.low.reshape(-1), space.high.reshape(-1)).astype(space.dtype).reshape(*encoded.shape[:-1], *space.shape)


def uniform_actions(space: spaces.Space, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Encoded actions ``(*shape, A)`` drawn uniformly from the space (float32): uniform one-hots for
    ``Discrete``, uniform over the box for ``Box``."""
    if isinstance(space, spaces.Discrete):
        return np.eye(int(space.n), dtype=np.float32)[rng.integers(0, int(space.n), size=shape)]
    if isinstance(space, spaces.Box):
        low, high = space.low.reshape(-1), space.high.reshape(-1)
        return rng.uniform(low, high, size=(*shape, action_dim(space))).astype(np.float32)
    raise TypeError(f"action_space: only Discrete and Box are supported, got {type(space).__name__}")

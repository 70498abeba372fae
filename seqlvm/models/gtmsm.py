"""GTM-SM: the generative temporal model with spatial memory (Fraccaro et al., ICML 2018; models.md §5).

Two sets of latents. The agent state ``s_t`` (``state_dim``, 2 for image navigation) is driven by
the actions alone; the visual code ``z_t`` (``z_dim``) of every frame comes from a VAE:

    s_0 = 0,   s_t = s_{t-1} + M u_t ⊙ g(s_{t-1} + M u_t) + eps_t,   eps_t ~ N(0, transition_std² I)
    q(z_t | x_t) = N(mu_t, diag sigma_t²),   p(x_t | z_t) = N(decoder(z_t), pixel_variance · I)

``M`` (state_dim × control_dim, no bias) turns a one-hot action into a learned displacement, and
the wall gate ``g`` (a small MLP with a sigmoid output; ``g = 1`` when ``walls=False``) learns to
stop moves that would cross a wall. ``u_t`` is the action that led into ``x_t`` (``u[:, 0]`` is
unused), as the data files store it.

The first ``memory_steps`` = tau frames are memorised: a DND (``seqlvm.memory``) stores the keys
``s_t`` and the values ``(mu_t, log sigma_t)`` of ``q(z_t | x_t)`` (``value_type="posterior_params"``)
or a draw ``z_t ~ q`` (``value_type="sample"``, components of std ``value_std``). Every later frame
has the memory prior, a mixture over the K nearest stored states::

    p(z_t | s_t, m) = sum_k w_k N(z_t; mu^(k), diag sigma^(k)²),   w_k ∝ 1 / (||s_t − s^(k)||² + delta)

The objective (models.md §5.2) is, per sequence, over the observed steps t > tau,

    ELBO = sum_t  E_q[log p(x_t | z_t)] − KL(q(z_t | x_t) || p(z_t | s_t, m)),
    KL  ≈ −H[q] − (1/S) sum_s log p(z^s | s_t, m),   z^s ~ q(z_t | x_t)   (S = ``kl_samples``)

with the entropy analytic and the mixture's log-density by a log-sum-exp. The memorised frames get
no reconstruction term: their encoder learns through the memory prior, whose gradients reach the
stored values and, through the recomputed distances, the keys and so ``M`` and the gate. The state
path is the transition prior itself (no KL for s); the states are only identifiable up to an affine
map (compare them with true positions by a Procrustes fit, never for equality).

Shapes: frames ``x (B, T, C, H, W)`` in [0, 1], actions ``u (B, T, control_dim)``, step mask
``(B, T)`` (True = observed; a frame holding any NaN is missing too; a missing memorised frame is
not written, a missing predicted frame adds nothing).

Posteriors (:meth:`GTMSM.filter`, :meth:`GTMSM.smooth`): the inference network is per frame,
q(z_t | x_t), and the states follow from the actions alone, so on every observed step filtering and
smoothing give the same posterior, q(z_t | x_t) and the noise-free s_t. They differ only on missing
frames, which have no encoder posterior: there they return the moments of the memory prior at s_t
built from the observed frames before t (filter) or from all of them (smooth), as :meth:`GTMSM.impute`
does for frames.

Predictive moments of frames (:meth:`GTMSM.forecast`, :meth:`GTMSM.impute`): the mean sum_k w_k
decoder(mu^(k)) takes each component's code at its mean, so the predictive distribution it is the
mean of is the mixture ``sum_k w_k N(x; decoder(mu^(k)), pixel_variance · I)``; its per-pixel std is
``sqrt(pixel_variance + sum_k w_k (decoder(mu^(k)) − mean)²)`` (see :meth:`GTMSM.forecast`).

Optional curriculum helper (models.md §5.5, off by default): ``grid_penalty > 0`` adds
``grid_penalty · [ (m_a·m_b)² + sum_i (||m_i|| − grid_step)² ]`` to the loss, where ``m_i`` are the
displacements of the four moves of ``grid_moves`` = (right, left, up, down) and a, b those of
right and up: it makes the learned moves orthogonal and of a given length. It uses privileged
knowledge of the grid (which actions are opposite moves), which the model proper does not assume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlvm.memory.dnd import DNDLookup, dnd_lookup
from seqlvm.models.base import (
    ELBO, Forecast, Imputation, RolloutStep, SequenceModel, check_num_particles, check_step_controls,
)

__all__ = ["GTMSM", "GTMSMConfig", "GTMSMPosterior", "GTMSMSamples"]

VALUE_TYPES = ("posterior_params", "sample")
LOG_2PI = math.log(2.0 * math.pi)


def _positive_int(owner: str, name: str, value: object, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}; got {value!r}")
    return value


@dataclass
class GTMSMConfig:
    """Sizes and options of a :class:`GTMSM`; the defaults are the re-implementation's (models.md §5).

    The recipe that trains on image navigation departs from them (a 3-D state, a wider kernel
    while the map forms, a wider and sharper VAE): ``configs/gtmsm_nav_map.toml`` then
    ``configs/gtmsm_navigation.toml``; ``docs/gtmsm.md`` gives the measurements behind each change.

    obs_shape:       (C, H, W) of the frames; H and W divisible by 2 ** len(channels). ``None``
                     until training fills it in from the data file.
    control_dim:     size of the one-hot action u_t (5 for image navigation).
    state_dim:       size of the agent state s_t (2).
    z_dim:           size of the visual code z_t (16).
    memory_steps:    tau, the number of memorised steps at the start of each training sequence (256).
    num_neighbours:  K, mixture components of the memory prior (5).
    delta:           the DND kernel's delta (1e-4).
    walls:           learn the wall gate g (False: the transition is exactly linear).
    gate_hidden:     hidden sizes of the gate MLP (10, 5), ReLU between, sigmoid output.
    value_type:      ``"posterior_params"``: memory values are (mu, log sigma) of q(z|x);
                     ``"sample"``: a draw z ~ q, each component N(z^(k), value_std² I).
    value_std:       component std for ``value_type="sample"``.
    channels:        feature maps of the encoder's stride-2, kernel-2 convolutions (64, 16); the
                     decoder mirrors them. 8×8 frames end as 16 × 2 × 2 = 64 features.
    pixel_variance:  variance of the Gaussian decoder (0.5 makes log p(x|z) the re-implementation's
                     negative sum of squared errors, up to a constant).
    transition_std:  std of eps_t (1e-3).
    kl_samples:      S, samples of the Monte-Carlo mixture KL per frame.
    init_move:       std of the initial entries of M.
    grid_penalty:    weight of the curriculum's displacement penalty (0: off); see the module docstring.
    grid_moves:      action indices of (right, left, up, down) for the penalty.
    grid_step:       target length of each move for the penalty.
    """

    obs_shape: tuple[int, int, int] | None = (3, 8, 8)
    control_dim: int = 5
    state_dim: int = 2
    z_dim: int = 16
    memory_steps: int = 256
    num_neighbours: int = 5
    delta: float = 1e-4
    walls: bool = False
    gate_hidden: tuple[int, ...] = (10, 5)
    value_type: str = "posterior_params"
    value_std: float = 0.1
    channels: tuple[int, ...] = (64, 16)
    pixel_variance: float = 0.5
    transition_std: float = 1e-3
    kl_samples: int = 8
    init_move: float = 0.1
    grid_penalty: float = 0.0
    grid_moves: tuple[int, int, int, int] = (4, 3, 1, 2)
    grid_step: float = 1.5 / 8

    def __post_init__(self) -> None:
        owner = "GTMSMConfig"
        self.channels = tuple(self.channels)
        self.gate_hidden = tuple(self.gate_hidden)
        self.grid_moves = tuple(self.grid_moves)  # type: ignore[assignment]
        if not self.channels:
            raise ValueError(f"{owner}: channels must name at least one convolution; got ()")
        for i, c in enumerate(self.channels):
            _positive_int(owner, f"channels[{i}]", c)
        for i, h in enumerate(self.gate_hidden):
            _positive_int(owner, f"gate_hidden[{i}]", h)
        if self.obs_shape is not None:
            shape = tuple(self.obs_shape) if isinstance(self.obs_shape, (tuple, list)) else None
            side = 2 ** len(self.channels)
            if (
                shape is None
                or len(shape) != 3
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)
                or shape[1] % side
                or shape[2] % side
            ):
                raise ValueError(
                    f"{owner}: obs_shape must be (C, H, W) positive ints with H and W divisible by "
                    f"2 ** len(channels) = {side}; got {self.obs_shape!r}"
                )
            self.obs_shape = shape  # type: ignore[assignment]
        for name in ("control_dim", "state_dim", "z_dim", "memory_steps", "num_neighbours", "kl_samples"):
            _positive_int(owner, name, getattr(self, name))
        for name in ("delta", "value_std", "pixel_variance", "transition_std", "init_move", "grid_step"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{owner}: {name} must be a finite number > 0; got {v!r}")
        if not isinstance(self.grid_penalty, (int, float)) or not self.grid_penalty >= 0:
            raise ValueError(f"{owner}: grid_penalty must be a number >= 0; got {self.grid_penalty!r}")
        if not isinstance(self.walls, bool):
            raise ValueError(f"{owner}: walls must be a bool; got {self.walls!r}")
        if self.value_type not in VALUE_TYPES:
            raise ValueError(f"{owner}: value_type must be one of {VALUE_TYPES}; got {self.value_type!r}")
        if len(self.grid_moves) != 4 or not all(
            isinstance(a, int) and 0 <= a < self.control_dim for a in self.grid_moves
        ):
            raise ValueError(
                f"{owner}: grid_moves must be 4 action indices in [0, {self.control_dim}); got {self.grid_moves!r}"
            )


class GTMSMSamples(NamedTuple):
    """Draws from :meth:`GTMSM.sample`: states s (B, T, state_dim), codes z (B, T, z_dim) and
    observations (B, T, C, H, W), the decoder means of the codes."""

    states: Tensor
    codes: Tensor
    observations: Tensor


class GTMSMPosterior(NamedTuple):
    """The posterior over the latents of every step (:meth:`GTMSM.filter` / :meth:`GTMSM.smooth`).

    mean:     (B, T, z_dim) mean of z_t: mu_t of q(z_t | x_t) on observed steps; on missing steps
              the mean sum_k w_k mu^(k) of the memory prior p(z_t | s_t, m) (0 when the memory
              is empty).
    std:      (B, T, z_dim) its standard deviation: sigma_t of q(z_t | x_t) on observed steps; on
              missing steps that of the memory prior, sqrt(sum_k w_k (v_k + (mu^(k) − mean)²)),
              with v_k = sigma^(k)² (``"posterior_params"``) or sigma^(k)² + value_std²
              (``"sample"``: the stored draw z^(k) ~ q averaged out); 1 when the memory is empty
              (the VAE's reference prior N(0, I), as :meth:`GTMSM.sample` uses).
    states:   (B, T, state_dim) the noise-free agent states s_t of the actions (:meth:`GTMSM.infer_states`);
              the state posterior is the transition prior p*(s_t) (models.md §5.1), centred on them.
    observed: (B, T) bool, True where ``mean`` and ``std`` are the encoder's q(z_t | x_t), False
              where the frame was missing and they are the memory prior's moments.
    """

    mean: Tensor
    std: Tensor
    states: Tensor
    observed: Tensor


class _Memory(NamedTuple):
    """One memory per sequence: keys (B, N, state_dim), values (B, N, v), occupied (B, N) bool."""

    keys: Tensor
    values: Tensor
    occupied: Tensor


class _Carry(NamedTuple):
    """Rollout state: the memories of the B contexts, the states (P·B, state_dim) of the particles
    and, once a mean-path step has needed them, the memories' decoded frames (B, N, C, H, W)."""

    memory: _Memory
    states: Tensor
    frames: Tensor | None = None


class _Encoder(nn.Module):
    """Frames (N, C, H, W) in [0, 1] -> (mu, log sigma) of q(z|x), each (N, z_dim)."""

    def __init__(self, obs_shape: tuple[int, int, int], channels: tuple[int, ...], z_dim: int) -> None:
        super().__init__()
        c, h, w = obs_shape
        layers: list[nn.Module] = []
        for out in channels:
            layers += [nn.Conv2d(c, out, 2, stride=2), nn.LeakyReLU(0.01)]
            c = out
        self.net = nn.Sequential(*layers, nn.Flatten())
        features = c * (h >> len(channels)) * (w >> len(channels))
        self.mean = nn.Linear(features, z_dim)
        self.log_std = nn.Linear(features, z_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.net(2.0 * x - 1.0)
        return self.mean(h), self.log_std(h)


class _Decoder(nn.Module):
    """Codes (N, z_dim) -> frame means (N, C, H, W) in [0, 1]: the encoder's convolutions mirrored."""

    def __init__(self, obs_shape: tuple[int, int, int], channels: tuple[int, ...], z_dim: int) -> None:
        super().__init__()
        c, h, w = obs_shape
        n = len(channels)
        self.start = (channels[-1], h >> n, w >> n)
        self.inp = nn.Linear(z_dim, math.prod(self.start))
        layers: list[nn.Module] = []
        widths = list(reversed(channels))
        for i, width in enumerate(widths):
            out = widths[i + 1] if i + 1 < n else c
            layers.append(nn.ConvTranspose2d(width, out, 2, stride=2))
            if i + 1 < n:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        h = F.relu(self.inp(z)).view(-1, *self.start)
        return (torch.tanh(self.net(h)) + 1.0) / 2.0


class GTMSM(SequenceModel):
    """The GTM-SM of models.md §5 (see the module docstring for the model and its objective).

    Example::

        cfg = GTMSMConfig(obs_shape=(3, 8, 8), control_dim=5, memory_steps=256)
        model = GTMSM(cfg)
        out = model.elbo(x, u=u)              # x (B, 288, 3, 8, 8), u (B, 288, 5) one-hot
        fc = model.forecast(x[:, :256], 32, u_future=u_next, u=u[:, :256])
        post = model.smooth(x, u=u)           # GTMSMPosterior: q(z_t | x_t) moments and states s_t
        states = model.infer_states(u)        # (B, T, 2): the learned map of the walk (actions u)
    """

    config_class = GTMSMConfig

    def __init__(self, config: GTMSMConfig) -> None:
        super().__init__(config)
        c = config
        if c.obs_shape is None:
            raise ValueError("GTMSM: config.obs_shape is None; give (C, H, W) or train from a data file")
        self.encoder = _Encoder(c.obs_shape, c.channels, c.z_dim)
        self.decoder = _Decoder(c.obs_shape, c.channels, c.z_dim)
        self.moves = nn.Parameter(c.init_move * torch.randn(c.state_dim, c.control_dim))
        self.gate: nn.Sequential | None = None
        if c.walls:
            layers: list[nn.Module] = []
            width = c.state_dim
            for h in c.gate_hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            last = nn.Linear(width, 1)
            nn.init.constant_(last.bias, 3.0)  # start open (g ≈ 0.95): no wall is known yet
            self.gate = nn.Sequential(*layers, last, nn.Sigmoid())

    # ----------------------------------------------------------------------------------- checks

    def _check_frames(self, x: object, fn: str, name: str = "x") -> Tensor:
        shape = self.config.obs_shape
        if not isinstance(x, Tensor) or x.dim() != 5 or tuple(x.shape[2:]) != shape or 0 in x.shape[:2]:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"GTMSM.{fn}: {name} must have shape (B, T, {', '.join(map(str, shape))}) with B, T >= 1; got {got}"
            )
        if not x.is_floating_point():
            raise ValueError(f"GTMSM.{fn}: {name} must be floating point in [0, 1]; got {x.dtype}")
        p = self.moves
        return x.to(dtype=p.dtype, device=p.device)

    def _check_actions(self, u: object, B: int, T: int, fn: str, name: str = "u") -> Tensor:
        A = self.config.control_dim
        if u is None:
            raise ValueError(f"GTMSM.{fn}: {name} of shape ({B}, {T}, {A}) is required (the actions drive the state)")
        if not isinstance(u, Tensor) or tuple(u.shape) != (B, T, A):
            got = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
            raise ValueError(f"GTMSM.{fn}: {name} must have shape ({B}, {T}, {A}); got {got}")
        if not torch.isfinite(u).all():
            raise ValueError(f"GTMSM.{fn}: {name} must be finite")
        p = self.moves
        return u.to(dtype=p.dtype, device=p.device)

    def _check_mask(self, mask: object, B: int, T: int, fn: str) -> Tensor:
        device = self.moves.device
        if mask is None:
            return torch.ones(B, T, dtype=torch.bool, device=device)
        if not isinstance(mask, Tensor) or tuple(mask.shape) != (B, T):
            got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"GTMSM.{fn}: mask must have shape ({B}, {T}) (True = observed frame); got {got}")
        return mask.to(device=device, dtype=torch.bool)

    def _inputs(self, x: object, mask: object, u: object, fn: str) -> tuple[Tensor, Tensor, Tensor]:
        """Checked frames (missing ones zeroed), step mask (B, T) and actions. A frame is missing
        where the mask says so or where it holds any NaN (the library's convention)."""
        x = self._check_frames(x, fn)
        B, T = x.shape[:2]
        mask = self._check_mask(mask, B, T, fn) & ~torch.isnan(x).flatten(2).any(-1)
        # Missing frames may hold anything (NaN included); they must reach no output or gradient.
        x = torch.where(mask[:, :, None, None, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
        return x, mask, self._check_actions(u, B, T, fn)

    # ------------------------------------------------------------------------------ the pieces

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Frames (..., C, H, W) -> mean and log std of q(z|x), each (..., z_dim)."""
        lead = x.shape[:-3]
        mean, log_std = self.encoder(x.reshape(-1, *x.shape[-3:]))
        return mean.view(*lead, -1), log_std.view(*lead, -1)

    def decode(self, z: Tensor) -> Tensor:
        """Codes (..., z_dim) -> frame means (..., C, H, W) in [0, 1]."""
        return self.decoder(z.reshape(-1, z.shape[-1])).view(*z.shape[:-1], *self.config.obs_shape)

    def frame_log_likelihood(self, x: Tensor, mean: Tensor) -> Tensor:
        """log N(x; mean, pixel_variance · I) summed over each frame: (..., C, H, W) -> (...)."""
        var = self.config.pixel_variance
        n = math.prod(self.config.obs_shape)
        return -0.5 * ((x - mean).square().flatten(-3).sum(-1) / var + n * (LOG_2PI + math.log(var)))

    def transition(self, states: Tensor, u: Tensor) -> Tensor:
        """The mean of s_t given s_{t-1} (..., state_dim) and u_t (..., control_dim)."""
        move = u @ self.moves.T
        if self.gate is None:
            return states + move
        return states + move * self.gate(states + move)

    def _state_path(self, u: Tensor, noise: Tensor | None = None) -> Tensor:
        """States (B, T, state_dim) of the action path u (B, T, A) from s_0 = 0; ``noise`` (B, T, S)
        adds eps_t (its first row is unused)."""
        moves = u[:, 1:] @ self.moves.T
        eps = None if noise is None else noise[:, 1:] * self.config.transition_std
        if self.gate is None:  # linear: a cumulative sum
            steps = moves if eps is None else moves + eps
            return F.pad(steps.cumsum(1), (0, 0, 1, 0))
        s = moves.new_zeros(u.shape[0], self.config.state_dim)
        states = [s]
        # unbind, not indexing per step: see seqlvm.kalman.params.per_step
        noises = [None] * moves.shape[1] if eps is None else eps.unbind(1)
        for move, noise in zip(moves.unbind(1), noises):
            s = s + move * self.gate(s + move)
            if noise is not None:
                s = s + noise
            states.append(s)
        return torch.stack(states, 1)

    def infer_states(self, actions: Tensor) -> Tensor:
        """The learned states (B, T, state_dim) of an action sequence ``actions`` (B, T, control_dim)
        from s_0 = 0 (noise-free): the model's map of where the agent has been. As everywhere,
        ``actions[:, t]`` is the action that led into step t, so ``actions[:, 0]`` is unused."""
        if not isinstance(actions, Tensor) or actions.dim() != 3 or 0 in actions.shape[:2]:
            got = tuple(actions.shape) if isinstance(actions, Tensor) else type(actions).__name__
            raise ValueError(
                f"GTMSM.infer_states: actions must have shape (B, T, {self.config.control_dim}) with B, T >= 1; got {got}"
            )
        actions = self._check_actions(actions, actions.shape[0], actions.shape[1], "infer_states", "actions")
        return self._state_path(actions)

    def _values(self, mean: Tensor, log_std: Tensor, generator: torch.Generator | None, noise: bool = True) -> Tensor:
        """Memory values of frames with q(z|x) = N(mean, exp(log_std)²): (..., 2 z_dim) for
        ``"posterior_params"``, a reparameterised draw (..., z_dim) for ``"sample"`` (the mean
        without noise)."""
        if self.config.value_type == "posterior_params":
            return torch.cat([mean, log_std], -1)
        if not noise:
            return mean
        eps = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device, generator=generator)
        return mean + log_std.exp() * eps

    def _components(self, values: Tensor) -> tuple[Tensor, Tensor]:
        """Means and log stds (..., z_dim) of the mixture components stored as ``values``."""
        if self.config.value_type == "posterior_params":
            return values.chunk(2, -1)
        return values, torch.full_like(values, math.log(self.config.value_std))

    def _lookup(self, memory: _Memory, query: Tensor) -> DNDLookup:
        k = min(self.config.num_neighbours, memory.keys.shape[1])
        return dnd_lookup(query, memory.keys, memory.values, k, occupied=memory.occupied, delta=self.config.delta)

    def _mixture_log_prob(self, z: Tensor, look: DNDLookup) -> Tensor:
        """log p(z | s, m) of codes z (S, B, Q, z_dim) under the looked-up mixtures -> (S, B, Q);
        where the memory is empty (nothing memorised was observed), the reference prior N(0, I)'s,
        as in :meth:`_draw`."""
        mean, log_std = self._components(look.values)  # (B, Q, K, z)
        diff = (z.unsqueeze(-2) - mean) * torch.exp(-log_std)
        comp = -0.5 * (diff.square().sum(-1) + self.config.z_dim * LOG_2PI) - log_std.sum(-1)
        # Padding (fewer stored entries than K) has log-weight -inf and drops out of the sum. An
        # empty memory has nothing but padding: its -inf row is replaced before the logsumexp,
        # whose gradient would otherwise be NaN even where the prior is chosen.
        empty = look.weights.sum(-1) == 0  # (B, Q)
        log_weights = torch.where(empty[..., None], torch.zeros_like(look.log_weights), look.log_weights)
        prior = -0.5 * (z.square().sum(-1) + self.config.z_dim * LOG_2PI)
        return torch.where(empty, prior, torch.logsumexp(log_weights + comp, -1))

    def _draw(self, look: DNDLookup, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """One code per query from the mixture: k ~ Categorical(w), z ~ component k.

        Returns z (B, Q, z_dim) and its log-density log w_k + log N(z; component k). A query whose
        memory is empty gets a code from the VAE's reference prior N(0, I) instead."""
        B, Q, K = look.weights.shape
        empty = look.weights.sum(-1, keepdim=True) == 0  # (B, Q, 1)
        probs = torch.where(empty, 1.0, look.weights)
        pick = torch.multinomial(probs.reshape(B * Q, K), 1, generator=generator).view(B, Q, 1)
        mean, log_std = self._components(look.values)
        mean = mean.gather(2, pick[..., None].expand(B, Q, 1, mean.shape[-1])).squeeze(2)
        log_std = log_std.gather(2, pick[..., None].expand(B, Q, 1, log_std.shape[-1])).squeeze(2)
        mean, log_std = (torch.where(empty, 0.0, t) for t in (mean, log_std))
        eps = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device, generator=generator)
        log_w = torch.where(empty, 0.0, look.log_weights.gather(2, pick)).squeeze(2)
        log_comp = -0.5 * (eps.square().sum(-1) + self.config.z_dim * LOG_2PI) - log_std.sum(-1)
        return mean + log_std.exp() * eps, log_w + log_comp

    def _memory_frames(self, values: Tensor) -> Tensor:
        """decoder(mu) of memory values (B, N, v), (B, N, C, H, W): the frames a mixture mean averages."""
        return self.decode(self._components(values)[0])

    def _neighbour_frames(self, look: DNDLookup, memory_frames: Tensor) -> Tensor:
        """decoder(mu^(k)) of every looked-up neighbour, (B, Q, K, C, H, W), gathered from
        ``memory_frames`` (:meth:`_memory_frames` of the looked-up memory's values), so N decodes
        serve all Q·K neighbours. Padding gets slot 0's frame; its weight is 0."""
        B, Q, K = look.indices.shape
        slots = look.indices.clamp_min(0).view(B, Q * K)
        decoded = memory_frames[torch.arange(B, device=slots.device)[:, None], slots]
        return decoded.view(B, Q, K, *memory_frames.shape[2:])

    def _mixture_mean(self, look: DNDLookup, memory_frames: Tensor) -> Tensor:
        """sum_k w_k decoder(mu^(k)): the predicted frame (B, Q, C, H, W) averaged over which memory
        the query falls on, each component's code at its mean (decoder(0), the reference prior's
        mean code, where the memory is empty)."""
        return self._mixture_moments(look, memory_frames, with_std=False)[0]

    def _mixture_moments(
        self, look: DNDLookup, memory_frames: Tensor, with_std: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """Mean and per-pixel std (B, Q, C, H, W) of p(x | s, m) = sum_k w_k N(x; d_k, pixel_variance · I)
        with d_k = decoder(mu^(k)): mean = sum_k w_k d_k, var = pixel_variance + sum_k w_k (d_k − mean)².
        Where the memory is empty: decoder(0) and sqrt(pixel_variance). The std is None unless
        ``with_std`` (the planner's mean path needs only the mean)."""
        decoded = self._neighbour_frames(look, memory_frames)
        w = look.weights[..., None, None, None]
        frames = (w * decoded).sum(2)
        empty = (look.weights.sum(-1) == 0)[..., None, None, None]
        mean = torch.where(empty, self.decode(frames.new_zeros(self.config.z_dim)), frames)
        if not with_std:
            return mean, None
        spread = (w * (decoded - frames.unsqueeze(2)).square()).sum(2)  # 0 where the memory is empty
        return mean, (spread + self.config.pixel_variance).sqrt()

    def _code_moments(self, look: DNDLookup) -> tuple[Tensor, Tensor]:
        """Mean and std (B, Q, z_dim) of the memory prior p(z | s, m) of a lookup whose values are
        (mu, log sigma) of q: mean = sum_k w_k mu^(k), var = sum_k w_k (v_k + (mu^(k) − mean)²) with
        v_k = sigma^(k)², plus value_std² for ``"sample"`` values (their draw z^(k) ~ q averaged
        out). An empty memory gives the reference prior's 0 and 1."""
        mu, log_std = look.values.chunk(2, -1)  # padding: 0 and 0, with weight 0
        var = (2.0 * log_std).exp()
        if self.config.value_type == "sample":
            var = var + self.config.value_std**2
        w = look.weights[..., None]
        mean = (w * mu).sum(-2)
        var = (w * (var + (mu - mean.unsqueeze(-2)).square())).sum(-2)
        empty = look.weights.sum(-1, keepdim=True) == 0
        # Replace before the sqrt: sqrt(0) would send NaN gradients through the unused branch.
        return mean, torch.where(empty, torch.ones_like(var), var).sqrt()

    def _step_lookup(self, states: Tensor, values: Tensor, mask: Tensor, method: str) -> DNDLookup:
        """Look up every step's state s_t (B, T, S) in the memory of the observed frames (values
        (B, T, v), step mask (B, T)): all of them (``"smooth"``) or those strictly before t
        (``"filter"``, one dictionary per step). Returns a lookup (B, T, K) whose indices are slots
        of the sequence's T values."""
        B, T = mask.shape
        if method == "smooth":
            return self._lookup(_Memory(states, values, mask), states)
        before = torch.ones(T, T, dtype=torch.bool, device=mask.device).tril(-1)
        occupied = (mask[:, None, :] & before).reshape(B * T, T)
        memory = _Memory(states.repeat_interleave(T, 0), values.repeat_interleave(T, 0), occupied)
        look = self._lookup(memory, states.reshape(B * T, 1, -1))
        return DNDLookup(*(t.reshape(B, T, *t.shape[2:]) for t in look))

    def _memorise(
        self, x: Tensor, u: Tensor, mask: Tensor, generator: torch.Generator | None = None, noise: bool = True
    ) -> _Memory:
        """The memory of the context frames x (B, T, C, H, W) with actions u and step mask (B, T)."""
        mean, log_std = self.encode(x)
        return _Memory(self._state_path(u), self._values(mean, log_std, generator, noise), mask)

    # ----------------------------------------------------------------------------- objective

    def _split(self, T: int, fn: str) -> int:
        tau = self.config.memory_steps
        if T <= tau:
            raise ValueError(
                f"GTMSM.{fn}: x has T = {T} steps; expected more than memory_steps = {tau} "
                "(the first tau are memorised, the rest predicted)"
            )
        return tau

    def _predicted_frames(
        self, x: Tensor, mask: Tensor, u: Tensor, generator: torch.Generator | None, noise: bool, fn: str
    ) -> tuple[DNDLookup, Tensor, Tensor, _Memory]:
        """Encode, roll the states, memorise the first tau frames and look the rest up (``fn``, the
        public caller, names any error).

        Returns the lookup (B, Q, K) for the Q = T − tau predicted steps, the mean and log std
        (B, Q, z_dim) of q(z|x) of those frames, and the memory of the first tau.
        """
        tau = self._split(x.shape[1], fn)
        mean, log_std = self.encode(x)
        eps = None
        if noise:
            eps = torch.randn(u.shape[0], u.shape[1], self.config.state_dim, dtype=u.dtype, device=u.device, generator=generator)
        states = self._state_path(u, eps)
        memory = _Memory(states[:, :tau], self._values(mean[:, :tau], log_std[:, :tau], generator), mask[:, :tau])
        return self._lookup(memory, states[:, tau:]), mean[:, tau:], log_std[:, tau:], memory

    def elbo(self, x: Tensor, mask: Tensor | None = None, u: Tensor | None = None) -> ELBO:
        """The objective of models.md §5.2 per sequence (module docstring); loss = mean over the
        batch of −(reconstruction − kl_weight · kl) (+ the grid penalty when configured).

        Terms (batch means of per-sequence sums over the observed predicted steps):
        ``"reconstruction"`` E_q log p(x|z), ``"kl"`` the Monte-Carlo mixture KL, ``"elbo"``, and
        ``"mse"`` the mean squared error per pixel of the predicted frames sum_k w_k dec(mu^(k))."""
        x, mask, u = self._inputs(x, mask, u, "elbo")
        look, mean, log_std, memory = self._predicted_frames(x, mask, u, None, self.training, "elbo")
        tau = self.config.memory_steps
        x_pred, observed = x[:, tau:], mask[:, tau:].to(x.dtype)
        S = self.config.kl_samples
        eps = torch.randn(S, *mean.shape, dtype=mean.dtype, device=mean.device)
        z = mean + log_std.exp() * eps  # (S, B, Q, z)
        recon = self.frame_log_likelihood(x_pred, self.decode(z[0]))
        entropy = log_std.sum(-1) + 0.5 * self.config.z_dim * (1.0 + LOG_2PI)
        kl = -entropy - self._mixture_log_prob(z, look).mean(0)
        # Missing frames add exactly nothing (where, not a product: their terms need not be finite).
        seen = observed.bool()
        recon_seq = torch.where(seen, recon, torch.zeros_like(recon)).sum(1)
        kl_seq = torch.where(seen, kl, torch.zeros_like(kl)).sum(1)
        loss = -(recon_seq - self.kl_weight * kl_seq).mean()
        with torch.no_grad():
            pixels = observed.sum().clamp(min=1) * math.prod(self.config.obs_shape)
            predicted = self._mixture_mean(look, self._memory_frames(memory.values))
            mse = ((predicted - x_pred).square().flatten(2).sum(-1) * observed).sum() / pixels
        terms = {"reconstruction": recon_seq.mean().detach(), "kl": kl_seq.mean().detach(), "elbo": (recon_seq - kl_seq).mean().detach(), "mse": mse}
        if self.config.grid_penalty:
            penalty = self.grid_penalty()
            loss = loss + self.config.grid_penalty * penalty
            terms["grid_penalty"] = penalty.detach()
        return ELBO(loss, terms)

    def grid_penalty(self) -> Tensor:
        """The curriculum's displacement penalty (module docstring), without its weight."""
        c = self.config
        right, left, up, down = (self.moves[:, a] for a in c.grid_moves)
        lengths = torch.stack([right, left, up, down]).norm(dim=-1)
        return (right @ up).square() + (lengths - c.grid_step).square().sum()

    def log_likelihood(
        self, x: Tensor, mask: Tensor | None = None, u: Tensor | None = None, num_samples: int = 100
    ) -> Tensor:
        """Importance-weighted estimate (B,) of log p(x_{tau+1:T} | x_{1:tau}, u) with q(z|x) as the
        proposal, frame by frame (the frames are independent given the memory and the
        noise-free states): sum_t log (1/K) sum_k p(x_t|z_k) p(z_k|s_t, m) / q(z_k|x_t)."""
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise ValueError(f"GTMSM.log_likelihood: num_samples must be an int >= 1; got {num_samples!r}")
        x, mask, u = self._inputs(x, mask, u, "log_likelihood")
        look, mean, log_std, _ = self._predicted_frames(x, mask, u, None, False, "log_likelihood")
        x_pred = x[:, self.config.memory_steps :]
        eps = torch.randn(num_samples, *mean.shape, dtype=mean.dtype, device=mean.device)
        z = mean + log_std.exp() * eps
        log_q = -0.5 * (eps.square().sum(-1) + self.config.z_dim * LOG_2PI) - log_std.sum(-1)
        log_w = self.frame_log_likelihood(x_pred, self.decode(z)) + self._mixture_log_prob(z, look) - log_q
        per_frame = torch.logsumexp(log_w, 0) - math.log(num_samples)
        return torch.where(mask[:, self.config.memory_steps :], per_frame, torch.zeros_like(per_frame)).sum(1)

    # ------------------------------------------------------------------------- the protocol

    def _posterior(self, x: object, mask: object, u: object, method: str) -> GTMSMPosterior:
        """:meth:`filter` (``method="filter"``) and :meth:`smooth` (``"smooth"``)."""
        x, mask, u = self._inputs(x, mask, u, method)
        enc_mean, enc_log_std = self.encode(x)
        states = self._state_path(u)
        mean, std = enc_mean, enc_log_std.exp()
        if not bool(mask.all()):
            # (mu, log sigma) whatever value_type: _code_moments averages a "sample" value's draw out.
            look = self._step_lookup(states, torch.cat([enc_mean, enc_log_std], -1), mask, method)
            prior_mean, prior_std = self._code_moments(look)
            seen = mask[..., None]
            mean, std = torch.where(seen, mean, prior_mean), torch.where(seen, std, prior_std)
        return GTMSMPosterior(mean, std, states, mask)

    def filter(self, x: Tensor, mask: Tensor | None = None, u: Tensor | None = None) -> GTMSMPosterior:
        """The posterior over the latents of every step given the frames x (B, T, C, H, W) up to it,
        the step mask (B, T) and the actions u (B, T, A).

        GTM-SM's inference network is per frame, q(z_t | x_t), and its states follow from the
        actions alone, so on every observed step this is the same posterior as :meth:`smooth`:
        N(mu_t, diag sigma_t²) of the encoder and the noise-free state s_t. A missing frame has no
        encoder posterior; it gets the moments of the memory prior p(z_t | s_t, m) of the observed
        frames strictly before t (those :meth:`impute` with ``method="filter"`` decodes), or N(0, I)
        when there are none; ``observed`` tells the two apart. See :class:`GTMSMPosterior`.
        """
        return self._posterior(x, mask, u, "filter")

    def smooth(self, x: Tensor, mask: Tensor | None = None, u: Tensor | None = None) -> GTMSMPosterior:
        """The posterior over the latents of every step given all the frames x (B, T, C, H, W), the
        step mask (B, T) and the actions u (B, T, A).

        GTM-SM's inference network is per frame, q(z_t | x_t), and its states follow from the
        actions alone, so on every observed step this is the same posterior as :meth:`filter`:
        N(mu_t, diag sigma_t²) of the encoder and the noise-free state s_t. A missing frame has no
        encoder posterior; it gets the moments of the memory prior p(z_t | s_t, m) of all the
        observed frames of its sequence (those :meth:`impute` with ``method="smooth"`` decodes), or
        N(0, I) when there are none; ``observed`` tells the two apart. See :class:`GTMSMPosterior`.
        """
        return self._posterior(x, mask, u, "smooth")

    def _context(
        self,
        x: Tensor,
        u: Tensor | None,
        mask: Tensor | None,
        u_future: Tensor | None,
        horizon: int,
        fn: str,
        generator: torch.Generator | None = None,
    ) -> tuple[_Memory, Tensor]:
        """Memorise the context and roll the states on: the memory and the future states (B, H, S)."""
        _positive_int(f"GTMSM.{fn}", "horizon", horizon)
        x, mask, u = self._inputs(x, mask, u, fn)
        B, T = x.shape[:2]
        u_future = self._check_actions(u_future, B, horizon, fn, "u_future")
        memory = self._memorise(x, u, mask, generator)
        states = self._state_path(torch.cat([u, u_future], 1))
        return memory, states[:, T:]

    def forecast(
        self,
        x_context: Tensor,
        horizon: int,
        u_future: Tensor | None = None,
        num_samples: int = 0,
        generator: torch.Generator | None = None,
        mask: Tensor | None = None,
        u: Tensor | None = None,
    ) -> Forecast:
        """Memorise the context x_context (B, T, C, H, W) walked with actions u (B, T, A), then
        predict the frames that the actions u_future (B, H, A) lead to.

        With d_k = decoder(mu^(k)) the frame of the k-th nearest memory at a future state s, the
        predictive distribution of a frame is the mixture

            p(x | s, m) = sum_k w_k N(x; d_k, pixel_variance · I),

        each component's code taken at its mean (the spread of z within a component, sigma^(k),
        does not pass through the nonlinear decoder in closed form). Per pixel it has

            mean = sum_k w_k d_k,    std² = pixel_variance + sum_k w_k d_k² − mean²
                                          = pixel_variance + sum_k w_k (d_k − mean)²

        (an empty memory: decoder(0) and sqrt(pixel_variance)), so ``quantile`` works without
        samples, from N(mean, std²) per pixel.

        Returns a Forecast with ``mean`` and ``std`` (B, H, C, H, W) and, when ``num_samples`` =
        S > 0, ``samples`` (S, B, H, C, H, W): k ~ w, z ~ component k, decoder(z) (decoder means, no
        pixel noise, as the other models' samples; ``quantile`` then uses them). ``generator``
        drives every draw, the memory's values included when ``value_type="sample"``.
        """
        _positive_int("GTMSM.forecast", "num_samples", num_samples, minimum=0)
        memory, future = self._context(x_context, u, mask, u_future, horizon, "forecast", generator)
        look = self._lookup(memory, future)
        samples = None
        if num_samples:
            draws = [self._draw(look, generator)[0] for _ in range(num_samples)]
            samples = self.decode(torch.stack(draws))
        mean, std = self._mixture_moments(look, self._memory_frames(memory.values))
        return Forecast(mean=mean, std=std, samples=samples)

    def impute(
        self,
        x: Tensor,
        mask: Tensor,
        u: Tensor | None = None,
        method: str = "smooth",
        num_samples: int = 0,
        generator: torch.Generator | None = None,
    ) -> Imputation:
        """Fill in missing frames from the memory of the observed ones.

        An observed frame gets its reconstruction decoder(mu_t); a missing one the memory's
        prediction at its state, sum_k w_k decoder(mu^(k)), from the observed frames of the whole
        sequence (``"smooth"``) or of the steps before it (``"filter"``).

        Returns an Imputation with, each (B, T, C, H, W), ``mean`` as above and ``std``: on observed
        frames sqrt(pixel_variance), the std of N(x; decoder(mu_t), pixel_variance · I); on missing
        ones that of the memory's mixture sum_k w_k N(x; decoder(mu^(k)), pixel_variance · I),
        sqrt(pixel_variance + sum_k w_k (decoder(mu^(k)) − mean)²) (see :meth:`forecast`). samples
        (S, B, T, C, H, W) when ``num_samples`` = S > 0: a code from q (observed) or from the memory
        prior (missing), decoded.
        """
        if method not in ("smooth", "filter"):
            raise ValueError(f"GTMSM.impute: method must be 'smooth' or 'filter'; got {method!r}")
        _positive_int("GTMSM.impute", "num_samples", num_samples, minimum=0)
        if mask is None:
            raise ValueError("GTMSM.impute: mask of shape (B, T) is required (True = observed frame)")
        x, mask, u = self._inputs(x, mask, u, "impute")
        enc_mean, enc_log_std = self.encode(x)
        states = self._state_path(u)
        values = self._values(enc_mean, enc_log_std, generator)
        look = self._step_lookup(states, values, mask, method)
        seen = mask[:, :, None, None, None]
        # Every dictionary of the lookup holds slots of its sequence's T values, so one decode each serves all.
        prior_mean, prior_std = self._mixture_moments(look, self._memory_frames(values))
        mean = torch.where(seen, self.decode(enc_mean), prior_mean)
        std = torch.where(seen, torch.full_like(prior_std, math.sqrt(self.config.pixel_variance)), prior_std)
        samples = None
        if num_samples:
            draws = []
            for _ in range(num_samples):
                eps = torch.randn(enc_mean.shape, dtype=x.dtype, device=x.device, generator=generator)
                from_q = enc_mean + enc_log_std.exp() * eps
                draws.append(torch.where(mask[..., None], from_q, self._draw(look, generator)[0]))
            samples = self.decode(torch.stack(draws))
        return Imputation(mean=mean, std=std, samples=samples)

    def sample(
        self, num_steps: int, batch_size: int = 1, u: Tensor | None = None, generator: torch.Generator | None = None
    ) -> GTMSMSamples:
        """Walk the actions u (batch_size, num_steps, A) with an empty memory.

        Without a memory GTM-SM has no learned prior over frames, so the codes come from the VAE's
        reference prior N(0, I) and the frames show what the decoder makes of them; use
        :meth:`forecast` with a context for predictions. The states are the learned map of the walk.
        """
        _positive_int("GTMSM.sample", "num_steps", num_steps)
        _positive_int("GTMSM.sample", "batch_size", batch_size)
        u = self._check_actions(u, batch_size, num_steps, "sample")
        p = self.moves
        z = torch.randn(batch_size, num_steps, self.config.z_dim, dtype=p.dtype, device=p.device, generator=generator)
        return GTMSMSamples(self._state_path(u), z, self.decode(z))

    def rollout_start(
        self,
        x: Tensor,
        u: Tensor | None = None,
        mask: Tensor | None = None,
        num_particles: int = 1,
        generator: torch.Generator | None = None,
        noise: bool = True,
    ) -> _Carry:
        """Memorise the context x (B, T, C, H, W) walked with u (B, T, A); every particle starts at
        the context's last state (the memory is shared by the P particles of a sequence, not copied).
        ``noise=False`` stores ``"sample"`` values at their means."""
        check_num_particles(num_particles, "GTMSM.rollout_start")
        x, mask, u = self._inputs(x, mask, u, "rollout_start")
        memory = self._memorise(x, u, mask, generator, noise)
        return _Carry(memory, memory.keys[:, -1].repeat(num_particles, 1))

    def rollout_step(
        self, carry: _Carry, u: Tensor | None, generator: torch.Generator | None = None, noise: bool = True
    ) -> tuple[_Carry, RolloutStep]:
        """s <- transition(s, u) + eps; k ~ w(s); z ~ component k; observation = decoder(z).

        latent: the state s (N, state_dim); log_prob: log N(s; transition, transition_std²) +
        log w_k + log N(z; component k). Without noise: s <- transition(s, u), the observation is
        the mixture's mean frame sum_k w_k decoder(mu^(k)) (as :meth:`forecast`), log_prob 0."""
        if not isinstance(carry, _Carry):
            raise ValueError(f"GTMSM.rollout_step: carry must come from rollout_start; got {type(carry).__name__}")
        N, B = carry.states.shape[0], carry.memory.keys.shape[0]
        P = N // B
        u = check_step_controls(u, N, self.config.control_dim, carry.states, "GTMSM.rollout_step")
        if not noise:
            states = self.transition(carry.states, u)
            look = self._lookup(carry.memory, states.view(P, B, -1).transpose(0, 1))
            memory_frames = self._memory_frames(carry.memory.values) if carry.frames is None else carry.frames
            frames = self._mixture_mean(look, memory_frames).transpose(0, 1)  # (P, B, C, H, W)
            frames = frames.reshape(N, *frames.shape[2:])
            return carry._replace(states=states, frames=memory_frames), RolloutStep(frames, states, states.new_zeros(N))
        std = self.config.transition_std
        eps = torch.randn(carry.states.shape, dtype=u.dtype, device=u.device, generator=generator)
        states = self.transition(carry.states, u) + std * eps
        log_s = -0.5 * (eps.square().sum(-1) + self.config.state_dim * LOG_2PI) - self.config.state_dim * math.log(std)
        # The P particles of sequence b are P queries to its one memory: (P·B, S) -> (B, P, S).
        look = self._lookup(carry.memory, states.view(P, B, -1).transpose(0, 1))
        z, log_z = self._draw(look, generator)
        z, log_z = z.transpose(0, 1).reshape(N, -1), log_z.transpose(0, 1).reshape(N)
        return carry._replace(states=states), RolloutStep(self.decode(z), states, log_s + log_z)

    def extra_repr(self) -> str:
        c = self.config
        return f"state_dim={c.state_dim}, z_dim={c.z_dim}, memory_steps={c.memory_steps}, K={c.num_neighbours}, walls={c.walls}"

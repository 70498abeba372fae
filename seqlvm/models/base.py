"""The model protocol shared by LGSSM, KVAE, SRNN and GTM-SM.

Every model is an ``nn.Module`` built from a ``Config`` dataclass and answers the same questions:

- ``elbo(x, mask=None, u=None) -> ELBO``: the training objective and its named terms;
- ``filter`` / ``smooth``: posteriors over the latents;
- ``impute(x, mask, u=None, method="smooth"|"filter") -> Imputation``;
- ``forecast(x_context, horizon, u_future=None, num_samples=..., generator=None, mask=None, u=None)
  -> Forecast`` (``mask`` and ``u`` belong to the context, ``u_future`` drives the horizon);
- ``sample(num_steps, batch_size=1, u=None, generator=None)``: a NamedTuple with (at least) the
  fields ``states`` (latents) and ``observations`` (B, T, *event);
- ``log_likelihood(x, mask=None, u=None, num_samples=K)``: exact where possible, else IWAE.

Models that can serve as simulators (``seqlvm.rl``) also step forward one action at a time:

- ``rollout_start(x, u=None, mask=None, num_particles=1, generator=None, noise=True) -> carry``:
  condition on a context and draw ``num_particles`` latent states per sequence;
- ``rollout_step(carry, u_t, generator=None, noise=True) -> (carry, RolloutStep)``: advance every
  particle by one step under the action ``u_t`` and decode it.

With ``noise=False`` nothing is drawn: the start is the posterior mean of the last state and each
step takes the transition's conditional mean, so every particle follows the one *mean path* (what
``forecast`` returns as ``mean`` where the model has a closed form) and ``log_prob`` is 0. A
planner scoring action sequences with one rollout each needs this: a single sampled path adds
noise that can dwarf the differences between the actions.

The carry is opaque to callers (a tuple of tensors); its rows, like every tensor of a
``RolloutStep``, are the ``N = P·B`` particles ordered particle-major, row ``p·B + b`` (the order
``Tensor.repeat(P, ...)`` gives), so ``.view(P, B, ...)`` separates them.

Shapes are batch first: vectors ``(B, T, D)``, video ``(B, T, C, H, W)`` in [0, 1]. Inputs are
cast to the model's dtype (a float32 model rounds float64 data to float32; ``model.double()``
keeps it), and every result comes back in the model's dtype.

Training schedules reach a model through attributes, never through extra ``elbo`` arguments, so
the protocol stays one signature for every model:

- ``kl_weight`` (float, default 1.0): the weight beta of the KL term in the loss,
  ``loss = reconstruction + beta * KL``. The Trainer sets it before every step (KL warm-up);
  models with a KL term multiply by it in ``loss`` and still report the unweighted ``"kl"`` in
  ``terms``; models without one (LGSSM) never read it.

Config fields that describe the data are named ``obs_dim`` (vector series, D), ``obs_shape``
(video, ``(C, H, W)``) and ``control_dim`` (A, 0 for none), so that training can fill them in from
a data file and check a file against a trained model.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from seqlvm.kalman.linalg import sample_gaussian


class ELBO(NamedTuple):
    """A training objective.

    loss:  scalar, the mean over the batch of the per-sequence negative ELBO (for exact models,
           the negative log-likelihood); the Trainer minimises it.
    terms: named scalar terms (each a batch mean of a per-sequence quantity, e.g.
           ``"log_likelihood"``, ``"reconstruction"``, ``"kl"``), logged every step.
    """

    loss: Tensor
    terms: dict[str, Tensor]


class Imputation(NamedTuple):
    """Missing values filled in from the posterior.

    mean:    (B, T, *event) posterior predictive mean of every entry (observed ones included).
    std:     (B, T, *event) posterior predictive standard deviation, or None for discrete data.
    probs:   (B, T, *event) Bernoulli probabilities for binary data, else None.
    samples: (S, B, T, *event) posterior predictive samples, or None when none were asked for.
    """

    mean: Tensor
    std: Tensor | None = None
    probs: Tensor | None = None
    samples: Tensor | None = None


class Forecast(NamedTuple):
    """A probabilistic forecast of ``horizon`` steps after the context.

    mean:    (B, H, *event) predictive mean.
    std:     (B, H, *event) predictive standard deviation (marginal per entry), or None.
    samples: (S, B, H, *event) sample paths, or None when the forecast is exact and none were asked for.
    probs:   (B, H, *event) Bernoulli probabilities for binary data, else None.
    """

    mean: Tensor
    std: Tensor | None = None
    samples: Tensor | None = None
    probs: Tensor | None = None

    def quantile(self, q: float | Tensor) -> Tensor:
        """Predictive quantiles, shape ``q.shape + mean.shape`` (a float q gives ``mean.shape``).

        From the samples when there are any, else from the Gaussian ``N(mean, std^2)``.
        """
        q_t = torch.as_tensor(q, dtype=self.mean.dtype, device=self.mean.device)
        if not bool(((q_t > 0) & (q_t < 1)).all()):  # NaN fails both comparisons
            raise ValueError(f"quantile: q must lie in (0, 1), got {q}")
        if self.samples is not None:  # torch.quantile takes a scalar or 1-D q
            return torch.quantile(self.samples, q_t.reshape(-1), dim=0).reshape(q_t.shape + self.mean.shape)
        if self.std is None:
            raise ValueError("quantile: this forecast has neither samples nor a std")
        normal = torch.distributions.Normal(0.0, 1.0)
        z = normal.icdf(q_t).reshape(q_t.shape + (1,) * self.mean.dim())
        return self.mean + z * self.std


class RolloutStep(NamedTuple):
    """One imagined step of every particle (see ``rollout_step`` in the module docstring).

    observation: (N, *event) the decoded observation: its predictive mean given the sampled latent.
    latent:      (N, L) the model's latent state after the step (what a reward may read).
    log_prob:    (N,) log density of the sampled latent transition of this step (0 without noise).
    """

    observation: Tensor
    latent: Tensor
    log_prob: Tensor


class SequenceModel(nn.Module):
    """Base class of the models: holds the ``Config`` and rebuilds a model from a plain dict.

    Subclasses set ``config_class`` and take the config as their only constructor argument.

    kl_weight: weight of the KL term in ``elbo(...).loss`` (see the module docstring); a plain
               attribute, not a buffer, because the schedule that sets it is part of the training
               state, not of the model.
    """

    config_class: ClassVar[type]
    kl_weight: float = 1.0

    def __init__(self, config: Any) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__}: config must be a {self.config_class.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config

    @classmethod
    def from_config(cls, config: Any) -> "SequenceModel":
        """Build the model from its ``Config`` or from the plain dict a checkpoint stores."""
        if isinstance(config, dict):
            config = config_from_dict(cls.config_class, config)
        return cls(config)

    def config_dict(self) -> dict[str, Any]:
        """The config as a plain dict (what checkpoints store)."""
        return dataclasses.asdict(self.config)


def check_num_particles(num_particles: int, fn: str) -> None:
    """``num_particles`` of ``rollout_start`` must be an int >= 1."""
    if not isinstance(num_particles, int) or isinstance(num_particles, bool) or num_particles < 1:
        raise ValueError(f"{fn}: num_particles must be an int >= 1; got {num_particles!r}")


def gaussian_step(
    mean: Tensor, chol: Tensor, num_samples: int, generator: torch.Generator | None, noise: bool
) -> tuple[Tensor, Tensor]:
    """:func:`~seqlvm.kalman.linalg.sample_gaussian`'s draws (S·B, d) and log densities (S·B,) with
    ``noise``; without, S copies of the mean (row ``s·B + b`` = mean b) and log densities 0."""
    if noise:
        return sample_gaussian(mean, chol, num_samples, generator)
    return mean.repeat(num_samples, 1), mean.new_zeros(num_samples * mean.shape[0])


def check_future_controls_type(u_future: object, fn: str) -> None:
    """``forecast``'s ``u_future`` must be None or a Tensor (B, H, k), the controls of the horizon.

    Run first in ``forecast``, so that a count given in its place, as in ``forecast(x, 3, 5)``
    (the protocol's third argument is u_future, not num_samples), gets this message rather
    than a misleading one about control_dim or shapes.
    """
    if u_future is None or isinstance(u_future, Tensor):
        return
    got = repr(u_future) if isinstance(u_future, (bool, int, float)) else type(u_future).__name__
    raise ValueError(
        f"{fn}: u_future must be None or a tensor of shape (B, H, k), the controls of the horizon; "
        f"got {got}. The third argument of forecast is u_future: pass num_samples by keyword, "
        "forecast(x_context, horizon, num_samples=S)"
    )


def check_step_controls(u: Tensor | None, rows: int, control_dim: int, like: Tensor, fn: str) -> Tensor | None:
    """The action u of one ``rollout_step``: (rows, control_dim) when the model has controls, else
    None; returned in the dtype and device of ``like``."""
    if not control_dim:
        if u is not None:
            raise ValueError(f"{fn}: u is given but the model has control_dim = 0")
        return None
    if not isinstance(u, Tensor) or tuple(u.shape) != (rows, control_dim):
        got = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
        raise ValueError(f"{fn}: u must have shape (N, A) = ({rows}, {control_dim}), one action per particle; got {got}")
    return u.to(like)


def config_from_dict(config_class: type, values: dict[str, Any]) -> Any:
    """Build a config dataclass from a dict, rejecting unknown keys by name."""
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(
            f"{config_class.__name__}: unknown key(s) {unknown}; expected some of {sorted(names)}"
        )
    return config_class(**values)

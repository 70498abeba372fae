"""SRNN: the stochastic recurrent network of Fraccaro, Sønderby, Paquet & Winther (NIPS 2016).

Generative model (t = 1..T; ``d_0 = 0``, ``z_0 = 0``)::

    d_t = GRU(phi(u_t), d_{t-1})                                   deterministic state
    p(z_t | z_{t-1}, d_t) = N(mu_p,t, diag sigma^2_p,t)            [mu_p, log sigma^2_p] = MLP([d_t, z_{t-1}])
    p(x_t | z_t, d_t)     = Bernoulli(sigmoid(MLP([d_t, z_t])))    or N(mean, diag var) for real values

with inputs ``u_t = x_{t-1}`` (``u_1 = 0``, or the true previous frame when the caller passes
``u``), or user-given inputs/actions of size ``control_dim``. ``phi`` is a feature MLP shared by
``u`` and ``x`` when ``u_t = x_{t-1}``.

Inference network (the proposal)::

    a_t = GRU_backward([d_t, phi(x_t)], a_{t+1})       smoothing, a_{T+1} = 0
        or a_t = MLP([d_t, phi(x_t)])                  filtering
    q(z_t | z_{t-1}, a_t) = N(mu_q,t, diag sigma^2_q,t)
    mu_q,t = mu_p,t + MLP([a_t, z_{t-1}])              ("Resq": a residual on the prior mean; off: MLP only)
    log sigma^2_q,t = MLP([a_t, z_{t-1}])

Both variances are floored, ``sigma^2 = exp(raw) + min_variance``. ``z_{t-1}`` fed to prior and
posterior at step t is the posterior sample of step t-1.

Bound, per sequence: ``F = sum_t E_q[log p(x_t | z_t, d_t)] - sum_t E_q[KL(q_t || p_t)]`` with the KL
in closed form at the sampled ``z_{t-1}``; :meth:`SRNN.log_likelihood` is the importance-weighted
bound ``log (1/K) sum_k prod_t p(x_t | z^k_t) p(z^k_t | z^k_{t-1}) / q(z^k_t | z^k_{t-1})``.

Missing data (``mask`` False, or NaN in ``x``) never enter the likelihood and are handled inside the
inference network, not by filling the data term:

- the encoder does not read a missing step: the backward GRU carries ``a_{t+1}`` through it
  (smoothing), and the filtering network falls back to the prior there (``q_t = p_t``);
- after the last step with an observed entry nothing is left to explain, so ``q_t = p_t`` there:
  those steps add exactly zero to the KL and to the importance weights (zero-padded songs cost nothing);
- with ``u_t = x_{t-1}`` a missing ``x_{t-1}`` is a latent variable of the generative model: it is
  drawn from ``p(x_{t-1} | z_{t-1}, d_{t-1})`` and fed forward. That proposal equals the model's own
  conditional, so it cancels in the weights and both bounds stay bounds on ``log p(x_obs)``. The
  encoder, which must run before the draws, sees ``d`` computed with zeros in the missing inputs.

Reference numbers, layer sizes and the training recipe: ``../shared/reference/models.md`` section 4;
:meth:`SRNNConfig.music` gives the music sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlvm.models.base import (
    ELBO, Forecast, Imputation, RolloutStep, SequenceModel, check_future_controls_type, check_num_particles,
    check_step_controls,
)

LOG_2PI = math.log(2.0 * math.pi)
LIKELIHOODS = ("bernoulli", "gaussian")
INFERENCES = ("smooth", "filter")
# Sequence-steps per IWAE chunk: memory grows with samples x batch x length (every step keeps
# its projected contexts, 2 x hidden_dim wide), so the default chunk divides this by B * T.
CHUNK_STEPS = 2**17


@dataclass
class SRNNConfig:
    """Sizes and options of an :class:`SRNN` (defaults: the reference polyphonic-music model).

    obs_dim:            D, the size of x_t (88 for piano rolls).
    control_dim:        0: the inputs are the previous observation, ``u_t = x_{t-1}``; k > 0: the
                        model is driven by user inputs/actions u_t of size k.
    state_dim:          size of the stochastic state z_t.
    deterministic_dim:  size of the forward GRU state d_t.
    inference_dim:      size of a_t (the backward GRU state, or the filtering MLP's output).
    feature_dims:       hidden sizes of the feature MLP phi (shared by u and x when u_t = x_{t-1}).
    hidden_dim:         hidden size of each prior / posterior MLP (one hidden layer each).
    output_hidden_dims: hidden sizes of the output MLP ([500] music, [512, 512] speech frames).
    likelihood:         ``"bernoulli"`` (binary data, e.g. piano rolls) or ``"gaussian"`` (diagonal
                        Gaussian with a learned mean and log-variance: real series, audio frames).
    residual_posterior: Resq: the posterior mean is the prior mean plus a learned residual.
    inference:          ``"smooth"`` (backward GRU over the future) or ``"filter"`` (MLP of the present).
    min_variance:       floor added to every variance, ``sigma^2 = exp(raw) + min_variance``.
    dropout:            dropout probability, in training only, on the non-recurrent connections
                        as in the reference code: the features phi(u_t) and phi(x_t), d_t where it
                        feeds the prior, the encoder and the output MLP, and z_t into the output
                        MLP (the recurrences themselves see undropped states). 0 by default, as there.
                        Only the training objective (:meth:`SRNN.bound` / :meth:`SRNN.elbo` with the
                        module in training mode) applies it; the inference methods never do (see
                        :class:`SRNN`).
    """

    obs_dim: int = 88
    control_dim: int = 0
    state_dim: int = 100
    deterministic_dim: int = 300
    inference_dim: int = 300
    feature_dims: list[int] = field(default_factory=lambda: [500, 500])
    hidden_dim: int = 500
    output_hidden_dims: list[int] = field(default_factory=lambda: [500])
    likelihood: str = "bernoulli"
    residual_posterior: bool = True
    inference: str = "smooth"
    min_variance: float = 1e-6
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("obs_dim", "state_dim", "deterministic_dim", "inference_dim", "hidden_dim"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"SRNNConfig: {name} must be an int >= 1; got {v!r}")
        if not isinstance(self.control_dim, int) or isinstance(self.control_dim, bool) or self.control_dim < 0:
            raise ValueError(f"SRNNConfig: control_dim must be an int >= 0; got {self.control_dim!r}")
        for name in ("feature_dims", "output_hidden_dims"):
            v = getattr(self, name)
            if not isinstance(v, (list, tuple)) or not v or not all(
                isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in v
            ):
                raise ValueError(f"SRNNConfig: {name} must be a non-empty list of ints >= 1; got {v!r}")
            setattr(self, name, list(v))
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"SRNNConfig: likelihood must be one of {LIKELIHOODS}; got {self.likelihood!r}")
        if self.inference not in INFERENCES:
            raise ValueError(f"SRNNConfig: inference must be one of {INFERENCES}; got {self.inference!r}")
        if not isinstance(self.residual_posterior, bool):
            raise ValueError(f"SRNNConfig: residual_posterior must be a bool; got {self.residual_posterior!r}")
        if not (isinstance(self.min_variance, (int, float)) and self.min_variance > 0):
            raise ValueError(f"SRNNConfig: min_variance must be a number > 0; got {self.min_variance!r}")
        if not (isinstance(self.dropout, (int, float)) and not isinstance(self.dropout, bool) and 0 <= self.dropout < 1):
            raise ValueError(f"SRNNConfig: dropout must be a number in [0, 1); got {self.dropout!r}")

    @classmethod
    def music(cls, obs_dim: int = 88) -> "SRNNConfig":
        """The reference polyphonic-music sizes (models.md 4.4): phi 2x500, d 300, a 300, z 100."""
        return cls(obs_dim=obs_dim)

    @classmethod
    def speech(cls, obs_dim: int = 200) -> "SRNNConfig":
        """The reference speech (TIMIT / Blizzard frame) sizes: phi 2x512, d 1024, a 1024, z 256, Gaussian."""
        return cls(
            obs_dim=obs_dim, state_dim=256, deterministic_dim=1024, inference_dim=1024,
            feature_dims=[512, 512], hidden_dim=512, output_hidden_dims=[512, 512], likelihood="gaussian",
        )


class SRNNBound(NamedTuple):
    """Per-sequence pieces of the ELBO, all (B,).

    elbo:           sum_t log p(x_t | z_t, d_t) - sum_t KL(q_t || p_t), one posterior sample.
    log_likelihood: the reconstruction term sum_t log p(x_t | z_t, d_t) over observed entries.
    kl:             sum_t KL(q_t || p_t) (unweighted).
    num_steps:      the number of steps with an observed entry (the per-step normaliser).
    end:            (z_T (B, z), d_T (B, d)), the states after the last step: the ``start`` of
                    the next chunk of the same sequences under truncated BPTT.
    """

    elbo: Tensor
    log_likelihood: Tensor
    kl: Tensor
    num_steps: Tensor
    end: tuple[Tensor, Tensor]


class SRNNPosterior(NamedTuple):
    """Draws from the approximate posterior q(z_{1:T} | x) and their predictive distributions.

    states:      (S, B, T, z) joint posterior samples of z.
    means, stds: (B, T, z) Monte-Carlo marginal posterior mean and standard deviation of z_t.
    observations:(S, B, T, D) x with every missing entry drawn from the model given the sample
                 (the observed entries as given).
    obs_means:   (S, B, T, D) mean of p(x_t | z_t, d_t) per sample (probabilities for Bernoulli).
    obs_vars:    (S, B, T, D) variance of p(x_t | z_t, d_t) per sample.
    log_weights: (S, B) log p(x_obs, z) - log q(z | x) of each sample (the importance weights).
    """

    states: Tensor
    means: Tensor
    stds: Tensor
    observations: Tensor
    obs_means: Tensor
    obs_vars: Tensor
    log_weights: Tensor


class SRNNSamples(NamedTuple):
    """Draws from the model: states (B, T, z), deterministic states (B, T, d), observations (B, T, D)."""

    states: Tensor
    deterministic: Tensor
    observations: Tensor


def clipped_leaky_relu(x: Tensor) -> Tensor:
    """The reference nonlinearity ``clip(max(x, x/3), -3, 3)`` ("clipped very leaky ReLU")."""
    return torch.clamp(torch.maximum(x, x / 3.0), -3.0, 3.0)


class _MLP(nn.Module):
    """Dense layers, each followed by the clipped leaky ReLU (no output layer)."""

    def __init__(self, in_dim: int, hidden: list[int], normal_init: bool = False) -> None:
        super().__init__()
        dims = [in_dim, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        for layer in self.layers:
            # Glorot everywhere; the reference's output MLP uses the normal variant.
            (nn.init.xavier_normal_ if normal_init else nn.init.xavier_uniform_)(layer.weight)
            nn.init.zeros_(layer.bias)
        self.out_dim = dims[-1]

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = clipped_leaky_relu(layer(x))
        return x


class _GaussianHead(nn.Module):
    """``[mean, log var] = MLP([c, z])`` as two one-hidden-layer MLPs (one for each output).

    The two first layers read the same input, so they are one Linear of width 2H, and the context
    part ``c`` is projected separately (:meth:`project`): for a whole sequence at once when the
    context is known before the recurrence, which leaves only the z part inside the time loop.
    """

    def __init__(self, context_dim: int, state_dim: int, hidden_dim: int, min_variance: float) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.log_floor = math.log(min_variance)
        self.context = nn.Linear(context_dim, 2 * hidden_dim)
        self.state = nn.Linear(state_dim, 2 * hidden_dim, bias=False)
        self.mean = nn.Linear(hidden_dim, state_dim)
        self.raw_logvar = nn.Linear(hidden_dim, state_dim)
        # Glorot-uniform with zero biases; context and state are two halves of one first layer,
        # so both take the joint layer's bound.
        bound = math.sqrt(6.0 / (context_dim + state_dim + hidden_dim))
        nn.init.uniform_(self.context.weight, -bound, bound)
        nn.init.uniform_(self.state.weight, -bound, bound)
        for layer in (self.mean, self.raw_logvar):
            nn.init.xavier_uniform_(layer.weight)
        for layer in (self.context, self.mean, self.raw_logvar):
            nn.init.zeros_(layer.bias)

    def project(self, context: Tensor) -> Tensor:
        """(..., c) -> (..., 2H) the context's share of the first layers (bias included)."""
        return self.context(context)

    def forward(self, context_proj: Tensor, z_prev: Tensor) -> tuple[Tensor, Tensor]:
        """-> mean (..., z) and log variance (..., z), floored: ``log(exp(raw) + min_variance)``."""
        h = clipped_leaky_relu(context_proj + self.state(z_prev))
        H = self.hidden_dim
        raw = self.raw_logvar(h[..., H:])
        return self.mean(h[..., :H]), torch.logaddexp(raw, torch.full_like(raw, self.log_floor))


def _orthogonal_gru(gru: nn.GRU) -> nn.GRU:
    """Reference initialisation: orthogonal recurrent weights per gate, Glorot inputs, zero biases."""
    H = gru.hidden_size
    for g in range(3):
        nn.init.orthogonal_(gru.weight_hh_l0.data[g * H : (g + 1) * H])
        nn.init.xavier_uniform_(gru.weight_ih_l0.data[g * H : (g + 1) * H])
    nn.init.zeros_(gru.bias_hh_l0)
    nn.init.zeros_(gru.bias_ih_l0)
    return gru


def _run_gru(
    gru: nn.GRU, inputs: Tensor, keep: Tensor | None, reverse: bool = False, h0: Tensor | None = None
) -> Tensor:
    """States h_t of a GRU over inputs (B, T, F) from h = h0 (B, H), or 0; (B, T, H).

    ``keep`` (B, T) bool: where False the step is skipped, ``h_t = h_{t-1}`` (missing data). None:
    no step is skipped, and the whole sequence goes through the fused kernel at once.
    ``reverse`` runs from t = T to 1 (h_{T+1} = 0).
    """
    if reverse:
        inputs = inputs.flip(1)
        keep = None if keep is None else keep.flip(1)
    h = inputs.new_zeros(1, inputs.shape[0], gru.hidden_size) if h0 is None else h0[None]
    if keep is None:
        states = gru(inputs, h)[0]
    else:
        out = []
        # unbind, not indexing per step: see seqlvm.kalman.params.per_step
        for x_t, keep_t in zip(inputs.unbind(1), keep.unbind(1)):
            new = gru(x_t[:, None], h)[1]
            h = torch.where(keep_t[None, :, None], new, h)
            out.append(h[0])
        states = torch.stack(out, 1)
    return states.flip(1) if reverse else states


def _gaussian_kl(mq: Tensor, lq: Tensor, mp: Tensor, lp: Tensor) -> Tensor:
    """KL(N(mq, e^lq) || N(mp, e^lp)) summed over the last dim: ``½ Σ [lp - lq + (e^lq + (mq-mp)²)/e^lp - 1]``."""
    return 0.5 * (lp - lq + (lq.exp() + (mq - mp) ** 2) * torch.exp(-lp) - 1.0).sum(-1)


def _gaussian_log_prob(x: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise log N(x; mean, e^logvar)."""
    return -0.5 * (LOG_2PI + logvar + (x - mean) ** 2 * torch.exp(-logvar))


class _Pass(NamedTuple):
    """Everything one run of the recurrence produces, for S samples x B sequences (batch S*B)."""

    z: Tensor            # (SB, T, z)
    d: Tensor            # (SB, T, d)
    x: Tensor            # (SB, T, D) observed entries, missing ones drawn from the model
    out_a: Tensor        # (SB, T, D) logits (Bernoulli) or means (Gaussian)
    out_b: Tensor | None  # (SB, T, D) log variances (Gaussian) or None
    log_lik: Tensor      # (SB, T) log p(x_t | z_t, d_t) over observed entries
    kl: Tensor           # (SB, T) analytic KL(q_t || p_t)
    log_ratio: Tensor    # (SB, T) log p(z_t | ...) - log q(z_t | ...) at the sample
    z_last: Tensor       # (SB, z) and d_last (SB, d): the state after the last step
    d_last: Tensor


class SRNN(SequenceModel):
    """Stochastic recurrent network with a Resq posterior, smoothing or filtering inference.

    Shapes: x (B, T, D); mask (B, T) or (B, T, D), True = observed (NaN in x is missing too);
    u (B, T, k) inputs/actions when ``control_dim = k > 0``; when ``control_dim = 0``, u may be
    given as (B, T, D), the previous frames x_{t-1} (e.g. with the song's true first frame as
    u_1, the reference test protocol); by default ``u_t = x_{t-1}`` with ``u_1 = 0``.

    Training: :meth:`elbo` (the Trainer minimises ``.loss``); KL warm-up through the protocol's
    ``kl_weight`` attribute (``SequenceModel.kl_weight``, set by the Trainer every step).

    Dropout (``config.dropout``) is a training regulariser: :meth:`bound` (hence :meth:`elbo`)
    applies it when the module is in training mode, with masks drawn from its ``generator`` when one
    is given (the global RNG otherwise). The inference methods (:meth:`log_likelihood`,
    :meth:`smooth`, :meth:`filter`, :meth:`impute`, :meth:`forecast`, :meth:`sample` and the
    rollout) describe the model itself, the network without dropout, so they never apply it, in
    training mode or not; the reference code likewise evaluates deterministically. Their results
    depend only on the weights, the inputs and ``generator``.
    """

    config_class = SRNNConfig

    def __init__(self, config: SRNNConfig) -> None:
        super().__init__(config)
        c = config
        self.features = _MLP(c.obs_dim, c.feature_dims)
        F_dim = self.features.out_dim
        self.input_features = _MLP(c.control_dim, c.feature_dims) if c.control_dim else None
        self.forward_gru = _orthogonal_gru(nn.GRU(F_dim, c.deterministic_dim, batch_first=True))
        enc_in = c.deterministic_dim + F_dim
        if c.inference == "smooth":
            self.backward_gru = _orthogonal_gru(nn.GRU(enc_in, c.inference_dim, batch_first=True))
            self.filter_net = None
        else:
            self.backward_gru = None
            self.filter_net = _MLP(enc_in, [c.inference_dim])
        self.prior = _GaussianHead(c.deterministic_dim, c.state_dim, c.hidden_dim, c.min_variance)
        self.posterior = _GaussianHead(c.inference_dim, c.state_dim, c.hidden_dim, c.min_variance)
        self.output = _MLP(c.deterministic_dim + c.state_dim, c.output_hidden_dims, normal_init=True)
        H = self.output.out_dim
        self.output_a = nn.Linear(H, c.obs_dim)
        self.output_b = nn.Linear(H, c.obs_dim) if c.likelihood == "gaussian" else None
        for layer in (self.output_a, self.output_b):
            if layer is not None:
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    # -- input checking ---------------------------------------------------------------------------
    def _param(self) -> Tensor:
        return self.output_a.weight

    def _check_u(self, u: Tensor | None, B: int, T: int, fn: str, name: str = "u") -> Tensor | None:
        k = self.config.control_dim
        width = k or self.config.obs_dim
        if u is None:
            if k:
                raise ValueError(f"SRNN.{fn}: the model has control_dim = {k}, so {name} of shape ({B}, {T}, {k}) is required")
            return None
        if not isinstance(u, Tensor) or tuple(u.shape) != (B, T, width):
            got = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
            what = "inputs" if k else "previous frames x_{t-1}"
            raise ValueError(f"SRNN.{fn}: {name} ({what}) must have shape ({B}, {T}, {width}); got {got}")
        if torch.isnan(u).any():
            raise ValueError(f"SRNN.{fn}: {name} must not contain NaN (inputs are never missing)")
        p = self._param()
        return u.to(dtype=p.dtype, device=p.device)

    def _inputs(
        self, x: Tensor, mask: Tensor | None, u: Tensor | None, fn: str, name: str = "x"
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Check x (B, T, D) with B, T >= 1 (``name``: the caller's name for it), mask and u;
        -> x with missing entries 0, observed (B, T, D) bool, u."""
        D = self.config.obs_dim
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != D or x.shape[0] < 1 or x.shape[1] < 1:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"SRNN.{fn}: {name} must have shape (B, T, {D}) with B >= 1 and T >= 1; got {got}")
        p = self._param()
        x = x.to(dtype=p.dtype, device=p.device)
        observed = ~torch.isnan(x)
        if mask is not None:
            if not isinstance(mask, Tensor) or tuple(mask.shape) not in (tuple(x.shape[:2]), tuple(x.shape)):
                got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
                raise ValueError(
                    f"SRNN.{fn}: mask must have shape {tuple(x.shape[:2])} or {tuple(x.shape)}; got {got}"
                )
            mask = mask.to(device=p.device).bool()
            observed = observed & (mask[..., None] if mask.dim() == 2 else mask)
        u = self._check_u(u, x.shape[0], x.shape[1], fn)
        return torch.where(observed, x, torch.zeros((), dtype=x.dtype, device=x.device)), observed, u

    @staticmethod
    def _check_count(value: int, name: str, fn: str, minimum: int = 1) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"SRNN.{fn}: {name} must be an int >= {minimum}; got {value!r}")

    # -- the recurrence -------------------------------------------------------------------------
    def _input_features(self, x: Tensor, u: Tensor | None) -> Tensor:
        """phi(u_t) for every step (B, T, F): the given inputs, or x shifted by one (u_1 = 0)."""
        if u is None:
            u = F.pad(x[:, :-1], (0, 0, 1, 0))
        return self.input_features(u) if self.config.control_dim else self.features(u)

    def _encode(
        self, x: Tensor, observed: Tensor, d: Tensor, dropout: bool, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """The proposal's context: a (B, T, a) and where q falls back to the prior, (B, T) bool."""
        read = observed.all(-1)  # the encoder reads only fully observed steps
        enc_in = torch.cat([self._drop(d, dropout, generator), self._drop(self.features(x), dropout, generator)], -1)
        if self.backward_gru is not None:
            a = _run_gru(self.backward_gru, enc_in, None if bool(read.all()) else read, reverse=True)
            # After the last observed entry there is nothing left to explain.
            any_obs = observed.any(-1)
            use_prior = ~(any_obs.flip(1).int().cummax(1).values.flip(1).bool())
        else:
            a = self.filter_net(enc_in)
            use_prior = ~read
        return a, use_prior

    def _drop(self, h: Tensor, dropout: bool, generator: torch.Generator | None) -> Tensor:
        """Dropout with probability ``config.dropout`` on a non-recurrent connection when ``dropout``
        is on (only :meth:`bound` in training mode turns it on): ``h * m / (1 - p)``, m_i ~ Bernoulli(1 - p).
        The masks come from ``generator``, or from the global RNG (``F.dropout``) without one."""
        p = self.config.dropout
        if not dropout or p == 0:
            return h
        if generator is None:
            return F.dropout(h, p, training=True)
        keep = torch.rand(h.shape, generator=generator, dtype=h.dtype, device=h.device) >= p
        return h * keep / (1.0 - p)

    def _observation(self, h_out: Tensor) -> tuple[Tensor, Tensor | None]:
        """Output-MLP features -> logits (Bernoulli) or mean and floored log variance (Gaussian)."""
        h = self.output(h_out)
        a = self.output_a(h)
        if self.output_b is None:
            return a, None
        raw = self.output_b(h)
        return a, torch.logaddexp(raw, torch.full_like(raw, math.log(self.config.min_variance)))

    def _obs_log_prob(self, x: Tensor, out_a: Tensor, out_b: Tensor | None, observed: Tensor) -> Tensor:
        """sum over observed entries of log p(x_t | z_t, d_t): (..., T, D) -> (..., T)."""
        if out_b is None:
            lp = -F.binary_cross_entropy_with_logits(out_a, x, reduction="none")
        else:
            lp = _gaussian_log_prob(x, out_a, out_b)
        return (lp * observed).sum(-1)

    def _draw_obs(self, out_a: Tensor, out_b: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """One draw from p(x_t | z_t, d_t) given its parameters."""
        if out_b is None:
            noise = torch.rand(out_a.shape, generator=generator, dtype=out_a.dtype, device=out_a.device)
            return (noise < torch.sigmoid(out_a)).to(out_a.dtype)
        eps = torch.randn(out_a.shape, generator=generator, dtype=out_a.dtype, device=out_a.device)
        return out_a + torch.exp(0.5 * out_b) * eps

    def _run(
        self,
        x: Tensor,
        observed: Tensor,
        u: Tensor | None,
        num_samples: int,
        generator: torch.Generator | None,
        noise: bool = True,
        start: tuple[Tensor, Tensor] | None = None,
        dropout: bool = False,
    ) -> _Pass:
        """Sample z ~ q for ``num_samples`` copies of each sequence and score them; batch S*B, s-major.
        ``noise=False`` takes every z_t at the mean of q(z_t | z_{t-1}, ...) instead (the q-mean path).
        ``start``: the states (z_0, d_0), each (B, .), the recurrence starts from (zeros by default).
        ``dropout``: apply ``config.dropout`` (the training objective only), masks from ``generator``."""
        B, T, _ = x.shape
        S = num_samples
        z0, d0 = (None, None) if start is None else start

        def drop(h: Tensor) -> Tensor:
            return self._drop(h, dropout, generator)

        phi_u = drop(self._input_features(x, u))
        # d is a function of the inputs alone unless an input is a missing x_{t-1}: then it
        # depends on a draw and is built inside the loop; the encoder uses this zero-filled version.
        d_enc = _run_gru(self.forward_gru, phi_u, None, h0=d0)
        missing_inputs = u is None and not bool(observed[:, :-1].all())
        a, use_prior = self._encode(x, observed, d_enc, dropout, generator)

        def rep(t: Tensor) -> Tensor:
            return t.repeat(S, *([1] * (t.dim() - 1)))

        x_r, obs_r, a_r, prior_r = rep(x), rep(observed), rep(a), rep(use_prior)
        post_ctx = self.posterior.project(a_r)
        d_all = None if missing_inputs else rep(d_enc)
        prior_ctx = None if d_all is None else self.prior.project(drop(d_all))
        dtype, device = x.dtype, x.device
        z = torch.zeros(S * B, self.config.state_dim, dtype=dtype, device=device) if z0 is None else rep(z0)
        h = torch.zeros(1, S * B, self.config.deterministic_dim, dtype=dtype, device=device) if d0 is None else rep(d0)[None]
        x_prev = torch.zeros(S * B, 1, self.config.obs_dim, dtype=dtype, device=device)
        zs, ds, xs, outs, kls, ratios = [], [], [], [], [], []
        # unbind, not indexing per step: see seqlvm.kalman.params.per_step
        post_steps, fall_backs = post_ctx.unbind(1), prior_r.unbind(1)
        if d_all is None:
            x_steps, obs_steps = x_r.unbind(1), obs_r.unbind(1)
        else:
            d_steps, prior_steps = d_all.unbind(1), prior_ctx.unbind(1)
        for t in range(T):
            if d_all is None:
                h = self.forward_gru(drop(self.features(x_prev)), h)[1]
                d_t = h[0]
                p_ctx = self.prior.project(drop(d_t))
            else:
                d_t, p_ctx = d_steps[t], prior_steps[t]
            mp, lp = self.prior(p_ctx, z)
            mq, lq = self.posterior(post_steps[t], z)
            if self.config.residual_posterior:
                mq = mp + mq
            fall_back = fall_backs[t][:, None]
            mq, lq = torch.where(fall_back, mp, mq), torch.where(fall_back, lp, lq)
            eps = torch.randn(z.shape, generator=generator, dtype=dtype, device=device) if noise else torch.zeros_like(z)
            z = mq + torch.exp(0.5 * lq) * eps
            kls.append(_gaussian_kl(mq, lq, mp, lp))
            # log p(z) - log q(z) at the sample; (z - mq)^2 / var_q = eps^2 exactly.
            ratios.append((_gaussian_log_prob(z, mp, lp) + 0.5 * (LOG_2PI + lq + eps**2)).sum(-1))
            zs.append(z)
            ds.append(d_t)
            if d_all is None:
                out = self._observation(torch.cat([drop(d_t), drop(z)], -1))
                x_t = torch.where(obs_steps[t], x_steps[t], self._draw_obs(*out, generator))
                outs.append(out)
                xs.append(x_t)
                x_prev = x_t[:, None]
        z_seq, d_seq = torch.stack(zs, 1), torch.stack(ds, 1)
        if d_all is None:
            out_a = torch.stack([o[0] for o in outs], 1)
            out_b = None if outs[0][1] is None else torch.stack([o[1] for o in outs], 1)
            x_full = torch.stack(xs, 1)
        else:
            out_a, out_b = self._observation(torch.cat([drop(d_seq), drop(z_seq)], -1))
            # Draw only when something is missing: the draw would cost time and generator state.
            x_full = x_r if bool(obs_r.all()) else torch.where(obs_r, x_r, self._draw_obs(out_a, out_b, generator))
        return _Pass(
            z=z_seq, d=d_seq, x=x_full, out_a=out_a, out_b=out_b,
            log_lik=self._obs_log_prob(x_r, out_a, out_b, obs_r),
            kl=torch.stack(kls, 1), log_ratio=torch.stack(ratios, 1),
            z_last=z, d_last=d_seq[:, -1],
        )

    # -- bounds -------------------------------------------------------------------------------------
    def bound(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        u: Tensor | None = None,
        generator: torch.Generator | None = None,
        start: tuple[Tensor, Tensor] | None = None,
    ) -> SRNNBound:
        """The ELBO of each sequence with one posterior sample and the analytic per-step KL.

        ``F = sum_t log p(x_t | z_t, d_t) - sum_t KL(q(z_t | z_{t-1}, a_t) || p(z_t | z_{t-1}, d_t))``;
        missing entries are left out of the first sum. Returns an :class:`SRNNBound` of (B,) tensors.
        ``start`` = (z_0 (B, z), d_0 (B, d)) continues sequences from an earlier chunk's ``end``
        (truncated backpropagation through time; detach it first); zeros by default.
        In training mode with ``config.dropout > 0`` this is the dropped-out training objective:
        its masks are drawn from ``generator`` along with the posterior noise, so the same
        generator state gives the same bound whatever the global seed (the global RNG when None).
        """
        x, observed, u = self._inputs(x, mask, u, "bound")
        if start is not None:
            B = x.shape[0]
            want = ((B, self.config.state_dim), (B, self.config.deterministic_dim))
            got: object = type(start).__name__
            if isinstance(start, tuple):
                got = tuple(tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__ for s in start)
            if got != want:
                raise ValueError(f"SRNN.bound: start must be (z_0, d_0) of shapes {want[0]} and {want[1]}; got {got}")
        run = self._run(x, observed, u, 1, generator, start=start, dropout=self.training)
        ll, kl = run.log_lik.sum(1), run.kl.sum(1)
        return SRNNBound(elbo=ll - kl, log_likelihood=ll, kl=kl, num_steps=observed.any(-1).sum(1),
                         end=(run.z_last, run.d_last))

    def elbo(self, x: Tensor, mask: Tensor | None = None, u: Tensor | None = None) -> ELBO:
        """The training objective of :meth:`objective` on the :meth:`bound` of x from zero states."""
        return self.objective(self.bound(x, mask, u))

    def objective(self, b: SRNNBound) -> ELBO:
        """The training objective of a bound, per time step as in the reference code.

        ``loss = mean_b -(sum_t log p(x_t | .) - beta * sum_t KL_t) / n_b`` with n_b the number of
        steps of sequence b with an observed entry and beta = ``self.kl_weight`` (KL warm-up, set by
        the Trainer). Normalising per step (rather than the protocol's per-sequence sum) keeps the
        reference gradient scale, which its global-norm clipping at 1.0 is tuned for.
        terms (batch means, unweighted): ``elbo``, ``reconstruction`` and ``kl`` per sequence;
        ``elbo_per_step``.
        """
        steps = b.num_steps.clamp_min(1).to(b.elbo.dtype)
        loss = (-(b.log_likelihood - self.kl_weight * b.kl) / steps).mean()
        terms = {
            "elbo": b.elbo.mean(),
            "reconstruction": b.log_likelihood.mean(),
            "kl": b.kl.mean(),
            "elbo_per_step": (b.elbo / steps).mean(),
        }
        return ELBO(loss, terms)

    def log_likelihood(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        u: Tensor | None = None,
        num_samples: int = 100,
        chunk_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The importance-weighted bound (IWAE) on log p(x_obs) of each sequence, (B,).

        ``log (1/K) sum_k w_k``, ``log w_k = sum_t [log p(x_t | z^k_t, d_t) + log p(z^k_t | z^k_{t-1}, d_t)
        - log q(z^k_t | z^k_{t-1}, a_t)]`` with the K = ``num_samples`` trajectories drawn from the
        sequential proposal q. A lower bound that rises with K towards log p(x_obs); K = 1 equals
        the ELBO in expectation. The samples run ``chunk_size`` at a time, so memory stays bounded
        for any K: by default as many as keep a chunk at or below ``CHUNK_STEPS`` = 2^17
        sequence-steps (chunk_size * B * T), about 2 GB at the music sizes. Runs without gradients
        and without dropout, in training mode too (it scores the model, not a thinned network).
        """
        x, observed, u = self._inputs(x, mask, u, "log_likelihood")
        self._check_count(num_samples, "num_samples", "log_likelihood")
        if chunk_size is None:
            chunk_size = max(1, CHUNK_STEPS // (x.shape[0] * x.shape[1]))
        self._check_count(chunk_size, "chunk_size", "log_likelihood")
        with torch.no_grad():
            parts = []
            for start in range(0, num_samples, chunk_size):
                s = min(chunk_size, num_samples - start)
                run = self._run(x, observed, u, s, generator)
                parts.append((run.log_lik + run.log_ratio).sum(1).view(s, x.shape[0]))
            log_w = torch.cat(parts, 0)
        return torch.logsumexp(log_w, 0) - math.log(num_samples)

    # -- posterior, imputation, forecasting, sampling ----------------------------------------------
    def _posterior(
        self, x: Tensor, mask: Tensor | None, u: Tensor | None, num_samples: int,
        generator: torch.Generator | None, fn: str, noise: bool = True, name: str = "x",
    ) -> tuple[SRNNPosterior, _Pass]:
        x, observed, u = self._inputs(x, mask, u, fn, name)
        self._check_count(num_samples, "num_samples", fn)
        with torch.no_grad():
            run = self._run(x, observed, u, num_samples, generator, noise)
        S, (B, T, D) = num_samples, x.shape
        if run.out_b is None:
            obs_mean = torch.sigmoid(run.out_a)
            obs_var = obs_mean * (1.0 - obs_mean)
        else:
            obs_mean, obs_var = run.out_a, run.out_b.exp()
        states = run.z.view(S, B, T, -1)
        post = SRNNPosterior(
            states=states,
            means=states.mean(0),
            stds=states.std(0, unbiased=False),
            observations=run.x.view(S, B, T, D),
            obs_means=obs_mean.view(S, B, T, D),
            obs_vars=obs_var.view(S, B, T, D),
            log_weights=(run.log_lik + run.log_ratio).sum(1).view(S, B),
        )
        return post, run

    def _check_method(self, method: str, fn: str) -> None:
        if method not in INFERENCES:
            raise ValueError(f"SRNN.{fn}: method must be 'smooth' or 'filter'; got {method!r}")
        if method != self.config.inference:
            raise ValueError(
                f"SRNN.{fn}: this model's inference network was built for {self.config.inference!r} "
                f"(SRNNConfig.inference); got method={method!r}. Train a model with "
                f"inference={method!r} for that posterior."
            )

    def smooth(
        self, x: Tensor, mask: Tensor | None = None, u: Tensor | None = None,
        num_samples: int = 100, generator: torch.Generator | None = None,
    ) -> SRNNPosterior:
        """Samples of q(z_{1:T} | x_{1:T}) from the smoothing inference network (inference="smooth")."""
        self._check_method("smooth", "smooth")
        return self._posterior(x, mask, u, num_samples, generator, "smooth")[0]

    def filter(
        self, x: Tensor, mask: Tensor | None = None, u: Tensor | None = None,
        num_samples: int = 100, generator: torch.Generator | None = None,
    ) -> SRNNPosterior:
        """Samples of prod_t q(z_t | z_{t-1}, x_{1:t}) from the filtering network (inference="filter")."""
        self._check_method("filter", "filter")
        return self._posterior(x, mask, u, num_samples, generator, "filter")[0]

    def impute(
        self, x: Tensor, mask: Tensor | None = None, u: Tensor | None = None, method: str | None = None,
        num_samples: int = 100, generator: torch.Generator | None = None,
    ) -> Imputation:
        """Fill in missing entries from the posterior predictive, by Monte Carlo over q.

        For each of S posterior samples z^s (the encoder skips the missing steps), a missing entry
        has ``p(x_t | z^s_t, d^s_t)``; the imputation mixes them with equal weights:
        ``mean = (1/S) sum_s E[x_t | z^s_t]``, ``std^2 = (1/S) sum_s Var[x_t | z^s_t] + Var_s E[x_t | z^s_t]``.
        Observed entries are returned as given (std 0). ``method`` defaults to the model's
        ``config.inference`` (the only posterior its inference network provides).
        Returns mean, std (and probs for Bernoulli data) (B, T, D) and samples (S, B, T, D).
        """
        method = self.config.inference if method is None else method
        self._check_method(method, "impute")
        post, _ = self._posterior(x, mask, u, num_samples, generator, "impute")
        x0, observed, _ = self._inputs(x, mask, u, "impute")
        mix_mean = post.obs_means.mean(0)
        mix_var = post.obs_vars.mean(0) + post.obs_means.var(0, unbiased=False)
        mean = torch.where(observed, x0, mix_mean)
        std = torch.where(observed, torch.zeros_like(mix_var), mix_var.sqrt())
        probs = mean if self.config.likelihood == "bernoulli" else None
        return Imputation(mean=mean, std=std, probs=probs, samples=post.observations)

    def forecast(
        self,
        x_context: Tensor,
        horizon: int,
        u_future: Tensor | None = None,
        num_samples: int = 100,
        generator: torch.Generator | None = None,
        mask: Tensor | None = None,
        u: Tensor | None = None,
    ) -> Forecast:
        """Sample paths of the ``horizon`` steps after x_context (B, T, D).

        Each path draws z_{1:T} ~ q given the context (S = ``num_samples`` draws), then runs the
        generative model on: ``d_{t} = GRU(phi(u_t), d_{t-1})``, ``z_t ~ p(z_t | z_{t-1}, d_t)``,
        ``x_t ~ p(x_t | z_t, d_t)``, with ``u_t = x_{t-1}`` (the drawn frames) or u_future
        (B, H, k) for a model with inputs. Returns samples (S, B, H, D), their mean and std
        (B, H, D), and for Bernoulli data probs (B, H, D), the predictive probability of each entry.

        The argument order is the protocol's: ``forecast(x, 3, 5)`` gives u_future = 5 and is
        refused by name; pass the count by keyword, ``forecast(x, 3, num_samples=5)``.
        """
        check_future_controls_type(u_future, "SRNN.forecast")
        self._check_count(horizon, "horizon", "forecast")
        self._check_count(num_samples, "num_samples", "forecast")
        D = self.config.obs_dim
        if not isinstance(x_context, Tensor) or x_context.dim() != 3 or min(x_context.shape[:2]) < 1:
            got = tuple(x_context.shape) if isinstance(x_context, Tensor) else type(x_context).__name__
            raise ValueError(f"SRNN.forecast: x_context must have shape (B, T, {D}) with B >= 1 and T >= 1; got {got}")
        B = x_context.shape[0]
        if self.config.control_dim:
            u_future = self._check_u(u_future, B, horizon, "forecast", "u_future")
        elif u_future is not None:
            raise ValueError("SRNN.forecast: u_future is given but the model has control_dim = 0 (its inputs are x_{t-1})")
        post, run = self._posterior(x_context, mask, u, num_samples, generator, "forecast", name="x_context")
        S = num_samples
        last_x = post.observations[:, :, -1].reshape(S * B, 1, -1)
        with torch.no_grad():
            inputs = None if u_future is None else u_future.repeat(S, 1, 1)
            draws = self._generate(horizon, run.z_last, run.d_last, last_x, inputs, generator)
        samples = draws.observations.view(S, B, horizon, -1)
        probs = None
        if self.config.likelihood == "bernoulli":
            probs = torch.sigmoid(self._observation(torch.cat([draws.deterministic, draws.states], -1))[0])
            probs = probs.view(S, B, horizon, -1).mean(0)
        return Forecast(mean=samples.mean(0), std=samples.std(0, unbiased=False), samples=samples, probs=probs)

    def _transition(
        self, z: Tensor, d: Tensor, features: Tensor, generator: torch.Generator | None, noise: bool = True
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One generative step from z (N, z), d (N, d) and the input features (N, 1, F):
        ``d_t = GRU(features, d)``, ``z_t ~ p(z_t | z, d_t)``. Returns z_t, d_t and log p(z_t | z, d_t);
        without noise z_t is the prior mean and the log density 0."""
        d_t = self.forward_gru(features, d[None])[1][0]
        mp, lp = self.prior(self.prior.project(d_t), z)
        if not noise:
            return mp, d_t, z.new_zeros(z.shape[0])
        eps = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        z_t = mp + torch.exp(0.5 * lp) * eps
        return z_t, d_t, _gaussian_log_prob(z_t, mp, lp).sum(-1)

    def _generate(
        self, num_steps: int, z: Tensor, d: Tensor, x_prev: Tensor, u: Tensor | None, generator: torch.Generator | None
    ) -> SRNNSamples:
        """Run the generative model forward from states z (N, z), d (N, d) and the last frame (N, 1, D)."""
        zs, ds, xs = [], [], []
        for t in range(num_steps):
            feat = self.input_features(u[:, t : t + 1]) if u is not None else self.features(x_prev)
            z, d, _ = self._transition(z, d, feat, generator)
            x_t = self._draw_obs(*self._observation(torch.cat([d, z], -1)), generator)
            zs.append(z)
            ds.append(d)
            xs.append(x_t)
            x_prev = x_t[:, None]
        return SRNNSamples(torch.stack(zs, 1), torch.stack(ds, 1), torch.stack(xs, 1))

    def rollout_start(
        self,
        x: Tensor,
        u: Tensor | None = None,
        mask: Tensor | None = None,
        num_particles: int = 1,
        generator: torch.Generator | None = None,
        noise: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """Condition on the context x (B, T, D) driven by u (B, T, k): P = ``num_particles`` draws of
        (z_T, d_T) from the posterior, rows particle-major. Needs a model with inputs
        (``control_dim > 0``), whose future the actions drive. With ``noise=False``, z_T ends the
        q-mean path (each z_t at the mean of q given the previous one): the posterior has no closed
        form, so this stands in for its mean."""
        if not self.config.control_dim:
            raise ValueError("SRNN.rollout_start: the model has control_dim = 0 (its inputs are x_{t-1}); a simulator needs actions as inputs")
        check_num_particles(num_particles, "SRNN.rollout_start")
        _, run = self._posterior(x, mask, u, num_particles, generator, "rollout_start", noise)
        return run.z_last, run.d_last

    def rollout_step(
        self, carry: tuple[Tensor, Tensor], u: Tensor | None, generator: torch.Generator | None = None, noise: bool = True
    ) -> tuple[tuple[Tensor, Tensor], RolloutStep]:
        """d <- GRU(phi(u), d), z ~ p(z | z, d) (its mean without noise); observation: the predictive
        mean of x given (z, d) (the Bernoulli probabilities or the Gaussian mean); latent: z;
        log_prob: log p(z | z_prev, d), 0 without noise.

        ``carry`` = (z (N, state_dim), d (N, deterministic_dim)), as from :meth:`rollout_start` or
        the previous step; u (N, control_dim)."""
        c = self.config
        if not c.control_dim:
            raise ValueError("SRNN.rollout_step: the model has control_dim = 0 (its inputs are x_{t-1}); a simulator needs actions as inputs")
        if not (isinstance(carry, tuple) and len(carry) == 2 and all(isinstance(t, Tensor) for t in carry)
                and carry[0].dim() == 2 and carry[1].dim() == 2 and carry[0].shape[0] == carry[1].shape[0]
                and carry[0].shape[1] == c.state_dim and carry[1].shape[1] == c.deterministic_dim):
            if isinstance(carry, tuple):
                got: object = tuple(tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in carry)
            else:
                got = type(carry).__name__
            raise ValueError(
                f"SRNN.rollout_step: carry must be the (z, d) of rollout_start, z (N, {c.state_dim}) and "
                f"d (N, {c.deterministic_dim}) with the same N; got {got}"
            )
        z, d = carry
        u = check_step_controls(u, z.shape[0], self.config.control_dim, z, "SRNN.rollout_step")
        z, d, log_p = self._transition(z, d, self.input_features(u[:, None]), generator, noise)
        mean, _ = self._observation(torch.cat([d, z], -1))
        if self.config.likelihood == "bernoulli":
            mean = torch.sigmoid(mean)
        return (z, d), RolloutStep(mean, z, log_p)

    def sample(
        self,
        num_steps: int,
        batch_size: int = 1,
        u: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> SRNNSamples:
        """Draw (z, d, x) from the model from zero states: states (B, T, z), observations (B, T, D).

        ``u`` (B, T, k) drives a model with inputs; otherwise ``u_t`` is the drawn x_{t-1} (u_1 = 0).
        """
        self._check_count(num_steps, "num_steps", "sample")
        self._check_count(batch_size, "batch_size", "sample")
        if self.config.control_dim:
            u = self._check_u(u, batch_size, num_steps, "sample")
        elif u is not None:
            raise ValueError("SRNN.sample: u is given but the model has control_dim = 0 (its inputs are the drawn x_{t-1})")
        p = self._param()
        c = self.config
        z0 = p.new_zeros(batch_size, c.state_dim)
        d0 = p.new_zeros(batch_size, c.deterministic_dim)
        with torch.no_grad():
            return self._generate(num_steps, z0, d0, p.new_zeros(batch_size, 1, c.obs_dim), u, generator)

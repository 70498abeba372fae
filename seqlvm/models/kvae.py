"""KVAE: the Kalman Variational Auto-Encoder (Fraccaro, Kamronn, Paquet & Winther, NIPS 2017).

Two latent layers: a per-frame code ``a_t`` (dim_a) and a dynamics state ``z_t`` (dim_z)::

    p(x, a, z | u) = prod_t p(x_t | a_t) * p(a, z | u)
    z_0 ~ N(0, s0 I),   z_t = A_t z_{t-1} + B_t u_t + N(0, Q),   a_t = C_t z_t + N(0, R)
    (A_t, B_t, C_t) = sum_k alpha_t^k (A^k, B^k, C^k),   alpha_t = softmax(W h_t + b)
    h_t = LSTM(a~_{t-1}, h_{t-1}),   a~_{-1} learned,   a~_t = a_t if frame t is observed,
                                                          else its prediction C_t m_{t|t-1}

``p(x_t | a_t)`` is Bernoulli (binary frames) or Gaussian with a fixed pixel variance; the
recognition model ``q(a_t | x_t) = N(mean_t, diag var_t)`` has its variance capped at
``encoder_var_cap``. Given sampled codes, ``p(z | a, u)`` is exact (``seqlvm.kalman``): alpha_t
depends only on codes before t, so for fixed codes the model over (a, z) is a linear-Gaussian
SSM with time-varying parameters ``(B, T, n, n)``.

The bound, with ``a ~ q(a | x)`` reparameterised and ``z`` handled by ``z_term``::

    ELBO = E_q[ log p(x | a) - log q(a | x) + Z(a) ]
    Z(a) = log p(a_obs | u)                                   "exact": from the filter, no noise
         = log p(a_obs, z | u) - log p(z | a_obs, u),  z ~ p(z | a_obs, u) (FFBS)   "joint_sample"
         = log p(a_obs, z | u) - sum_t log N(z_t; m_{t|T}, P_{t|T}),  z_t ~ those   "marginal"

"joint_sample" equals "exact" for every draw (the prediction-error decomposition); "marginal"
(the reference code) is lower by KL(product of smoothed marginals || joint posterior) on average.

Normalisation (as the reference, so its learning rate and clip norm 150 mean the same): the loss
and every term are sums over the batch divided by the number of observed frames N_obs.
``loss = -(lambda * log p(x|a) - beta * KL) / N_obs`` with ``KL = log q(a|x) - Z(a)``;
``lambda = recon_weight`` (0.3) in training mode and 1 in eval mode, ``beta = kl_weight`` (the
Trainer's KL warm-up; 1 by default).

Shapes: frames ``x (B, T, C, H, W)`` in [0, 1], NaN where missing; ``mask (B, T)`` bool, True =
observed; controls ``u (B, T, control_dim)`` with ``u[:, 0]`` unused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from seqlvm.kalman import (
    FilterResult,
    LGSSMParams,
    SmootherResult,
    kalman_filter,
    kalman_smoother,
    sample_posterior,
)
from seqlvm.kalman.linalg import matvec, safe_cholesky, sample_gaussian, sym
from seqlvm.models.base import (
    ELBO, Forecast, Imputation, RolloutStep, SequenceModel, check_future_controls_type, check_num_particles,
    check_step_controls, gaussian_step,
)
from seqlvm.nn import FrameDecoder, FrameEncoder, GaussianHead, check_frame_shape

__all__ = ["KVAE", "KVAEConfig", "KVAECarry", "KVAEPosterior", "KVAESamples", "AlphaNetwork"]

Z_TERMS = ("exact", "joint_sample", "marginal")
DECODERS = ("bernoulli", "gaussian")
NETWORK_DTYPES = ("float32", "bfloat16")
LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class KVAEConfig:
    """Sizes and options of a :class:`KVAE`; the defaults are the reference's (models.md §2.2-2.5).

    obs_shape:   (C, H, W) of the frames, H and W multiples of 8; ``None`` until training fills
                 it in from the data file (the model itself needs it).
    control_dim: size of u_t (0: no controls; the reference's u is always zero).
    dim_a:       size of the code a_t (2).
    dim_z:       size of the state z_t (4).
    num_mixtures: K, the number of base matrices (3); with K = 1 alpha is 1 and no LSTM is built.
    alpha_hidden: LSTM units of the alpha-network (50).
    transition_noise: Q = transition_noise * I, a variance (0.08).
    emission_noise:   R = emission_noise * I, a variance (0.03).
    init_noise:       Sigma_0 = init_noise * I, the prior variance of z_0 (20); its mean is 0.
    encoder_var_cap:  upper bound of the encoder variance (0.03, the level of R).
    init_kf_std:      standard deviation of the initial entries of B^k and C^k (0.05); A^k = I.
    decoder:         ``"bernoulli"`` (binary frames; non-binary x is an error) or ``"gaussian"``.
    pixel_variance:  variance of the Gaussian decoder (0.1).
    conv_channels:   feature maps of the frame encoder and decoder (32).
    recon_weight:    lambda, the weight of log p(x|a) in the loss in training mode (0.3); eval
                     mode always uses 1.
    z_term:          ``"exact"``, ``"joint_sample"`` or ``"marginal"`` (module docstring).
    method:          Kalman method, ``"sequential"`` or ``"parallel"``.
    network_dtype:   ``"float32"``, or ``"bfloat16"`` to run the frame encoder and decoder under
                     autocast (about 3x faster on CPUs with bf16 units; the Kalman part and the
                     log-densities stay in the model's dtype).
    """

    obs_shape: tuple[int, int, int] | None = None
    control_dim: int = 0
    dim_a: int = 2
    dim_z: int = 4
    num_mixtures: int = 3
    alpha_hidden: int = 50
    transition_noise: float = 0.08
    emission_noise: float = 0.03
    init_noise: float = 20.0
    encoder_var_cap: float = 0.03
    init_kf_std: float = 0.05
    decoder: str = "bernoulli"
    pixel_variance: float = 0.1
    conv_channels: int = 32
    recon_weight: float = 0.3
    z_term: str = "exact"
    method: str = "sequential"
    network_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.obs_shape is not None:
            if not isinstance(self.obs_shape, (tuple, list)):
                raise ValueError(f"KVAEConfig: obs_shape must be (C, H, W); got {self.obs_shape!r}")
            self.obs_shape = check_frame_shape(tuple(self.obs_shape), "KVAEConfig: obs_shape")
        for name in ("dim_a", "dim_z", "num_mixtures", "alpha_hidden", "conv_channels"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"KVAEConfig: {name} must be an int >= 1; got {v!r}")
        if not isinstance(self.control_dim, int) or self.control_dim < 0:
            raise ValueError(f"KVAEConfig: control_dim must be an int >= 0; got {self.control_dim!r}")
        for name in ("transition_noise", "emission_noise", "init_noise", "encoder_var_cap", "pixel_variance", "recon_weight"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"KVAEConfig: {name} must be a number > 0; got {v!r}")
        if not isinstance(self.init_kf_std, (int, float)) or self.init_kf_std < 0:
            raise ValueError(f"KVAEConfig: init_kf_std must be a number >= 0; got {self.init_kf_std!r}")
        for name, options in (("decoder", DECODERS), ("z_term", Z_TERMS), ("method", ("sequential", "parallel")), ("network_dtype", NETWORK_DTYPES)):
            if getattr(self, name) not in options:
                raise ValueError(f"KVAEConfig: {name} must be one of {options}; got {getattr(self, name)!r}")


class AlphaNetwork(nn.Module):
    """The dynamics parameter network: ``alpha_t = softmax(W LSTM(a~_{t-1}, h_{t-1}) + b)``.

    One ``nn.LSTM`` serves whole sequences (all codes known) and single steps (the code depends on
    the filter, or on the model's own prediction when generating): both carry the (h, c) state.
    """

    def __init__(self, dim_a: int, hidden: int, num_mixtures: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim_a, hidden, batch_first=True)
        self.out = nn.Linear(hidden, num_mixtures)

    def forward(self, inputs: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """inputs (N, L, dim_a), the codes a~ before each step -> alpha (N, L, K), new (h, c)."""
        h, state = self.lstm(inputs, state)
        return torch.softmax(self.out(h), dim=-1), state


class Dynamics(NamedTuple):
    """The LGSSM over the codes that the alpha-network chose for one batch.

    alpha:  (B, T, K) mixture weights.
    params: LGSSMParams with A (B, T, n, n), C (B, T, dim_a, n), B (B, T, n, k) or None, and the
            fixed Q, R, m0, P0.
    state:  the alpha-LSTM's (h, c) after step T-1 (None when K = 1).
    a_next: (B, dim_a) the code a~_{T-1} that drives alpha_T: a_{T-1}, or its prediction when
            frame T-1 is missing.
    """

    alpha: Tensor
    params: LGSSMParams
    state: tuple[Tensor, Tensor] | None
    a_next: Tensor


class KVAEPosterior(NamedTuple):
    """Posterior over the dynamics given the encoded frames (``KVAE.filter`` / ``KVAE.smooth``).

    a:        (B, T, dim_a) encoder means of the frames (0 where missing).
    a_var:    (B, T, dim_a) encoder variances.
    observed: (B, T) bool, the frames conditioned on.
    dynamics: the alpha-weights and the LGSSM they define (:class:`Dynamics`).
    kalman:   FilterResult or SmootherResult of z given the observed codes.
    """

    a: Tensor
    a_var: Tensor
    observed: Tensor
    dynamics: Dynamics
    kalman: FilterResult | SmootherResult


class KVAESamples(NamedTuple):
    """Generated sequences, field names as ``seqlvm.kalman.PriorSamples``: states z (B, T, n) and
    observations (B, T, C, H, W), the decoder means of the generated codes."""

    states: Tensor
    observations: Tensor


class KVAECarry(NamedTuple):
    """The state of N particles of a KVAE simulator (``rollout_start`` / ``rollout_step``).

    z:     (N, dim_z) the state z_t.
    a:     (N, dim_a) the code a_t, the alpha-LSTM's input at the next step.
    state: the alpha-LSTM's (h, c), each (1, N, alpha_hidden), or None when K = 1.
    """

    z: Tensor
    a: Tensor
    state: tuple[Tensor, Tensor] | None


class KVAE(SequenceModel):
    """The Kalman VAE; see the module docstring for the model, the bound and the shapes.

    Parameters: the frame encoder (``encoder``, ``a_head``), the decoder (``decoder``), the
    alpha-network (``alpha_net``; absent when K = 1) and the base matrices ``A_k (K, n, n)``,
    ``C_k (K, dim_a, n)``, ``B_k (K, n, k)`` and the initial LSTM input ``a_init (dim_a,)``.
    Q, R and the prior of z_0 are fixed buffers. Staged training freezes ``alpha_net.*``.
    """

    config_class = KVAEConfig

    train_defaults: ClassVar[dict[str, Any]] = {
        "batch_size": 32,
        "epochs": 80,
        "optimizer": "adam",
        "lr": 0.007,
        "lr_schedule": "step",
        "lr_step_epochs": 20,
        "lr_step_factor": 0.85,
        "grad_clip": 150.0,
        "freeze": {"alpha_net.*": 10},
        "kl_warmup_steps": 500,
        "kl_weight_start": 0.0,
    }
    """The reference training recipe (models.md §2.5) as ``TrainConfig`` fields: the defaults of
    ``seqlvm train kvae`` without ``--config`` (``seqlvm.train.run.default_config``; ``--set``
    still overrides any of them). Adam at lr 0.007, x0.85 every 20 epochs (a staircase), batch 32,
    80 epochs, global gradient-norm clip 150, the alpha-LSTM frozen for epochs 0-9 (so a model
    with ``num_mixtures = 1``, which has no alpha-LSTM, needs ``--set 'freeze={}'``). lambda = 0.3
    in training and 1 at test is ``KVAEConfig.recon_weight``'s default. Ours, not the reference's:
    the KL weight rises from 0 to 1 over the first 500 steps, without which our runs collapsed
    in the first epoch (docs/kvae.md). configs/kvae_box.toml repeats these values (a test keeps
    the two equal) and adds the box data's protocol."""

    def __init__(self, config: KVAEConfig) -> None:
        super().__init__(config)
        if config.obs_shape is None:
            raise ValueError("KVAE: config.obs_shape is None; set it to the frames' (C, H, W), e.g. (1, 32, 32)")
        K, n, d, k = config.num_mixtures, config.dim_z, config.dim_a, config.control_dim
        self.encoder = FrameEncoder(config.obs_shape, config.conv_channels)
        self.a_head = GaussianHead(self.encoder.out_features, d, max_var=config.encoder_var_cap)
        self.decoder = FrameDecoder(d, config.obs_shape, config.conv_channels)
        self.alpha_net = AlphaNetwork(d, config.alpha_hidden, K) if K > 1 else None
        self.A_k = nn.Parameter(torch.eye(n).repeat(K, 1, 1))
        self.C_k = nn.Parameter(config.init_kf_std * torch.randn(K, d, n))
        self.B_k = nn.Parameter(config.init_kf_std * torch.randn(K, n, k)) if k else None
        self.a_init = nn.Parameter(torch.zeros(d))
        self.register_buffer("Q", config.transition_noise * torch.eye(n))
        self.register_buffer("R", config.emission_noise * torch.eye(d))
        self.register_buffer("m0", torch.zeros(n))
        self.register_buffer("P0", config.init_noise * torch.eye(n))

    # -- inputs --------------------------------------------------------------------------------
    def _inputs(
        self, x: Tensor, mask: Tensor | None, u: Tensor | None, fn: str
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Check x (B, T, C, H, W), mask (B, T) and u; return x with missing frames zeroed, the
        observed-frame mask (B, T) and u, in the model's dtype and device.

        A frame is missing where the mask says so or where it holds any NaN.
        """
        shape = self.config.obs_shape
        if not isinstance(x, Tensor) or x.dim() != 5 or tuple(x.shape[2:]) != shape:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"KVAE.{fn}: x must have shape (B, T, {', '.join(map(str, shape))}); got {got}")
        B, T = x.shape[:2]
        if B < 1 or T < 1:
            raise ValueError(f"KVAE.{fn}: x must hold at least one sequence of one frame; got {tuple(x.shape)}")
        dtype, device = self.A_k.dtype, self.A_k.device
        x = x.to(dtype=dtype, device=device)
        observed = ~torch.isnan(x).flatten(2).any(-1)
        if mask is not None:
            if not isinstance(mask, Tensor) or tuple(mask.shape) != (B, T):
                got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
                raise ValueError(f"KVAE.{fn}: mask must have shape (B, T) = ({B}, {T}), one flag per frame; got {got}")
            observed = observed & mask.to(device=device, dtype=torch.bool)
        x = torch.where(observed[..., None, None, None], x, torch.zeros((), dtype=dtype, device=device))
        if self.config.decoder == "bernoulli" and bool(((x != 0) & (x != 1)).any()):
            bad = x[(x != 0) & (x != 1)][0].item()
            raise ValueError(
                f"KVAE.{fn}: the Bernoulli decoder needs binary frames (values 0 or 1); x holds {bad:g}. "
                "Threshold the frames (x > 0.5) or use decoder='gaussian'"
            )
        k = self.config.control_dim
        if k and u is None:
            raise ValueError(f"KVAE.{fn}: the model has control_dim = {k}, so u of shape ({B}, {T}, {k}) is required")
        if u is not None:
            if not k:
                raise ValueError(f"KVAE.{fn}: u is given but the model has control_dim = 0")
            if not isinstance(u, Tensor) or tuple(u.shape) != (B, T, k):
                got = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
                raise ValueError(f"KVAE.{fn}: u must have shape ({B}, {T}, {k}); got {got}")
            u = u.to(dtype=dtype, device=device)
        return x, observed, u

    # -- the networks ----------------------------------------------------------------------------
    def _network_precision(self, device: torch.device) -> torch.autocast:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.config.network_dtype == "bfloat16")

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(a_t | x_t): frames (B, T, C, H, W) -> mean, var (B, T, dim_a)."""
        B, T = x.shape[:2]
        with self._network_precision(x.device):
            features = self.encoder(x.flatten(0, 1))
        mean, var = self.a_head(features.to(x.dtype))
        return mean.view(B, T, -1), var.view(B, T, -1)

    def decode(self, a: Tensor) -> Tensor:
        """Codes (..., dim_a) -> pixel logits (..., C, H, W) (Bernoulli logits, or the logit of
        the Gaussian decoder's mean)."""
        lead = a.shape[:-1]
        with self._network_precision(a.device):
            logits = self.decoder(a.reshape(-1, a.shape[-1]))
        return logits.to(a.dtype).reshape(*lead, *self.config.obs_shape)

    def frame_log_likelihood(self, x: Tensor, a: Tensor) -> Tensor:
        """log p(x_t | a_t) summed over pixels: x (..., C, H, W), a (..., dim_a) -> (...)."""
        logits = self.decode(a)
        if self.config.decoder == "bernoulli":
            # BCE with logits: the stable form of the reference's clipped log-probabilities.
            ll = -nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
        else:
            v = self.config.pixel_variance
            ll = -0.5 * ((x - torch.sigmoid(logits)) ** 2 / v + math.log(2 * math.pi * v))
        return ll.flatten(-3).sum(-1)

    def frame_means(self, a: Tensor) -> Tensor:
        """E[x_t | a_t]: codes (..., dim_a) -> (..., C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decode(a))

    def _mix(self, alpha: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """alpha (..., K) -> A (..., n, n), C (..., dim_a, n), B (..., n, k) or None."""
        A = torch.einsum("...k,kij->...ij", alpha, self.A_k)
        C = torch.einsum("...k,kij->...ij", alpha, self.C_k)
        Bm = None if self.B_k is None else torch.einsum("...k,kij->...ij", alpha, self.B_k)
        return A, C, Bm

    def _alpha(self, inputs: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """alpha (N, L, K) for the codes a~ (N, L, dim_a) that precede each step."""
        if self.alpha_net is None:
            return inputs.new_ones(*inputs.shape[:2], 1), None
        return self.alpha_net(inputs, state)

    def dynamics(self, a: Tensor, observed: Tensor | None = None, u: Tensor | None = None) -> Dynamics:
        """The alpha-weights and the LGSSM they define for codes a (B, T, dim_a).

        With every frame observed the LSTM reads ``[a_init, a_0, ..., a_{T-2}]`` in one call.
        Otherwise the input after a missing frame t is its prediction ``C_t m_{t|t-1}``, which
        depends on the filter so far: a step-by-step loop runs the alpha-LSTM alongside one
        Kalman update per step (``seqlvm.kalman.kalman_filter`` on that single step).
        observed: (B, T) bool or None (all observed).
        """
        B, T, _ = a.shape
        first = self.a_init.expand(B, 1, -1)
        if observed is None or bool(observed.all()):
            alpha, state = self._alpha(torch.cat([first, a[:, :-1]], dim=1), None)
            return Dynamics(alpha, self._params(alpha), state, a[:, -1])
        m, P = self.m0.expand(B, -1), self.P0.expand(B, -1, -1)
        inputs, alphas, state = first, [], None
        # unbind, not indexing per step: see seqlvm.kalman.params.per_step
        a_steps, obs_steps = a.unbind(1), observed.unbind(1)
        for t in range(T):
            alpha_t, state = self._alpha(inputs, state)
            A, C, Bm = self._mix(alpha_t[:, 0])
            if t > 0:
                m = matvec(A, m) + (matvec(Bm, u[:, t]) if Bm is not None else 0.0)
                P = sym(A @ P @ A.transpose(-1, -2) + self.Q)
            a_t, obs_t = a_steps[t], obs_steps[t]
            inputs = torch.where(obs_t[:, None], a_t, matvec(C, m)).unsqueeze(1)
            alphas.append(alpha_t)
            if t < T - 1 and bool(obs_t.any()):
                step = LGSSMParams(A, C, self.Q, self.R, m, P)
                f = kalman_filter(step, a_t[:, None], obs_t[:, None], method=self.config.method)
                m, P = f.means[:, 0], f.covs[:, 0]
        alpha = torch.cat(alphas, dim=1)
        return Dynamics(alpha, self._params(alpha), state, inputs[:, 0])

    def _params(self, alpha: Tensor) -> LGSSMParams:
        A, C, Bm = self._mix(alpha)
        return LGSSMParams(A, C, self.Q, self.R, self.m0, self.P0, Bm)

    # -- the bound -------------------------------------------------------------------------------
    def _log_p_codes(self, dyn: Dynamics, a: Tensor, observed: Tensor, u: Tensor | None) -> Tensor:
        """Z(a) of the module docstring for ``config.z_term``, per sequence (B,)."""
        method, mask = self.config.method, observed
        if self.config.z_term == "exact":
            return kalman_filter(dyn.params, a, mask, u, method).log_likelihood
        if self.config.z_term == "joint_sample":
            draw = sample_posterior(dyn.params, a, mask, u=u, method=method)
            return self.joint_log_density(dyn.params, a, draw.samples[0], observed, u) - draw.log_prob[0]
        post = kalman_smoother(dyn.params, a, mask, u, method)
        L = safe_cholesky(post.covs)
        eps = torch.randn_like(post.means)
        z = post.means + matvec(L, eps)
        log_q = -0.5 * (eps.pow(2).sum(-1) + z.shape[-1] * LOG_2PI) - torch.log(L.diagonal(dim1=-2, dim2=-1)).sum(-1)
        return self.joint_log_density(dyn.params, a, z, observed, u) - log_q.sum(1)

    def joint_log_density(
        self, params: LGSSMParams, a: Tensor, z: Tensor, observed: Tensor, u: Tensor | None
    ) -> Tensor:
        """log p(a_obs, z | u) = log N(z_0; m0, P0) + sum_{t>=1} log N(z_t; A_t z_{t-1} + B_t u_t, Q)
        + sum_t mask_t log N(a_t; C_t z_t, R), per sequence (B,), for a (B, T, dim_a), z (B, T, n)."""
        # The variances from the buffers, not the config: they must be the (rounded) values the
        # filter used, or the z-terms disagree by the rounding of 0.08 to the buffers' dtype.
        q, r, s0 = self.Q[0, 0], self.R[0, 0], self.P0[0, 0]

        def iso(res: Tensor, var: Tensor) -> Tensor:  # log N(res; 0, var I) over the last dim
            return -0.5 * (res.pow(2).sum(-1) / var + res.shape[-1] * (LOG_2PI + torch.log(var)))

        mean = matvec(params.A[:, 1:], z[:, :-1])
        if params.B is not None:
            mean = mean + matvec(params.B[:, 1:], u[:, 1:])
        emission = iso(a - matvec(params.C, z), r) * observed
        return iso(z[:, 0] - self.m0, s0) + iso(z[:, 1:] - mean, q).sum(1) + emission.sum(1)

    def _log_q(self, a: Tensor, mean: Tensor, var: Tensor) -> Tensor:
        """log q(a_t | x_t) summed over the code, (B, T)."""
        return -0.5 * (((a - mean) ** 2 / var) + torch.log(var) + LOG_2PI).sum(-1)

    def elbo(self, x: Tensor, mask: Tensor | None = None, u: Tensor | None = None) -> ELBO:
        """The bound of the module docstring, per observed frame.

        terms (each summed over the batch and divided by N_obs): ``elbo`` (lambda = 1),
        ``reconstruction`` = log p(x|a), ``log_q_a`` = log q(a|x), ``log_p_a`` = Z(a),
        ``kl`` = log q(a|x) - Z(a).
        """
        x, observed, u = self._inputs(x, mask, u, "elbo")
        mean, var = self.encode(x)
        a = mean + var.sqrt() * torch.randn_like(mean)
        a = a * observed[..., None]  # a missing frame's code never enters the filter
        obs = observed.to(x.dtype)
        recon = (self.frame_log_likelihood(x, a) * obs).sum()
        log_q = (self._log_q(a, mean, var) * obs).sum()
        log_p = self._log_p_codes(self.dynamics(a, observed, u), a, observed, u).sum()
        n_obs = obs.sum().clamp_min(1.0)
        kl = log_q - log_p
        weight = self.config.recon_weight if self.training else 1.0
        loss = -(weight * recon - self.kl_weight * kl) / n_obs
        terms = {
            "elbo": (recon - kl) / n_obs,
            "reconstruction": recon / n_obs,
            "kl": kl / n_obs,
            "log_q_a": log_q / n_obs,
            "log_p_a": log_p / n_obs,
        }
        return ELBO(loss, {k: v.detach() for k, v in terms.items()})

    def log_likelihood(
        self, x: Tensor, mask: Tensor | None = None, u: Tensor | None = None, num_samples: int = 10
    ) -> Tensor:
        """Importance-weighted estimate of log p(x_obs | u), per sequence (B,).

        ``log (1/K) sum_k p(x|a_k) p(a_k|u) / q(a_k|x)`` with ``a_k ~ q(a|x)`` and log p(a_k|u)
        exact from the filter; a lower bound that tightens as K = num_samples grows.
        """
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"KVAE.log_likelihood: num_samples must be an int >= 1; got {num_samples!r}")
        x, observed, u = self._inputs(x, mask, u, "log_likelihood")
        S, B = num_samples, x.shape[0]
        mean, var = self.encode(x)
        a = (mean + var.sqrt() * torch.randn(S, *mean.shape, dtype=mean.dtype, device=mean.device)) * observed[..., None]
        a = a.flatten(0, 1)
        obs = observed.repeat(S, 1)
        u_s = None if u is None else u.repeat(S, 1, 1)
        dyn = self.dynamics(a, obs, u_s)
        log_p = kalman_filter(dyn.params, a, obs, u_s, self.config.method).log_likelihood
        recon = (self.frame_log_likelihood(x.repeat(S, 1, 1, 1, 1), a) * obs).sum(1)
        log_q = (self._log_q(a, mean.repeat(S, 1, 1), var.repeat(S, 1, 1)) * obs).sum(1)
        w = (recon + log_p - log_q).view(S, B)
        return torch.logsumexp(w, dim=0) - math.log(S)

    # -- posteriors ------------------------------------------------------------------------------
    def _posterior(self, x: Tensor, mask: Tensor | None, u: Tensor | None, smooth: bool, fn: str) -> KVAEPosterior:
        x, observed, u = self._inputs(x, mask, u, fn)
        mean, var = self.encode(x)
        a = mean * observed[..., None]
        dyn = self.dynamics(a, observed, u)
        run = kalman_smoother if smooth else kalman_filter
        return KVAEPosterior(a, var, observed, dyn, run(dyn.params, a, observed, u, self.config.method))

    def filter(self, x: Tensor, mask: Tensor | None = None, u: Tensor | None = None) -> KVAEPosterior:
        """p(z_t | a_{0:t}) given the encoder means of the observed frames (kalman: FilterResult)."""
        return self._posterior(x, mask, u, False, "filter")

    def smooth(self, x: Tensor, mask: Tensor | None = None, u: Tensor | None = None) -> KVAEPosterior:
        """p(z_t | a) given the encoder means of the observed frames (kalman: SmootherResult)."""
        return self._posterior(x, mask, u, True, "smooth")

    def impute_codes(
        self, a: Tensor, observed: Tensor, u: Tensor | None = None, method: str = "smooth"
    ) -> Tensor:
        """Codes of every frame from the observed ones: ``a^_t = C_t m_{t|T}`` (``"smooth"``) or
        ``C_t m_{t|t}`` (``"filter"``; for a missing frame the open-loop prediction).

        a (B, T, dim_a) encoder means (values at missing frames are ignored), observed (B, T)
        bool, u (B, T, k) or None -> (B, T, dim_a). The codes do not depend on the mask, so a
        caller imputing one batch under many masks encodes the frames once.
        """
        if method not in ("smooth", "filter"):
            raise ValueError(f"KVAE.impute: method must be 'smooth' or 'filter'; got {method!r}")
        a = a * observed[..., None]
        dyn = self.dynamics(a, observed, u)
        run = kalman_smoother if method == "smooth" else kalman_filter
        return matvec(dyn.params.C, run(dyn.params, a, observed, u, self.config.method).means)

    def impute(
        self, x: Tensor, mask: Tensor | None = None, u: Tensor | None = None, method: str = "smooth"
    ) -> Imputation:
        """Fill in missing frames by decoding ``a^_t = C_t m_t`` (models.md §2.6, :meth:`impute_codes`).

        The observed frames are encoded to their means. Returns, with shapes (B, T, C, H, W):
        ``mean`` = x on observed frames and the decoded mean elsewhere; ``probs`` (Bernoulli) =
        the decoded probabilities of every frame (observed ones are the model's
        reconstruction); ``std`` (Gaussian) = the decoder's pixel std on missing frames, 0 on
        observed ones.
        """
        if method not in ("smooth", "filter"):
            raise ValueError(f"KVAE.impute: method must be 'smooth' or 'filter'; got {method!r}")
        x, observed, u = self._inputs(x, mask, u, "impute")
        decoded = self.frame_means(self.impute_codes(self.encode(x)[0], observed, u, method))
        keep = observed[..., None, None, None]
        x_clean = torch.where(keep, x, decoded)
        if self.config.decoder == "bernoulli":
            return Imputation(mean=x_clean, probs=decoded)
        std = (~keep).to(decoded.dtype).expand_as(decoded) * math.sqrt(self.config.pixel_variance)
        return Imputation(mean=x_clean, std=std)

    # -- generation ------------------------------------------------------------------------------
    def _transition(
        self, carry: KVAECarry, u: Tensor | None, noise: bool, generator: torch.Generator | None
    ) -> tuple[KVAECarry, Tensor | None]:
        """One step of the generative model from ``carry``: ``alpha = LSTM(a, h)``,
        ``z' = A z + B u (+ N(0, Q))``, ``a' = C z' (+ N(0, R))``, with u (N, k) or None.

        Returns the new carry and, with noise, the log density of the draw
        ``log N(z'; A z + B u, Q) + log N(a'; C z', R)`` (N,); None without noise.
        """
        alpha, state = self._alpha(carry.a.unsqueeze(1), carry.state)
        A, C, Bm = self._mix(alpha[:, 0])
        z = matvec(A, carry.z)
        if Bm is not None:
            z = z + matvec(Bm, u)
        if not noise:
            return KVAECarry(z, matvec(C, z), state), None
        z, log_z = sample_gaussian(z, torch.linalg.cholesky(self.Q), 1, generator)
        a, log_a = sample_gaussian(matvec(C, z), torch.linalg.cholesky(self.R), 1, generator)
        return KVAECarry(z, a, state), log_z + log_a

    def _rollout(
        self, carry: KVAECarry, steps: int, u: Tensor | None, noise: bool, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """``steps`` steps of :meth:`_transition` from ``carry`` (N particles) under u (N, steps, k)
        or None; returns codes (N, steps, dim_a) and states (N, steps, n)."""
        codes, states = [], []
        for t in range(steps):
            carry, _ = self._transition(carry, None if u is None else u[:, t], noise, generator)
            codes.append(carry.a)
            states.append(carry.z)
        return torch.stack(codes, 1), torch.stack(states, 1)

    def _start(
        self, post: KVAEPosterior, num_particles: int, generator: torch.Generator | None, noise: bool = True
    ) -> KVAECarry:
        """P = num_particles draws ``z_{T-1} ~ N(m_{T-1|T-1}, P_{T-1|T-1})`` per sequence of a filtered
        context (copies of the mean without noise), with the alpha-LSTM state and the code that
        drive the next step (rows p·B + b)."""
        P, dyn = num_particles, post.dynamics
        z, _ = gaussian_step(post.kalman.means[:, -1], safe_cholesky(post.kalman.covs[:, -1]), P, generator, noise)
        state = None if dyn.state is None else (dyn.state[0].repeat(1, P, 1), dyn.state[1].repeat(1, P, 1))
        return KVAECarry(z, dyn.a_next.repeat(P, 1), state)

    def rollout_start(
        self,
        x: Tensor,
        u: Tensor | None = None,
        mask: Tensor | None = None,
        num_particles: int = 1,
        generator: torch.Generator | None = None,
        noise: bool = True,
    ) -> KVAECarry:
        """Filter the context x (B, T, C, H, W) (encoder means, as :meth:`filter`) and draw
        P = ``num_particles`` states ``z_{T-1} ~ N(m_{T-1|T-1}, P_{T-1|T-1})`` per sequence
        (``noise=False``: P copies of ``m_{T-1|T-1}``, the start of :meth:`forecast`'s mean).

        Returns the :class:`KVAECarry` of N = P·B particles, row ``p·B + b`` a draw for sequence b.
        """
        check_num_particles(num_particles, "KVAE.rollout_start")
        return self._start(self._posterior(x, mask, u, False, "rollout_start"), num_particles, generator, noise)

    def rollout_step(
        self, carry: KVAECarry, u: Tensor | None, generator: torch.Generator | None = None, noise: bool = True
    ) -> tuple[KVAECarry, RolloutStep]:
        """One step of every particle (:meth:`_transition`, noisy unless ``noise=False``) under u (N, k)
        (None without controls).

        RolloutStep: observation = the decoder mean ``E[x' | a']`` (N, C, H, W); latent = ``[z', a']``
        (N, dim_z + dim_a), the whole state of the step; log_prob =
        ``log N(z'; A z + B u, Q) + log N(a'; C z', R)`` (N,), 0 without noise.
        """
        n = self.config.dim_z
        if not (isinstance(carry, KVAECarry) and carry.z.dim() == 2 and carry.z.shape[1] == n):
            raise ValueError(f"KVAE.rollout_step: carry must be the KVAECarry of rollout_start, z (N, {n}); got {type(carry).__name__}")
        u = check_step_controls(u, carry.z.shape[0], self.config.control_dim, carry.z, "KVAE.rollout_step")
        carry, log_prob = self._transition(carry, u, noise, generator)
        if log_prob is None:
            log_prob = carry.z.new_zeros(carry.z.shape[0])
        return carry, RolloutStep(self.frame_means(carry.a), torch.cat([carry.z, carry.a], -1), log_prob)

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
        """Predict ``horizon`` frames after x_context (B, T, C, H, W).

        ``mean`` (B, H, C, H, W): the decoded deterministic rollout ``g(a^_h)``, ``g`` = the decoder
        mean ``E[x | a]``, from the last filtered mean ``m_{T-1|T-1}`` without noise (the
        reference's generation). ``samples`` (S, B, H, C, H, W), when num_samples = S > 0: decoder
        means ``g(a_h^s)`` along S stochastic paths started from
        ``z_{T-1} ~ N(m_{T-1|T-1}, P_{T-1|T-1})`` with Q and R noise (pixel noise not added).
        u_future (B, H, k) drives the horizon when the model has controls; it is the third
        argument, so a sample count goes by keyword (``forecast(x, 3, num_samples=5)``).

        Bernoulli decoder: ``probs`` = ``mean`` (the pixel probabilities of the mean path) and
        ``std`` None: the pixels are binary, ask for samples to get quantiles.

        Gaussian decoder, ``p(x | a) = N(g(a), v I)`` with v = ``pixel_variance``: ``std``
        (B, H, C, H, W) is the predictive standard deviation of each pixel by the law of total
        variance, ``Var[x_h] = E[Var[x_h | a_h]] + Var[E[x_h | a_h]] = v + Var[g(a_h)]``:

        - S > 0: ``std = sqrt(v + (1/S) sum_s (g(a_h^s) - gbar_h)^2)``, gbar_h the mean of the
          samples (the spread is measured about the samples' mean, not about ``mean``);
        - S = 0: no draws of the code, so ``Var[g(a_h)]`` is unknown and left out:
          ``std = sqrt(v)``, the decoder's noise around the mean path, a lower bound of the
          predictive std that does not grow with h (ask for samples to include the code's spread).

        ``quantile`` uses the samples when there are any (quantiles of ``g(a_h)``, without the
        pixel noise), else ``mean + z_q std``.
        """
        check_future_controls_type(u_future, "KVAE.forecast")
        if not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"KVAE.forecast: horizon must be an int >= 1; got {horizon!r}")
        if not isinstance(num_samples, int) or num_samples < 0:
            raise ValueError(f"KVAE.forecast: num_samples must be an int >= 0; got {num_samples!r}")
        x_context, observed, u = self._inputs(x_context, mask, u, "forecast")
        B = x_context.shape[0]
        u_future = self._future_controls(u_future, B, horizon, "forecast")
        post = self._posterior(x_context, observed, u, False, "forecast")
        dyn = post.dynamics
        start = KVAECarry(post.kalman.means[:, -1], dyn.a_next, dyn.state)
        codes, _ = self._rollout(start, horizon, u_future, False, generator)
        mean = self.frame_means(codes)
        samples = None
        if num_samples:
            S = num_samples
            u_s = None if u_future is None else u_future.repeat(S, 1, 1)
            codes_s, _ = self._rollout(self._start(post, S, generator), horizon, u_s, True, generator)
            samples = self.frame_means(codes_s).view(S, B, *mean.shape[1:])
        if self.config.decoder == "bernoulli":
            return Forecast(mean=mean, samples=samples, probs=mean)
        spread = torch.zeros_like(mean) if samples is None else samples.var(0, unbiased=False)
        std = (spread + self.config.pixel_variance).sqrt()
        return Forecast(mean=mean, std=std, samples=samples)

    def _future_controls(self, u: Tensor | None, batch: int, steps: int, fn: str) -> Tensor | None:
        k = self.config.control_dim
        if not k:
            if u is not None:
                raise ValueError(f"KVAE.{fn}: u is given but the model has control_dim = 0")
            return None
        if u is None:
            raise ValueError(f"KVAE.{fn}: the model has control_dim = {k}, so controls of shape ({batch}, {steps}, {k}) are required")
        if not isinstance(u, Tensor) or tuple(u.shape) != (batch, steps, k):
            got = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
            raise ValueError(f"KVAE.{fn}: controls must have shape ({batch}, {steps}, {k}); got {got}")
        return u.to(self.A_k)

    def sample(
        self,
        num_steps: int,
        batch_size: int = 1,
        u: Tensor | None = None,
        generator: torch.Generator | None = None,
        noise: bool = True,
    ) -> KVAESamples:
        """Generate from the prior: ``z_0 ~ N(0, s0 I)``, then the rollout with noise (``noise=False``:
        z_0 still drawn, then deterministic). u: (batch_size, num_steps, k); ``u[:, 0]`` unused."""
        for name, v in (("num_steps", num_steps), ("batch_size", batch_size)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"KVAE.sample: {name} must be an int >= 1; got {v!r}")
        u = self._future_controls(u, batch_size, num_steps, "sample")
        dtype, device = self.A_k.dtype, self.A_k.device
        n = self.config.dim_z
        z0 = self.m0 + math.sqrt(self.config.init_noise) * torch.randn(batch_size, n, dtype=dtype, device=device, generator=generator)
        alpha, state = self._alpha(self.a_init.expand(batch_size, 1, -1), None)
        _, C, _ = self._mix(alpha[:, 0])
        a0 = matvec(C, z0)
        if noise:
            a0 = a0 + math.sqrt(self.config.emission_noise) * torch.randn(a0.shape, dtype=dtype, device=device, generator=generator)
        codes, states = [a0.unsqueeze(1)], [z0.unsqueeze(1)]
        if num_steps > 1:
            rest_a, rest_z = self._rollout(KVAECarry(z0, a0, state), num_steps - 1, None if u is None else u[:, 1:], noise, generator)
            codes.append(rest_a)
            states.append(rest_z)
        return KVAESamples(torch.cat(states, 1), self.frame_means(torch.cat(codes, 1)))

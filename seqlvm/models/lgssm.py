"""LGSSM: the linear-Gaussian state-space model as a learnable module.

    z_0 ~ N(m0, P0),   z_t = A z_{t-1} + B u_t + N(0, Q),   x_t = C z_t + N(0, R)

Inference is exact (``seqlvm.kalman``). Learning: by gradient on the exact log-likelihood (the
Trainer minimises ``elbo(...).loss``), or by expectation-maximisation with :meth:`LGSSM.fit_em`.
Q, R and P0 are stored as Cholesky factors with a log-diagonal, so they stay positive definite
under any gradient step; the properties ``A, B, C, Q, R, m0, P0`` read and assign plain tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from seqlvm.kalman import (
    FilterResult,
    LGSSMParams,
    PriorSamples,
    SmootherResult,
    forecast as kalman_forecast,
    kalman_filter,
    kalman_smoother,
    log_likelihood as kalman_log_likelihood,
    sample_prior,
)
from seqlvm.kalman.linalg import matvec, safe_cholesky, sym
from seqlvm.kalman.params import check_symmetric
from seqlvm.models.base import (
    ELBO, Forecast, Imputation, RolloutStep, SequenceModel, check_future_controls_type, check_num_particles,
    check_step_controls, gaussian_step,
)

PARAMETERS = ("A", "B", "C", "Q", "R", "m0", "P0")


@dataclass
class LGSSMConfig:
    """Sizes and options of an :class:`LGSSM`.

    state_dim:   n, the size of z_t.
    obs_dim:     m, the size of x_t.
    control_dim: k, the size of u_t (0 for no controls).
    method:      Kalman method, ``"sequential"`` or ``"parallel"``.
    trainable:   the parameters gradient training may change (EM takes its own list).
    init_transition: initial A = init_transition * I.
    init_state_noise: initial Q = init_state_noise * I (and P0 = I).
    init_obs_noise:   initial R = init_obs_noise * I.
    """

    state_dim: int = 4
    obs_dim: int = 2
    control_dim: int = 0
    method: str = "sequential"
    trainable: list[str] = field(default_factory=lambda: list(PARAMETERS))
    init_transition: float = 0.95
    init_state_noise: float = 0.1
    init_obs_noise: float = 1.0

    def __post_init__(self) -> None:
        for name in ("state_dim", "obs_dim"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"LGSSMConfig: {name} must be an int >= 1; got {v!r}")
        if not isinstance(self.control_dim, int) or self.control_dim < 0:
            raise ValueError(f"LGSSMConfig: control_dim must be an int >= 0; got {self.control_dim!r}")
        if self.method not in ("sequential", "parallel"):
            raise ValueError(f"LGSSMConfig: method must be 'sequential' or 'parallel'; got {self.method!r}")
        unknown = sorted(set(self.trainable) - set(PARAMETERS))
        if unknown:
            raise ValueError(f"LGSSMConfig: trainable has unknown names {unknown}; expected some of {list(PARAMETERS)}")
        for name in ("init_state_noise", "init_obs_noise"):
            if not getattr(self, name) > 0:
                raise ValueError(f"LGSSMConfig: {name} must be > 0; got {getattr(self, name)!r}")


def _to_raw_cholesky(S: Tensor, name: str = "covariance") -> Tensor:
    """Positive-definite S -> lower factor with log-diagonal (the stored form)."""
    check_symmetric("LGSSM", **{name: S})
    L, info = torch.linalg.cholesky_ex(sym(S))
    if bool(info.any()):
        lowest = float(torch.linalg.eigvalsh(sym(S)).min())
        raise ValueError(
            f"LGSSM: {name} must be symmetric positive definite; got one with smallest eigenvalue {lowest:.3g}"
        )
    return L.tril(-1) + torch.diag_embed(torch.log(L.diagonal(dim1=-2, dim2=-1)))


def _from_raw_cholesky(raw: Tensor) -> Tensor:
    L = raw.tril(-1) + torch.diag_embed(torch.exp(raw.diagonal(dim1=-2, dim2=-1)))
    return L @ L.transpose(-1, -2)


class LGSSM(SequenceModel):
    """A linear-Gaussian state-space model with exact inference and EM.

    Shapes: x (B, T, m), mask (B, T) or (B, T, m) with True = observed (NaN in x also means
    missing), u (B, T, k) with ``u[:, 0]`` unused.
    """

    config_class = LGSSMConfig

    def __init__(self, config: LGSSMConfig) -> None:
        super().__init__(config)
        n, m, k = config.state_dim, config.obs_dim, config.control_dim
        self._A = nn.Parameter(config.init_transition * torch.eye(n))
        self._C = nn.Parameter(torch.randn(m, n) / n**0.5)
        self._B = nn.Parameter(torch.zeros(n, k)) if k else None
        self._m0 = nn.Parameter(torch.zeros(n))
        self._Q = nn.Parameter(_to_raw_cholesky(config.init_state_noise * torch.eye(n)))
        self._R = nn.Parameter(_to_raw_cholesky(config.init_obs_noise * torch.eye(m)))
        self._P0 = nn.Parameter(_to_raw_cholesky(torch.eye(n)))
        for name in PARAMETERS:
            p = getattr(self, "_" + name)
            if p is not None:
                p.requires_grad_(name in config.trainable)

    # -- parameters as plain tensors -------------------------------------------------------
    @property
    def A(self) -> Tensor:
        return self._A

    @A.setter
    def A(self, value: Tensor) -> None:
        self._assign("A", value)

    @property
    def B(self) -> Tensor | None:
        return self._B

    @B.setter
    def B(self, value: Tensor) -> None:
        self._assign("B", value)

    @property
    def C(self) -> Tensor:
        return self._C

    @C.setter
    def C(self, value: Tensor) -> None:
        self._assign("C", value)

    @property
    def m0(self) -> Tensor:
        return self._m0

    @m0.setter
    def m0(self, value: Tensor) -> None:
        self._assign("m0", value)

    @property
    def Q(self) -> Tensor:
        return _from_raw_cholesky(self._Q)

    @Q.setter
    def Q(self, value: Tensor) -> None:
        self._assign("Q", value, _to_raw_cholesky)

    @property
    def R(self) -> Tensor:
        return _from_raw_cholesky(self._R)

    @R.setter
    def R(self, value: Tensor) -> None:
        self._assign("R", value, _to_raw_cholesky)

    @property
    def P0(self) -> Tensor:
        return _from_raw_cholesky(self._P0)

    @P0.setter
    def P0(self, value: Tensor) -> None:
        self._assign("P0", value, _to_raw_cholesky)

    def _assign(self, name: str, value: Tensor, to_stored: Callable[[Tensor, str], Tensor] | None = None) -> None:
        """Check ``value`` against parameter ``name`` and store it (through ``to_stored``, the
        constrained parameterisation, for the covariances)."""
        target = getattr(self, "_" + name)
        if target is None:
            raise ValueError(f"LGSSM: {name} does not exist for control_dim = 0")
        if not isinstance(value, Tensor) or tuple(value.shape) != tuple(target.shape):
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"LGSSM: {name} must have shape {tuple(target.shape)}; got {got}")
        value = value.to(target)
        with torch.no_grad():
            target.copy_(value if to_stored is None else to_stored(value, name))

    def params(self) -> LGSSMParams:
        """The current parameters as an :class:`~seqlvm.kalman.LGSSMParams` (differentiable)."""
        return LGSSMParams(self.A, self.C, self.Q, self.R, self.m0, self.P0, self.B)

    # -- inputs ------------------------------------------------------------------------------
    def _inputs(
        self, x: Tensor, mask: Tensor | None, u: Tensor | None, fn: str
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Check x (B, T, m) and u (B, T, k) against the config; cast to the model's dtype."""
        m, k = self.config.obs_dim, self.config.control_dim
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != m:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"LGSSM.{fn}: x must have shape (B, T, {m}); got {got}")
        dtype, device = self._A.dtype, self._A.device
        if k and u is None:
            raise ValueError(f"LGSSM.{fn}: the model has control_dim = {k}, so u of shape (B, T, {k}) is required")
        if u is not None:
            if not k:
                raise ValueError(f"LGSSM.{fn}: u is given but the model has control_dim = 0")
            if not isinstance(u, Tensor) or tuple(u.shape) != (x.shape[0], x.shape[1], k):
                got = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
                raise ValueError(f"LGSSM.{fn}: u must have shape ({x.shape[0]}, {x.shape[1]}, {k}); got {got}")
            u = u.to(dtype=dtype, device=device)
        if mask is not None:
            B, T = x.shape[:2]
            if not isinstance(mask, Tensor) or tuple(mask.shape) not in ((B, T), (B, T, m)):
                got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
                raise ValueError(f"LGSSM.{fn}: mask must have shape ({B}, {T}) or ({B}, {T}, {m}); got {got}")
            mask = mask.to(device=device)
        return x.to(dtype=dtype, device=device), mask, u

    # -- the model protocol ---------------------------------------------------------------------
    def log_likelihood(
        self, x: Tensor, mask: Tensor | None = None, u: Tensor | None = None, num_samples: int | None = None
    ) -> Tensor:
        """Exact log p(x_obs), (B,). ``num_samples`` is accepted for protocol parity and unused.
        Its gradient comes from Fisher's identity (:func:`seqlvm.kalman.log_likelihood`)."""
        x, mask, u = self._inputs(x, mask, u, "log_likelihood")
        return kalman_log_likelihood(self.params(), x, mask, u, self.config.method)

    def elbo(self, x: Tensor, mask: Tensor | None = None, u: Tensor | None = None) -> ELBO:
        """The exact negative log-likelihood per sequence (the ELBO is tight for this model).

        terms: ``log_likelihood`` (per sequence) and ``log_likelihood_per_step`` (per observed
        step), batch means.
        """
        x, mask, u = self._inputs(x, mask, u, "elbo")
        ll = kalman_log_likelihood(self.params(), x, mask, u, self.config.method)
        observed = ~torch.isnan(x)
        if mask is not None:
            observed = observed & (mask.bool()[..., None] if mask.dim() == 2 else mask.bool())
        steps = observed.any(-1).sum(1).clamp_min(1)
        return ELBO(-ll.mean(), {"log_likelihood": ll.mean(), "log_likelihood_per_step": (ll / steps).mean()})

    def filter(self, x: Tensor, mask: Tensor | None = None, u: Tensor | None = None) -> FilterResult:
        """Filtering moments p(z_t | x_{0:t}); see :func:`seqlvm.kalman.kalman_filter`."""
        x, mask, u = self._inputs(x, mask, u, "filter")
        return kalman_filter(self.params(), x, mask, u, self.config.method)

    def smooth(self, x: Tensor, mask: Tensor | None = None, u: Tensor | None = None) -> SmootherResult:
        """Smoothed moments p(z_t | x); see :func:`seqlvm.kalman.kalman_smoother`."""
        x, mask, u = self._inputs(x, mask, u, "smooth")
        return kalman_smoother(self.params(), x, mask, u, self.config.method)

    def impute(
        self, x: Tensor, mask: Tensor | None = None, u: Tensor | None = None, method: str = "smooth"
    ) -> Imputation:
        """Fill in missing entries with their exact posterior predictive moments.

        ``method="smooth"`` conditions on all observed entries, ``"filter"`` on those up to and
        including each step. Observed entries are returned as they are (std 0). For a missing
        entry the moments of x_t given the data are exact, including the correlation of its
        noise with observed entries of the same step when R is not diagonal:
        ``x_mis = (C_mis - G C_obs) z_t + G x_obs + N(0, R_mm - G R_om)``, ``G = R_mo R_oo^-1``.
        Returns mean and std of shape (B, T, m).
        """
        if method not in ("smooth", "filter"):
            raise ValueError(f"LGSSM.impute: method must be 'smooth' or 'filter'; got {method!r}")
        x, mask, u = self._inputs(x, mask, u, "impute")
        observed = ~torch.isnan(x)
        if mask is not None:
            if mask.shape == x.shape[:2]:
                mask = mask[..., None]
            observed = observed & mask.bool()
        if method == "smooth":
            post = self.smooth(x, observed, u)
            means, covs = post.means, post.covs
        else:
            post = self.filter(x, observed, u)
            means, covs = post.means, post.covs
        x0 = torch.where(observed, x, torch.zeros((), dtype=x.dtype, device=x.device))
        Mz, c, noise = _completion(self.C, self.R, observed, x0)
        mean = matvec(Mz, means) + c  # exactly x where observed, as Mz = 0 and c = x there
        cov = Mz @ covs @ Mz.transpose(-1, -2) + noise
        # Zero where observed before the sqrt: sqrt(0) has an infinite derivative, and times 0 that
        # would send NaN into every parameter's gradient.
        zero = torch.zeros((), dtype=cov.dtype, device=cov.device)
        std = torch.where(observed, zero, cov.diagonal(dim1=-2, dim2=-1)).clamp_min(0).sqrt()
        return Imputation(mean=mean, std=std)

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
        """Predict ``horizon`` steps after x_context (B, T, m).

        mean, std: (B, H, m) exact predictive moments of each future x; samples: (S, B, H, m)
        joint sample paths when ``num_samples`` = S > 0. u (B, T, k) drives the context and
        u_future (B, H, k) the future when the model has controls.
        """
        check_future_controls_type(u_future, "LGSSM.forecast")
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 0:
            raise ValueError(f"LGSSM.forecast: num_samples must be an int >= 0; got {num_samples!r}")
        x_context, mask, u = self._inputs(x_context, mask, u, "forecast")
        if u_future is not None:
            u_future = u_future.to(x_context)
        params = self.params()
        fc = kalman_forecast(params, x_context, horizon, u_future, mask=mask, u=u, method=self.config.method)
        std = fc.obs_covs.diagonal(dim1=-2, dim2=-1).sqrt()
        samples = None
        if num_samples:
            B = x_context.shape[0]
            # The future is an LGSSM whose first state has the one-step predictive moments
            # (u_future[:, 0] is already in them; sample_prior never reads u[:, 0]).
            future = params._replace(
                m0=fc.state_means[:, 0].repeat(num_samples, 1),
                P0=fc.state_covs[:, 0].repeat(num_samples, 1, 1),
            )
            draws = sample_prior(
                future,
                horizon,
                B * num_samples,
                u=None if u_future is None else u_future.repeat(num_samples, 1, 1),
                generator=generator,
            )
            samples = draws.observations.view(num_samples, B, horizon, -1)
        return Forecast(mean=fc.obs_means, std=std, samples=samples)

    def sample(
        self,
        num_steps: int,
        batch_size: int = 1,
        u: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PriorSamples:
        """Draw states (B, T, n) and observations (B, T, m) from the model."""
        if u is not None:
            u = u.to(self._A)
        return sample_prior(self.params(), num_steps, batch_size, u, generator)

    # -- the simulator interface ------------------------------------------------------------------
    def rollout_start(
        self,
        x: Tensor,
        u: Tensor | None = None,
        mask: Tensor | None = None,
        num_particles: int = 1,
        generator: torch.Generator | None = None,
        noise: bool = True,
    ) -> tuple[Tensor]:
        """Filter the context x (B, T, m) and draw P = ``num_particles`` last states per sequence,
        ``z_{T-1} ~ p(z_{T-1} | x_{0:T-1}) = N(m_{T-1|T-1}, P_{T-1|T-1})`` (with ``noise=False``,
        P copies of ``m_{T-1|T-1}``).

        Returns the carry ``(z,)``, z (P·B, n), row ``p·B + b`` a draw for sequence b.
        """
        check_num_particles(num_particles, "LGSSM.rollout_start")
        x, mask, u = self._inputs(x, mask, u, "rollout_start")
        f = kalman_filter(self.params(), x, mask, u, self.config.method)
        z, _ = gaussian_step(f.means[:, -1], safe_cholesky(f.covs[:, -1]), num_particles, generator, noise)
        return (z,)

    def rollout_step(
        self, carry: tuple[Tensor], u: Tensor | None, generator: torch.Generator | None = None, noise: bool = True
    ) -> tuple[tuple[Tensor], RolloutStep]:
        """One step of every particle: ``z' = A z + B u + eps``, ``eps ~ N(0, Q)`` (0 without noise).

        carry ``(z,)`` with z (N, n), u (N, k) (None without controls). RolloutStep: observation
        ``C z' = E[x' | z']`` (N, m), latent z' (N, n), log_prob ``log N(z'; A z + B u, Q)`` (N,).
        """
        if not (isinstance(carry, tuple) and len(carry) == 1 and isinstance(carry[0], Tensor)
                and carry[0].dim() == 2 and carry[0].shape[1] == self.config.state_dim):
            raise ValueError(f"LGSSM.rollout_step: carry must be the (z,) of rollout_start, z (N, {self.config.state_dim})")
        (z,) = carry
        u = check_step_controls(u, z.shape[0], self.config.control_dim, z, "LGSSM.rollout_step")
        mean = z @ self.A.T if u is None else z @ self.A.T + u @ self.B.T
        z, log_prob = gaussian_step(mean, torch.linalg.cholesky(self.Q), 1, generator, noise)
        return (z,), RolloutStep(observation=z @ self.C.T, latent=z, log_prob=log_prob)

    # -- expectation-maximisation -----------------------------------------------------------------
    @torch.no_grad()
    def fit_em(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        num_iters: int = 50,
        learn: Sequence[str] = ("A", "C", "Q", "R", "m0", "P0"),
        *,
        u: Tensor | None = None,
        tol: float | None = None,
        callback: Callable[[int, float], None] | None = None,
    ) -> Tensor:
        """Maximum-likelihood fit by EM with closed-form M-steps; returns the log-likelihoods.

        E-step: the RTS smoother gives E[z_t], E[z_t z_t^T] and E[z_{t+1} z_t^T]. Missing entries
        of x are treated as latent too, so C and R have the usual regression updates with the
        expected completed-data statistics, and every iteration is an exact EM step (the
        likelihood never decreases). ``learn`` names the parameters to update (``"B"`` too when
        there are controls); the rest stay fixed. Stops early when the relative gain of an
        iteration falls below ``tol``. ``callback(iteration, log_likelihood)`` is called after
        each iteration (for progress reports).
        Returns (iterations,) total log p(x_obs) (summed over the batch) after each iteration.
        """
        unknown = sorted(set(learn) - set(PARAMETERS))
        if unknown:
            raise ValueError(f"LGSSM.fit_em: learn has unknown names {unknown}; expected some of {list(PARAMETERS)}")
        if "B" in learn and not self.config.control_dim:
            raise ValueError("LGSSM.fit_em: learn contains 'B' but the model has control_dim = 0")
        if not isinstance(num_iters, int) or num_iters < 1:
            raise ValueError(f"LGSSM.fit_em: num_iters must be an int >= 1; got {num_iters!r}")
        x, mask, u = self._inputs(x, mask, u, "fit_em")
        if "B" in learn and x.shape[1] > 1:
            # B's M-step solves against sum_t u_t u_t^T (t >= 1; u_0 drives nothing).
            k, rank = u.shape[-1], int(torch.linalg.matrix_rank(u[:, 1:].reshape(-1, u.shape[-1])))
            if rank < k:
                raise ValueError(
                    f"LGSSM.fit_em: learn contains 'B', but the controls u[:, 1:] span {rank} of their {k} directions "
                    "(all-zero controls span none), so B is not determined; leave 'B' out of learn"
                )
        observed = ~torch.isnan(x)
        if mask is not None:
            observed = observed & (mask[..., None] if mask.shape == x.shape[:2] else mask).bool()
        x0 = torch.where(observed, x, torch.zeros((), dtype=x.dtype, device=x.device))
        history: list[Tensor] = []
        post = kalman_smoother(self.params(), x0, observed, u, self.config.method)
        for _ in range(num_iters):
            self._m_step(post, x0, observed, u, set(learn))
            post = kalman_smoother(self.params(), x0, observed, u, self.config.method)
            history.append(post.filtered.log_likelihood.sum())
            if callback is not None:
                callback(len(history), history[-1].item())
            if tol is not None and len(history) > 1:
                gain = (history[-1] - history[-2]) / history[-2].abs()
                if gain < tol:
                    break
        return torch.stack(history)

    def _m_step(self, post: SmootherResult, x: Tensor, observed: Tensor, u: Tensor | None, learn: set[str]) -> None:
        mu, V, V_cross = post.means, post.covs, post.cross_covs
        Bt, T, n = mu.shape
        Ezz = V + mu[..., :, None] * mu[..., None, :]  # E[z_t z_t^T]           (B, T, n, n)
        Ecross = V_cross + mu[:, 1:, :, None] * mu[:, :-1, None, :]  # E[z_t z_{t-1}^T]  (B, T-1, n, n)

        if "m0" in learn:
            self.m0 = mu[:, 0].mean(0)
        if "P0" in learn:
            d = mu[:, 0] - self.m0
            self.P0 = sym((V[:, 0] + d[:, :, None] * d[:, None, :]).mean(0))

        if T > 1 and learn & {"A", "B", "Q"}:
            S11 = Ezz[:, 1:].sum((0, 1))
            S00 = Ezz[:, :-1].sum((0, 1))
            S10 = Ecross.sum((0, 1))
            A = self.A
            Bm = self.B
            if u is not None:
                uu = u[:, 1:]
                S0u = (mu[:, :-1, :, None] * uu[:, :, None, :]).sum((0, 1))  # sum E[z_{t-1}] u_t^T
                S1u = (mu[:, 1:, :, None] * uu[:, :, None, :]).sum((0, 1))
                Suu = (uu[:, :, :, None] * uu[:, :, None, :]).sum((0, 1))
            if "A" in learn and u is not None and "B" in learn:
                top = torch.cat([S10, S1u], dim=1)
                gram = torch.cat([torch.cat([S00, S0u], 1), torch.cat([S0u.T, Suu], 1)], 0)
                AB = torch.linalg.solve(gram, top.T).T
                A, Bm = AB[:, :n], AB[:, n:]
            elif "A" in learn:
                rhs = S10 if u is None else S10 - Bm @ S0u.T
                A = torch.linalg.solve(S00, rhs.T).T
            elif "B" in learn:
                Bm = torch.linalg.solve(Suu, (S1u - A @ S0u).T).T
            if "A" in learn:
                self.A = A
            if "B" in learn:
                self.B = Bm
            if "Q" in learn:
                Qs = S11 - A @ S10.T - S10 @ A.T + A @ S00 @ A.T
                if u is not None:
                    Qs = Qs - Bm @ S1u.T - S1u @ Bm.T + A @ S0u @ Bm.T + Bm @ S0u.T @ A.T + Bm @ Suu @ Bm.T
                self.Q = sym(Qs / (Bt * (T - 1)))

        if learn & {"C", "R"}:
            Mz, c, noise = _completion(self.C, self.R, observed, x)
            # Completed statistics: x_t = Mz z_t + c + nu, nu ~ N(0, noise), given the data.
            Sxz = (Mz @ Ezz + c[..., :, None] * mu[..., None, :]).sum((0, 1))
            Mmu = matvec(Mz, mu)
            Sxx = (
                Mz @ Ezz @ Mz.transpose(-1, -2)
                + Mmu[..., :, None] * c[..., None, :]
                + c[..., :, None] * Mmu[..., None, :]
                + c[..., :, None] * c[..., None, :]
                + noise
            ).sum((0, 1))
            Szz = Ezz.sum((0, 1))
            C = torch.linalg.solve(Szz, Sxz.T).T if "C" in learn else self.C
            if "C" in learn:
                self.C = C
            if "R" in learn:
                Rs = Sxx - C @ Sxz.T - Sxz @ C.T + C @ Szz @ C.T
                self.R = sym(Rs / (Bt * T))


def _completion(C: Tensor, R: Tensor, observed: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """x_t given z_t and the observed entries, as ``x_t = Mz z_t + c + N(0, noise)``.

    Observed rows: Mz = 0, c = x, no noise. Missing rows: the noise is conditioned on the
    observed noise of the same step, ``delta_mis | delta_obs ~ N(G delta_obs, R_mm - G R_om)``
    with ``G = R_mo R_oo^-1`` and ``delta_obs = x_obs - C_obs z_t``.
    observed (B, T, m) bool, x (B, T, m) zero where missing -> (B,T,m,n), (B,T,m), (B,T,m,m).
    """
    o = observed.to(C.dtype)
    miss = 1.0 - o
    R_oo = R * (o[..., :, None] * o[..., None, :]) + torch.diag_embed(miss)
    R_mo = R * (miss[..., :, None] * o[..., None, :])
    G = torch.linalg.solve(R_oo, R_mo.transpose(-1, -2)).transpose(-1, -2)
    Mz = (torch.diag_embed(miss) - G) @ C
    c = x + matvec(G, x)
    noise = sym(R * (miss[..., :, None] * miss[..., None, :]) - G @ R * miss[..., None, :])
    return Mz, c, noise

"""Sampling from the prior and forecasting beyond the data."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from seqlvm.kalman.filter import check_method, kalman_filter
from seqlvm.kalman.linalg import columns, matvec, safe_cholesky, sym, uncolumns
from seqlvm.kalman.params import LGSSMParams, prepare
from seqlvm.kalman.scan import constant_linear_recurrence, linear_recurrence


class PriorSamples(NamedTuple):
    """Draws from the model: states (Bt, T, n) and observations (Bt, T, m)."""

    states: Tensor
    observations: Tensor


class KalmanForecast(NamedTuple):
    """Predictive moments of the ``horizon`` steps after the context, given the context.

    state_means (Bt, H, n), state_covs (Bt, H, n, n): p(z_{T+h} | x_{0:T-1});
    obs_means (Bt, H, m), obs_covs (Bt, H, m, m): p(x_{T+h} | x_{0:T-1}).
    """

    state_means: Tensor
    state_covs: Tensor
    obs_means: Tensor
    obs_covs: Tensor


def sample_prior(
    params: LGSSMParams,
    num_steps: int,
    batch_size: int = 1,
    u: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> PriorSamples:
    """Draw ``z_0 ~ N(m0, P0)``, ``z_t = A_t z_{t-1} + B_t u_t + N(0, Q_t)``, ``x_t = C_t z_t + N(0, R_t)``.

    u: (batch_size, num_steps, k) controls when ``params.B`` is set. Same generator state, same draw.
    """
    for name, v in (("num_steps", num_steps), ("batch_size", batch_size)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"sample_prior: {name} must be an int >= 1; got {v!r}")
    prep = prepare(params, None, None, u, batch=batch_size, steps=num_steps, fn="sample_prior")
    T, Bt, n, m = num_steps, batch_size, prep.n, prep.m
    dtype, device = prep.A.dtype, prep.A.device
    eps = torch.randn(Bt, T, n, dtype=dtype, device=device, generator=generator)
    eta = torch.randn(Bt, T, m, dtype=dtype, device=device, generator=generator)
    z0 = prep.m0 + matvec(safe_cholesky(prep.P0), eps[:, 0])
    if T == 1:
        z = z0.unsqueeze(1)
    else:
        drive = matvec(safe_cholesky(prep.Q[:, 1:] if prep.Q.shape[1] > 1 else prep.Q), eps[:, 1:])
        controls = prep.controls()
        if controls is not None:
            drive = drive + controls[:, 1:]
        shared = prep.A.shape[0] == 1
        drive, h0 = columns(drive, shared), columns(z0, shared)
        if prep.A.shape[1] == 1:
            rest = constant_linear_recurrence(prep.A[:, 0], drive, h0)
        else:
            rest = linear_recurrence(prep.A[:, 1:], drive, h0)
        z = torch.cat([z0.unsqueeze(1), uncolumns(rest)], dim=1)
    x = matvec(prep.C, z) + matvec(safe_cholesky(prep.R), eta)
    return PriorSamples(z, x)


def _time_window(params: LGSSMParams, stop: int, total: int) -> LGSSMParams:
    """Parameters restricted to steps 0..stop-1 when they vary over ``total`` steps."""
    def cut(p: Tensor | None) -> Tensor | None:
        return p[:, :stop] if p is not None and p.dim() == 4 and p.shape[1] == total else p

    return LGSSMParams(*(cut(p) if k in ("A", "C", "Q", "R", "B") else p for k, p in params._asdict().items()))


def forecast(
    params: LGSSMParams,
    x_context: Tensor,
    horizon: int,
    u_future: Tensor | None = None,
    *,
    mask: Tensor | None = None,
    u: Tensor | None = None,
    method: str = "sequential",
) -> KalmanForecast:
    """Filter the context x_context (Bt, T, m), then predict ``horizon`` steps ahead.

    Time-varying parameters must span the context and the horizon, (Bt, T + horizon, ...).
    u (Bt, T, k) drives the context and u_future (Bt, horizon, k) the forecast, when
    ``params.B`` is set. Predictions: ``m <- A m + B u``, ``P <- A P A^T + Q``, then
    ``E[x] = C m``, ``Cov[x] = C P C^T + R``.
    """
    check_method(method, "forecast")
    if not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"forecast: horizon must be an int >= 1; got {horizon!r}")
    if not isinstance(x_context, Tensor) or x_context.dim() != 3:
        got = tuple(x_context.shape) if isinstance(x_context, Tensor) else type(x_context).__name__
        raise ValueError(f"forecast: x_context must have shape (Bt, T, m); got {got}")
    Bt, T = x_context.shape[:2]
    if (params.B is None) != (u_future is None):
        raise ValueError(
            "forecast: u_future must be given exactly when params.B is set; "
            f"got B={'set' if params.B is not None else None}, u_future={'set' if u_future is not None else None}"
        )
    u_all = None
    if u_future is not None:
        if u is None:
            raise ValueError("forecast: params.B is set, so u for the context is required too")
        if u_future.dim() != 3 or tuple(u_future.shape[:2]) != (Bt, horizon):
            raise ValueError(f"forecast: u_future must have shape ({Bt}, {horizon}, k); got {tuple(u_future.shape)}")
        if not isinstance(u, Tensor) or u.dim() != 3 or tuple(u.shape[:2]) != (Bt, T):
            got = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
            raise ValueError(f"forecast: u, the context's controls, must have shape ({Bt}, {T}, k); got {got}")
        u_all = torch.cat([u, u_future], dim=1)
    full = prepare(params, None, None, u_all, batch=Bt, steps=T + horizon, fn="forecast")
    if x_context.shape[-1] != full.m:
        raise ValueError(f"forecast: x_context must have shape ({Bt}, {T}, {full.m}); got {tuple(x_context.shape)}")
    filt = kalman_filter(_time_window(params, T, T + horizon), x_context, mask, u, method=method)
    m, P = filt.means[:, -1], filt.covs[:, -1]
    controls = full.controls()
    z_means, z_covs, x_means, x_covs = [], [], [], []
    offsets = [0.0] * horizon if controls is None else controls.unbind(1)[T:]
    for A, Q, C, R, offset in zip(*(full.per_step(name)[T:] for name in "AQCR"), offsets):
        m = matvec(A, m) + offset
        P = sym(A @ P @ A.transpose(-1, -2) + Q)
        z_means.append(m)
        z_covs.append(P)
        x_means.append(matvec(C, m))
        x_covs.append(sym(C @ P @ C.transpose(-1, -2) + R))
    n, mm = full.n, full.m
    return KalmanForecast(
        torch.stack(z_means, 1),
        torch.stack([c.expand(Bt, n, n) for c in z_covs], 1),
        torch.stack(x_means, 1),
        torch.stack([c.expand(Bt, mm, mm) for c in x_covs], 1),
    )

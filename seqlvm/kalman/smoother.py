"""The Rauch-Tung-Striebel smoother and forward-filter backward-sampling.

Both rest on the backward conditionals of the filter, for t = 0..T-2::

    p(z_t | z_{t+1}, x_{0:t}) = N(z_t; g_t + E_t z_{t+1}, L_t)
    E_t = P_{t|t} A_{t+1}^T P_{t+1|t}^{-1},   g_t = m_{t|t} - E_t m_{t+1|t},
    L_t = P_{t|t} - E_t P_{t+1|t} E_t^T

The smoother runs ``m_{t|T} = g_t + E_t m_{t+1|T}``, ``P_{t|T} = E_t P_{t+1|T} E_t^T + L_t``
backwards from the last filtered moments; ``Cov(z_{t+1}, z_t | x) = P_{t+1|T} E_t^T``. Sampling
draws ``z_{T-1}`` from the last filtered marginal and each earlier state from its conditional.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from seqlvm.kalman.filter import STEADY_CHECK_EVERY, FilterResult, check_method, run_filter
from seqlvm.kalman.linalg import converged, matvec, mvn_logpdf_of_noise, safe_cholesky, sym
from seqlvm.kalman.params import LGSSMParams, Prepared, prepare
from seqlvm.kalman.scan import associative_scan, steady_linear_recurrence


class SmootherResult(NamedTuple):
    """Smoothed moments given all of x.

    means:      (Bt, T, n)        E[z_t | x]
    covs:       (Bt, T, n, n)     Cov[z_t | x]
    cross_covs: (Bt, T-1, n, n)   Cov[z_{t+1}, z_t | x] (what EM needs)
    filtered:   the FilterResult it was built on (log-likelihood included).
    """

    means: Tensor
    covs: Tensor
    cross_covs: Tensor
    filtered: FilterResult


class PosteriorSamples(NamedTuple):
    """Joint posterior draws z_{0:T-1} ~ p(z | x) and their log-density.

    samples:  (S, Bt, T, n), reparameterised (differentiable in the parameters and x).
    log_prob: (S, Bt) log p(z | x) of each draw.
    """

    samples: Tensor
    log_prob: Tensor


class BackwardKernel(NamedTuple):
    """The backward conditionals ``N(z_t; g_t + E_t z_{t+1}, L_t)`` for t = 0..T-2.

    E (b, T-1, n, n), g (Bt, T-1, n), L (b, T-1, n, n). ``steady_from``: the step from which
    E and L no longer change (the filter's steady state), or None.
    """

    E: Tensor
    g: Tensor
    L: Tensor
    steady_from: int | None


def backward_kernel(prep: Prepared, filt: FilterResult, steady_from: int | None) -> BackwardKernel:
    """E_t, g_t, L_t of the module docstring, computed for all steps at once.

    When the filter was steady from step s, E_t and L_t are the same for all t >= s, so only
    steps 0..s are solved and the last one is broadcast over the rest.
    """
    T = prep.steps
    stop = T - 1 if steady_from is None else min(steady_from + 1, T - 1)
    P_f = _cov_batch(filt.covs)[:, :stop]
    P_p = _cov_batch(filt.pred_covs)[:, 1 : stop + 1]
    A = prep.A[:, 1 : stop + 1] if prep.A.shape[1] > 1 else prep.A
    AP = A @ P_f
    E = torch.cholesky_solve(AP, safe_cholesky(P_p)).transpose(-1, -2)
    Lc = sym(P_f - E @ AP)
    if stop < T - 1:
        rest = T - 1 - stop
        E = torch.cat([E, E[:, -1:].expand(-1, rest, -1, -1)], dim=1)
        Lc = torch.cat([Lc, Lc[:, -1:].expand(-1, rest, -1, -1)], dim=1)
    g = filt.means[:, :-1] - matvec(E, filt.pred_means[:, 1:])
    return BackwardKernel(E, g, Lc, steady_from)


def _cov_batch(P: Tensor) -> Tensor:
    """Undo the batch broadcast of a covariance tensor, so work is not repeated per sequence."""
    if P.shape[0] > 1 and P.stride(0) == 0:
        return P[:1]
    return P


def kalman_smoother(
    params: LGSSMParams,
    x: Tensor,
    mask: Tensor | None = None,
    u: Tensor | None = None,
    method: str = "sequential",
) -> SmootherResult:
    """RTS-smooth ``x`` (Bt, T, m); arguments as for :func:`seqlvm.kalman.kalman_filter`.

    ``method="parallel"`` runs both passes as associative scans (Särkkä & García-Fernández
    2021); ``"sequential"`` loops backwards, solving stretches with steady gains in blocks.
    """
    check_method(method, "kalman_smoother")
    prep = prepare(params, x, mask, u, fn="kalman_smoother")
    filt, gains = run_filter(prep, method)
    means, covs, cross = smooth_filtered(prep, filt, gains.steady_from, method)
    Bt, T, n = prep.batch, prep.steps, prep.n
    return SmootherResult(means, covs.expand(Bt, T, n, n), cross.expand(Bt, T - 1, n, n), filt)


def smooth_filtered(
    prep: Prepared, filt: FilterResult, steady_from: int | None, method: str, means: bool = True
) -> tuple[Tensor | None, Tensor, Tensor]:
    """The RTS pass over a filter's output: smoothed means (Bt, T, n), covariances (b, T, n, n)
    and cross covariances Cov(z_{t+1}, z_t | x) (b, T-1, n, n), with b = 1 when the batch shares
    them. ``means=False`` skips the means (None): the covariances never depend on the data."""
    kernel = backward_kernel(prep, filt, steady_from)
    m_last, P_last = filt.means[:, -1], _cov_batch(filt.covs)[:, -1]
    if prep.steps == 1:
        m, covs = filt.means, _cov_batch(filt.covs)
    elif method == "parallel":
        if not means:  # the scan carries a mean: give it zeros, one per distinct covariance
            b = max(kernel.E.shape[0], P_last.shape[0])
            kernel = kernel._replace(g=kernel.g.new_zeros(b, *kernel.g.shape[1:]))
            m_last = m_last.new_zeros(b, m_last.shape[-1])
        m, covs = _smooth_parallel(kernel, m_last, P_last)
    else:
        m = None
        if means:
            m = steady_linear_recurrence(kernel.E, kernel.g, m_last, kernel.steady_from, reverse=True)
            m = torch.cat([m, m_last.unsqueeze(1)], dim=1)
        covs = _smooth_covariances_sequential(kernel, P_last)
    return (m if means else None), covs, covs[:, 1:] @ kernel.E.transpose(-1, -2)


def _smoother_combine(earlier: tuple[Tensor, ...], later: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """(E_i, g_i, L_i) applied after (E_j, g_j, L_j): (E_i E_j, E_i g_j + g_i, E_i L_j E_i^T + L_i)."""
    Ei, gi, Li = earlier
    Ej, gj, Lj = later
    return Ei @ Ej, matvec(Ei, gj) + gi, sym(Ei @ Lj @ Ei.transpose(-1, -2) + Li)


def _smooth_parallel(kernel: BackwardKernel, m_last: Tensor, P_last: Tensor) -> tuple[Tensor, Tensor]:
    E, g, Lc = kernel.E, kernel.g, kernel.L
    b = max(E.shape[0], P_last.shape[0])
    elems = (
        torch.cat([E.expand(b, *E.shape[1:]), torch.zeros_like(E[:1, :1]).expand(b, 1, -1, -1)], 1),
        torch.cat([g, m_last.unsqueeze(1)], 1),
        torch.cat([Lc.expand(b, *Lc.shape[1:]), P_last.unsqueeze(1).expand(b, 1, -1, -1)], 1),
    )
    _, means, covs = associative_scan(_smoother_combine, elems, reverse=True)
    return means, covs


def _smooth_covariances_sequential(kernel: BackwardKernel, P_last: Tensor) -> Tensor:
    """P_{t|T} = E_t P_{t+1|T} E_t^T + L_t backwards; inside the steady stretch they converge,
    and from there on stay put."""
    E, Lc = kernel.E, kernel.L
    T = E.shape[1] + 1
    s = kernel.steady_from if kernel.steady_from is not None else T - 1
    covs = [P_last]
    P, t = P_last, T - 2
    while t >= 0:
        Et = E[:, t]
        P_new = sym(Et @ P @ Et.transpose(-1, -2) + Lc[:, t])
        if t >= s and t % STEADY_CHECK_EVERY == 0 and len(covs) > 2:
            if converged(P_new, P) and converged(P, covs[-2]):
                covs.extend([P_new] * (t - s + 1))  # steps t..s keep this value
                P, t = P_new, s - 1
                continue
        covs.append(P_new)
        P, t = P_new, t - 1
    b = max(c.shape[0] for c in covs)
    return torch.stack([c.expand(b, -1, -1) for c in reversed(covs)], dim=1)


def sample_posterior(
    params: LGSSMParams,
    x: Tensor,
    mask: Tensor | None = None,
    u: Tensor | None = None,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    method: str = "sequential",
) -> PosteriorSamples:
    """Joint draws from p(z_{0:T-1} | x) by forward-filtering backward-sampling.

    ``z_{T-1} ~ N(m_{T-1|T-1}, P_{T-1|T-1})``, then ``z_t ~ N(g_t + E_t z_{t+1}, L_t)``. The draws
    are reparameterised (standard normals pushed through the model), so gradients flow to the
    parameters and x. ``log_prob`` is the exact joint posterior log-density of each draw.
    Returns samples (S, Bt, T, n) and log_prob (S, Bt).
    """
    check_method(method, "sample_posterior")
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"sample_posterior: num_samples must be an int >= 1; got {num_samples!r}")
    prep = prepare(params, x, mask, u, fn="sample_posterior")
    filt, gains = run_filter(prep, method)
    S, Bt, T, n = num_samples, prep.batch, prep.steps, prep.n
    eps = torch.randn(S * Bt, T, n, dtype=x.dtype, device=x.device, generator=generator)
    P_last = _cov_batch(filt.covs)[:, -1]
    L_last = safe_cholesky(P_last)
    z_last = filt.means[:, -1].repeat(S, 1) + matvec(L_last, eps.view(S, Bt, T, n)[:, :, -1]).reshape(S * Bt, n)
    log_prob = mvn_logpdf_of_noise(eps[:, -1], L_last.repeat(S, 1, 1) if L_last.shape[0] > 1 else L_last)
    if T > 1:
        kernel = backward_kernel(prep, filt, gains.steady_from)
        chol = safe_cholesky(kernel.L)  # (b, T-1, n, n)
        E = kernel.E.repeat(S, 1, 1, 1) if kernel.E.shape[0] > 1 else kernel.E
        chol_r = chol.repeat(S, 1, 1, 1) if chol.shape[0] > 1 else chol
        drive = kernel.g.repeat(S, 1, 1) + matvec(chol_r, eps[:, :-1])
        z_prev = steady_linear_recurrence(E, drive, z_last, kernel.steady_from, method, reverse=True)
        z = torch.cat([z_prev, z_last.unsqueeze(1)], dim=1)
        log_prob = log_prob + mvn_logpdf_of_noise(eps[:, :-1], chol_r).sum(-1)
    else:
        z = z_last.unsqueeze(1)
    return PosteriorSamples(z.view(S, Bt, T, n), log_prob.view(S, Bt))

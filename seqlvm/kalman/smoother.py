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

from seqlvm.kalman import native
from seqlvm.kalman.filter import FilterResult, MeanPass, check_method, run_filter
from seqlvm.kalman.linalg import (
    columns,
    matmul_add,
    mvn_logpdf_of_noise,
    precise_dtype,
    safe_cholesky,
    sym,
    uncolumns,
)
from seqlvm.kalman.params import LGSSMParams, Prepared, prepare
from seqlvm.kalman.scan import STEADY_MARGIN, linear_recurrence, steady_linear_recurrence, steady_powers


class SmootherResult(NamedTuple):
    """Smoothed moments given all of x.

    means:      (Bt, T, n)        E[z_t | x]
    covs:       (Bt, T, n, n)     Cov[z_t | x]
    cross_covs: (Bt, T-1, n, n)   Cov[z_{t+1}, z_t | x] (what EM needs)
    filtered:   the FilterResult it was built on (log-likelihood included).

    As in :class:`FilterResult`, the means may be non-contiguous views and shared covariances
    broadcast views.
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

    E (b, T-1, n, n), L (b, T-1, n, n), g in the product layout of the filter's mean pass
    (``MeanPass``). ``steady_from``: the step from which E and L no longer change (the filter's
    steady state), or None.
    """

    E: Tensor
    g: Tensor | None
    L: Tensor
    steady_from: int | None


def backward_kernel(
    prep: Prepared, filt: FilterResult, mp: MeanPass | None, steady_from: int | None
) -> BackwardKernel:
    """E_t, g_t, L_t of the module docstring, computed for all steps at once (g None without
    the filter's mean pass ``mp``: the covariances alone do not need it).

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
    g = None if mp is None else matmul_add(mp.means[:, :-1], E, mp.pred_means[:, 1:], -1.0)
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

    ``method="parallel"`` runs both passes parallel in time (the filter's covariances by the
    associative scan of Särkkä & García-Fernández 2021, every linear recurrence by a blocked
    scan), ``"sequential"`` as loops (compiled on the CPU where no gradient is taken: see
    :func:`seqlvm.kalman.kalman_filter`); either way a stretch with steady gains has its means
    solved in exact blocks and its covariances by doubling.
    """
    check_method(method, "kalman_smoother")
    prep = prepare(params, x, mask, u, fn="kalman_smoother")
    filt, gains, mp = run_filter(prep, method)
    means, covs, cross = smooth_filtered(prep, filt, mp, gains.steady_from, method)
    Bt, T, n = prep.batch, prep.steps, prep.n
    return SmootherResult(uncolumns(means), covs.expand(Bt, T, n, n), cross.expand(Bt, T - 1, n, n), filt)


def smooth_filtered(
    prep: Prepared, filt: FilterResult, mp: MeanPass | None, steady_from: int | None, method: str
) -> tuple[Tensor | None, Tensor, Tensor]:
    """The RTS pass over a filter's output: smoothed means (in the product layout of the mean
    pass ``mp``; None without it), covariances (b, T, n, n) and cross covariances
    Cov(z_{t+1}, z_t | x) (b, T-1, n, n), with b = 1 when the batch shares them. The covariances
    never depend on the data.

    Where it can stand in, ``method="sequential"`` runs the recursion compiled
    (:func:`seqlvm.kalman.native.rts_covariances` and
    :func:`~seqlvm.kalman.native.smoothed_means`), with the means in the textbook form
    ``m_{t|T} = m_{t|t} + E_t (m_{t+1|T} - m_{t+1|t})``.
    """
    if method == "sequential":
        compiled = _smooth_compiled(prep, filt, mp)
        if compiled is not None:
            return compiled
    kernel = backward_kernel(prep, filt, mp, steady_from)
    P_last = _cov_batch(filt.covs)[:, -1]
    m = None if mp is None else mp.means
    if prep.steps == 1:
        covs = _cov_batch(filt.covs)
    else:
        if mp is not None:
            m_last = mp.means[:, -1]
            m = steady_linear_recurrence(kernel.E, kernel.g, m_last, kernel.steady_from, method, reverse=True)
            m = torch.cat([m, m_last.unsqueeze(1)], dim=1)
        covs = _smooth_covariances(kernel, P_last, method)
    return m, covs, covs[:, 1:] @ kernel.E.transpose(-1, -2)


def _smooth_compiled(
    prep: Prepared, filt: FilterResult, mp: MeanPass | None
) -> tuple[Tensor | None, Tensor, Tensor] | None:
    """:func:`smooth_filtered`'s result from the compiled loops, or None where they cannot
    stand in: a gradient wanted, not on the CPU, not built, or a predicted covariance that
    rounding to float32 took off the positive-definite cone (the jittered factorisation of
    :func:`backward_kernel` then serves)."""
    P_f, P_p = _cov_batch(filt.covs), _cov_batch(filt.pred_covs)
    data = [] if mp is None else [mp.means, mp.pred_means]
    if not native.usable(prep.A, P_f, P_p, *data):
        return None
    out = native.rts_covariances(prep.A, P_f, P_p, STEADY_MARGIN)
    if out is None:
        return None
    E, covs, cross = (v.to(P_f.dtype) for v in out)
    means = None if mp is None else native.smoothed_means(E, mp.means, mp.pred_means)
    return means, covs, cross


def _smoother_combine(earlier: tuple[Tensor, ...], later: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """(E_i, L_i) applied after (E_j, L_j): (E_i E_j, E_i L_j E_i^T + L_i), the covariance part of
    composing the backward conditionals."""
    Ei, Li = earlier
    Ej, Lj = later
    return Ei @ Ej, sym(Ei @ Lj @ Ei.transpose(-1, -2) + Li)


def _smooth_covariances(kernel: BackwardKernel, P_last: Tensor, method: str) -> Tensor:
    """P_{t|T} = E_t P_{t+1|T} E_t^T + L_t backwards from P_{T-1|T} = P_last -> (b, T, n, n).

    Where the filter was steady (t >= s) E and L are constant, so P_{T-1-j|T} =
    E^j P_last E^jT + S_j with (E^j, S_j) the j-th power of (E, L) under the composition, by
    doubling (:func:`steady_powers`, in :func:`~seqlvm.kalman.linalg.precise_dtype`) until the
    covariances are steady; the steps before s are the recurrence itself, for
    :func:`~seqlvm.kalman.scan.linear_recurrence` (a loop or the blocked scan, by ``method``).
    """
    E, Lc, s = kernel.E, kernel.L, kernel.steady_from
    T = E.shape[1] + 1
    b = max(E.shape[0], P_last.shape[0])
    tail = P_last.unsqueeze(1).expand(b, 1, -1, -1)  # the covariances from step s (or T-1) on
    if s is not None and s < T - 1:
        count, work = T - 1 - s, precise_dtype(E)
        start = tail.to(work)

        def backwards(powers: tuple[Tensor, ...]) -> Tensor:  # steps T-1, T-2, ..., T-1-N
            Ej, Sj = powers
            return torch.cat([start, sym(Ej @ start @ Ej.transpose(-1, -2) + Sj)], 1)

        elem = (E[:, s : s + 1].to(work), Lc[:, s : s + 1].to(work))
        covs, steady = steady_powers(_smoother_combine, elem, backwards, count)
        covs = covs.to(E.dtype)
        if steady is not None:  # steps T-1-steady .. s all hold the steady value
            held = covs[:, steady : steady + 1].expand(-1, count - steady, -1, -1)
            covs = torch.cat([covs[:, : steady + 1], held], 1)
        tail = covs.flip(1)
    head = s if s is not None and s < T - 1 else T - 1
    if head == 0:
        return tail
    covs = linear_recurrence(E[:, :head], Lc[:, :head], tail[:, 0], method, reverse=True, congruence=True)
    return torch.cat([sym(covs), tail], 1)


def sample_posterior(
    params: LGSSMParams,
    x: Tensor,
    mask: Tensor | None = None,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    *,
    u: Tensor | None = None,
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
    filt, gains, mp = run_filter(prep, method)
    S, Bt, T, n = num_samples, prep.batch, prep.steps, prep.n
    eps = torch.randn(S * Bt, T, n, dtype=x.dtype, device=x.device, generator=generator)
    noise = columns(eps, mp.shared)  # draw s of sequence b is column (or row) s * Bt + b

    def per_draw(V: Tensor) -> Tensor:  # the sequences' data, repeated for each draw
        return V.repeat(*([1] * (V.dim() - 1)), S) if mp.shared else V.repeat(S, *([1] * (V.dim() - 1)))

    def per_draw_matrix(M: Tensor) -> Tensor:  # matrices: repeated only when per sequence
        return M.repeat(S, *([1] * (M.dim() - 1))) if M.shape[0] > 1 else M

    L_last = per_draw_matrix(safe_cholesky(_cov_batch(filt.covs)[:, -1]))
    z_last = per_draw(mp.means[:, -1]) + L_last @ noise[:, -1]
    log_prob = mvn_logpdf_of_noise(eps[:, -1], L_last)
    if T > 1:
        kernel = backward_kernel(prep, filt, mp, gains.steady_from)
        chol = per_draw_matrix(safe_cholesky(kernel.L))  # (b, T-1, n, n)
        drive = per_draw(kernel.g) + chol @ noise[:, :-1]
        E = per_draw_matrix(kernel.E)
        z_prev = steady_linear_recurrence(E, drive, z_last, kernel.steady_from, method, reverse=True)
        z = torch.cat([z_prev, z_last.unsqueeze(1)], dim=1)
        log_prob = log_prob + mvn_logpdf_of_noise(eps[:, :-1], chol).sum(-1)
    else:
        z = z_last.unsqueeze(1)
    z = uncolumns(z)
    return PosteriorSamples(z.view(S, Bt, T, n), log_prob.view(S, Bt))

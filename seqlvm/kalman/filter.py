"""The Kalman filter: exact filtering moments and log-likelihood of a linear-Gaussian SSM.

For each step t (0-based), with ``m_{0|-1} = m0`` and ``P_{0|-1} = P0``::

    predict   m_{t|t-1} = A_t m_{t-1|t-1} + B_t u_t,   P_{t|t-1} = A_t P_{t-1|t-1} A_t^T + Q_t
    innovate  r_t = x_t - C_t m_{t|t-1},               S_t = C_t P_{t|t-1} C_t^T + R_t
    update    K_t = P_{t|t-1} C_t^T S_t^{-1}   (Cholesky solve),   m_{t|t} = m_{t|t-1} + K_t r_t
              P_{t|t} = (I - K_t C_t) P_{t|t-1} (I - K_t C_t)^T + K_t R_t K_t^T      (Joseph form)
    log p(x_{0:T-1}) = sum_t log N(r_t; 0, S_t)      (prediction-error decomposition)

Missing entries are projected out of the update (see ``Prepared.emission``); a step with nothing
observed is predict-only and adds exactly 0 to the log-likelihood.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from seqlvm.kalman.linalg import matvec, mvn_logpdf_chol, safe_cholesky, sym
from seqlvm.kalman.params import LGSSMParams, Prepared, prepare
from seqlvm.kalman.scan import associative_scan, constant_linear_recurrence

METHODS = ("sequential", "parallel")


class FilterResult(NamedTuple):
    """Filtering moments, one-step predictions and the exact log-likelihood.

    means:      (Bt, T, n)     E[z_t | x_{0:t}]
    covs:       (Bt, T, n, n)  Cov[z_t | x_{0:t}]
    pred_means: (Bt, T, n)     E[z_t | x_{0:t-1}]; pred_means[:, 0] = m0
    pred_covs:  (Bt, T, n, n)  Cov[z_t | x_{0:t-1}]; pred_covs[:, 0] = P0
    log_likelihood:      (Bt,)    log p(x_obs), the observed entries only
    step_log_likelihood: (Bt, T)  log p(x_t,obs | x_{0:t-1},obs); 0 where nothing is observed

    Covariances do not depend on the data; where they are shared by the batch they are
    broadcast views (``expand``), not copies.
    """

    means: Tensor
    covs: Tensor
    pred_means: Tensor
    pred_covs: Tensor
    log_likelihood: Tensor
    step_log_likelihood: Tensor


def check_method(method: str, fn: str) -> None:
    if method not in METHODS:
        raise ValueError(f"{fn}: method must be one of {METHODS}; got {method!r}")


def kalman_filter(
    params: LGSSMParams,
    x: Tensor,
    mask: Tensor | None = None,
    u: Tensor | None = None,
    method: str = "sequential",
) -> FilterResult:
    """Filter ``x`` (Bt, T, m) under ``params``; see the module docstring for the recursion.

    mask: (Bt, T) or (Bt, T, m), True where observed (NaNs in x are missing too).
    u:    (Bt, T, k) controls (``u[:, 0]`` is unused), required when ``params.B`` is set.
    method: ``"sequential"`` (a loop over steps; once the covariances of a time-invariant,
        fully observed model reach their steady state to machine precision, the remaining means
        are solved in blocks, so results stay exact) or ``"parallel"`` (the associative scan of
        Särkkä & García-Fernández 2021, O(log T) depth). Both agree to rounding error.
    Differentiable with respect to every parameter and to x.
    """
    check_method(method, "kalman_filter")
    prep = prepare(params, x, mask, u, fn="kalman_filter")
    result, _ = run_filter(prep, method)
    return result


def run_filter(prep: Prepared, method: str) -> tuple[FilterResult, int | None]:
    """The filter on prepared inputs; also returns the step from which it was steady (or None)."""
    if method == "parallel":
        return _filter_parallel(prep), None
    return _filter_sequential(prep)


def _update_covariance(P_pred: Tensor, C: Tensor, R: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gain, Cholesky factor of S and Joseph-form filtered covariance: (b,n,m), (b,m,m), (b,n,n)."""
    CP = C @ P_pred
    L = safe_cholesky(sym(CP @ C.transpose(-1, -2) + R))
    K = torch.cholesky_solve(CP, L).transpose(-1, -2)
    IKC = torch.eye(P_pred.shape[-1], dtype=P_pred.dtype, device=P_pred.device) - K @ C
    P = sym(IKC @ P_pred @ IKC.transpose(-1, -2) + K @ R @ K.transpose(-1, -2))
    return K, L, P


def _converged(new: Tensor, old: Tensor) -> bool:
    """True when two covariances agree to a few units of rounding error."""
    tol = 8 * torch.finfo(new.dtype).eps
    return bool((new - old).abs().amax() <= tol * new.abs().amax())


def _filter_sequential(prep: Prepared) -> tuple[FilterResult, int | None]:
    T, Bt = prep.steps, prep.batch
    x, count = prep.x, prep.observed_count()
    # Without a mask and with fixed parameters, the covariances do not depend on the data and
    # converge to a steady state; from there on every step reuses the same gain.
    watch_steady = prep.time_invariant and prep.observed is None
    means, covs, pmeans, pcovs, lls = [], [], [], [], []
    steady_from, calm = None, 0
    m = P = None
    for t in range(T):
        if t == 0:
            m_pred, P_pred = prep.m0.expand(Bt, -1), prep.P0
        else:
            A = prep.at("A", t)
            m_pred = matvec(A, m)
            offset = prep.control(t)
            if offset is not None:
                m_pred = m_pred + offset
            P_pred = sym(A @ P @ A.transpose(-1, -2) + prep.at("Q", t))
            if watch_steady and t >= 2:
                calm = calm + 1 if _converged(P_pred, pcovs[-1]) else 0
                if calm >= 2:
                    steady_from = t
                    break
        C, R = prep.emission(t)
        K, L, P = _update_covariance(P_pred, C, R)
        r = x[:, t] - matvec(C, m_pred)
        m = m_pred + matvec(K, r)
        c = count if isinstance(count, float) else count[:, t]
        lls.append(mvn_logpdf_chol(r, L, c))
        means.append(m)
        covs.append(P)
        pmeans.append(m_pred)
        pcovs.append(P_pred)
    if steady_from is None:
        return _assemble(prep, means, covs, pmeans, pcovs, torch.stack(lls, 1)), None

    # Steady state from step s = steady_from: gain K, factor L, covariances as at step s - 1.
    s = steady_from
    A, C = prep.at("A", s), prep.at("C", s)
    n = prep.n
    IKC = torch.eye(n, dtype=x.dtype, device=x.device) - K @ C
    # m_pred_{t+1} = A (I - K C) m_pred_t + A K x_t + B u_{t+1}, for t = s .. T-2.
    # Constant matrices get a time axis so they broadcast against (Bt, steps, ...).
    A, C, K, IKC = (M.unsqueeze(1) for M in (A, C, K, IKC))
    drive = matvec(A @ K, x[:, s:-1])
    controls = prep.controls()
    if controls is not None:
        drive = drive + controls[:, s + 1 :]
    tail_pred = constant_linear_recurrence((A @ IKC)[:, 0], drive, m_pred)
    pred_tail = torch.cat([m_pred.unsqueeze(1), tail_pred], dim=1)  # (Bt, T - s, n)
    mean_tail = matvec(IKC, pred_tail) + matvec(K, x[:, s:])
    r_tail = x[:, s:] - matvec(C, pred_tail)
    ll_tail = mvn_logpdf_chol(r_tail, L.unsqueeze(1), count)
    steps = T - s
    b = P.shape[0]
    result = _assemble(
        prep,
        means,
        covs,
        pmeans,
        pcovs,
        torch.cat([torch.stack(lls, 1), ll_tail], dim=1),
        tail=(mean_tail, P.unsqueeze(1).expand(b, steps, n, n), pred_tail, pcovs[-1].unsqueeze(1).expand(b, steps, n, n)),
    )
    return result, s


def _assemble(
    prep: Prepared,
    means: list[Tensor],
    covs: list[Tensor],
    pmeans: list[Tensor],
    pcovs: list[Tensor],
    step_ll: Tensor,
    tail: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
) -> FilterResult:
    """Stack per-step lists (plus an optional already-stacked tail) into a FilterResult."""
    Bt, T, n = prep.batch, prep.steps, prep.n
    parts = [torch.stack(means, 1), torch.stack(covs, 1), torch.stack(pmeans, 1), _stack_covs(pcovs)]
    if tail is not None:
        parts = [torch.cat([p, q], dim=1) for p, q in zip(parts, tail)]
    m, P, mp, Pp = parts
    return FilterResult(
        m,
        P.expand(Bt, T, n, n),
        mp,
        Pp.expand(Bt, T, n, n),
        step_ll.sum(1),
        step_ll,
    )


def _stack_covs(covs: list[Tensor]) -> Tensor:
    """Stack (b_t, n, n) covariances whose batch sizes differ (P0 may be shared, later ones not)."""
    b = max(c.shape[0] for c in covs)
    return torch.stack([c.expand(b, -1, -1) for c in covs], 1)


def _along_time(first: Tensor, rest: Tensor) -> Tensor:
    """Concatenate a step-0 value (b1, ...) with steps 1.. (b2, T-1, ...) on dim 1, broadcasting b."""
    b = max(first.shape[0], rest.shape[0])
    first = first.unsqueeze(1)
    return torch.cat([first.expand(b, *first.shape[1:]), rest.expand(b, *rest.shape[1:])], dim=1)


def _full_time(p: Tensor, T: int) -> Tensor:
    """A (b, T', ...) parameter as (b, T, ...) (a view when T' = 1)."""
    return p.expand(p.shape[0], T, *p.shape[2:])


def _filter_combine(earlier: tuple[Tensor, ...], later: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Särkkä & García-Fernández (2021), eq. for (A, b, C, eta, J) of two filtering elements.

    With M = I + C_i J_j:  A = A_j M^-1 A_i,  b = A_j M^-1 (b_i + C_i eta_j) + b_j,
    C = A_j M^-1 C_i A_j^T + C_j,  eta = A_i^T M^-T (eta_j - J_j b_i) + eta_i,
    J = A_i^T M^-T J_j A_i + J_i.
    """
    Ai, bi, Ci, etai, Ji = earlier
    Aj, bj, Cj, etaj, Jj = later
    eye = torch.eye(Ai.shape[-1], dtype=Ai.dtype, device=Ai.device)
    Mt = eye + Jj @ Ci  # = M^T, as C and J are symmetric
    W = torch.linalg.solve(Mt, Aj.transpose(-1, -2)).transpose(-1, -2)  # A_j M^-1
    V = torch.linalg.solve(Mt.transpose(-1, -2), Ai).transpose(-1, -2)  # A_i^T M^-T
    return (
        W @ Ai,
        matvec(W, bi + matvec(Ci, etaj)) + bj,
        sym(W @ Ci @ Aj.transpose(-1, -2) + Cj),
        matvec(V, etaj - matvec(Jj, bi)) + etai,
        sym(V @ Jj @ Ai + Ji),
    )


def _filter_parallel(prep: Prepared) -> FilterResult:
    """Parallel-in-time filter: one element per step, combined by an associative scan."""
    T, Bt, n = prep.steps, prep.batch, prep.n
    x = prep.x
    # Fold the prior into step 0 as a transition from nothing: A_0 = 0, offset m0, noise P0.
    A = _full_time(prep.A, T)
    A = torch.cat([torch.zeros_like(A[:, :1]), A[:, 1:]], dim=1)
    Q = _along_time(prep.P0, _full_time(prep.Q, T)[:, 1:])
    controls = prep.controls()
    rest = controls[:, 1:] if controls is not None else x.new_zeros(1, T - 1, n)
    offset = _along_time(prep.m0, rest).expand(Bt, T, n)
    C, R = prep.emission(slice(None))
    Ct = C.transpose(-1, -2)
    CQ = C @ Q
    L = safe_cholesky(sym(CQ @ Ct + R))
    K = torch.cholesky_solve(CQ, L).transpose(-1, -2)
    IKC = torch.eye(n, dtype=x.dtype, device=x.device) - K @ C
    r = x - matvec(C, offset)
    CA = C @ A
    SinvCA = torch.cholesky_solve(CA, L)
    elems = (
        IKC @ A,
        offset + matvec(K, r),
        sym(IKC @ Q @ IKC.transpose(-1, -2) + K @ R @ K.transpose(-1, -2)),
        matvec(SinvCA.transpose(-1, -2), r),
        sym(CA.transpose(-1, -2) @ SinvCA),
    )
    _, means, covs, _, _ = associative_scan(_filter_combine, elems)

    # One-step predictions and the innovations, for all steps at once.
    A_full = _full_time(prep.A, T)[:, 1:]
    pred_rest = matvec(A_full, means[:, :-1])
    if controls is not None:
        pred_rest = pred_rest + controls[:, 1:]
    pmeans = torch.cat([prep.m0.expand(Bt, n).unsqueeze(1), pred_rest], dim=1)
    pcovs = _along_time(
        prep.P0, sym(A_full @ covs[:, :-1] @ A_full.transpose(-1, -2) + _full_time(prep.Q, T)[:, 1:])
    )
    S = sym(C @ pcovs @ Ct + R)
    step_ll = mvn_logpdf_chol(x - matvec(C, pmeans), safe_cholesky(S), prep.observed_count())
    return FilterResult(
        means,
        covs.expand(Bt, T, n, n),
        pmeans,
        pcovs.expand(Bt, T, n, n),
        step_ll.sum(1),
        step_ll,
    )

"""The Kalman filter: exact filtering moments and log-likelihood of a linear-Gaussian SSM.

For each step t (0-based), with ``m_{0|-1} = m0`` and ``P_{0|-1} = P0``::

    predict   m_{t|t-1} = A_t m_{t-1|t-1} + B_t u_t,   P_{t|t-1} = A_t P_{t-1|t-1} A_t^T + Q_t
    innovate  r_t = x_t - C_t m_{t|t-1},               S_t = C_t P_{t|t-1} C_t^T + R_t
    update    K_t = P_{t|t-1} C_t^T S_t^{-1}   (Cholesky solve),   m_{t|t} = m_{t|t-1} + K_t r_t
              P_{t|t} = (I - K_t C_t) P_{t|t-1} (I - K_t C_t)^T + K_t R_t K_t^T      (Joseph form)
    log p(x_{0:T-1}) = sum_t log N(r_t; 0, S_t)      (prediction-error decomposition)

Missing entries are projected out of the update (see ``Prepared.emission``); a step with nothing
observed is predict-only and adds exactly 0 to the log-likelihood.

The work is split in two passes. The covariances (and with them the gains) never depend on the
values of x, only on which entries are observed: the *covariance pass* computes them once for
the whole batch when the parameters are shared and nothing is missing, by a loop
(``"sequential"``, which stops at the steady state) or an associative scan (``"parallel"``).
Given the gains, the filtered means obey an affine recurrence
``m_t = (I - K_t C_t) A_t m_{t-1} + (I - K_t C_t) B_t u_t + K_t x_t``: the *mean pass* solves it
by a loop or a scan, and in exact blocks wherever the gain is steady.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from seqlvm.kalman.linalg import converged, matvec, mvn_logpdf_chol, sym
from seqlvm.kalman.params import LGSSMParams, Prepared, prepare
from seqlvm.kalman.scan import associative_scan, steady_linear_recurrence

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


class Gains(NamedTuple):
    """The data-independent half of the filter, batch b (1 when shared by the sequences).

    pred_covs, covs (b, T, n, n); gains K (b, T, n, m); chols (b, T, m, m), the Cholesky factors of
    the innovation covariances S_t; steady_from: the step from which all of them are constant,
    or None.
    """

    pred_covs: Tensor
    covs: Tensor
    K: Tensor
    chols: Tensor
    steady_from: int | None


def _not_positive_definite() -> ValueError:
    return ValueError(
        "the innovation covariance C P C^T + R is not positive definite at some step; "
        "R, Q and P0 must be positive definite"
    )


def _cholesky(S: Tensor) -> Tensor:
    """Factor innovation covariances; they fail only when R (or Q, P0) is not positive definite."""
    L, info = torch.linalg.cholesky_ex(S)
    if bool(info.any()):
        raise _not_positive_definite()
    return L


STEADY_CHECK_EVERY = 4  # steps between steady-state tests (each costs a device sync)


def _covariances_sequential(prep: Prepared, C_all: Tensor, R_all: Tensor) -> Gains:
    """Riccati recursion step by step; stops once a time-invariant, unmasked model is steady."""
    T, n = prep.steps, prep.n
    eye = torch.eye(n, dtype=C_all.dtype, device=C_all.device)
    watch_steady = prep.time_invariant and prep.observed is None
    pcovs, covs, gains, infos = [], [], [], []
    steady_from, P = None, None
    for t in range(T):
        if t == 0:
            P_pred = prep.P0
        else:
            A = prep.at("A", t)
            P_pred = sym(A @ P @ A.transpose(-1, -2) + prep.at("Q", t))
            if watch_steady and t % STEADY_CHECK_EVERY == 0 and t >= 2 * STEADY_CHECK_EVERY:
                if converged(P_pred, pcovs[-1]) and converged(pcovs[-1], pcovs[-2]):
                    steady_from = t
                    break
        C = C_all[:, t] if C_all.shape[1] > 1 else C_all[:, 0]
        R = R_all[:, t] if R_all.shape[1] > 1 else R_all[:, 0]
        CP = C @ P_pred
        L, info = torch.linalg.cholesky_ex(CP @ C.transpose(-1, -2) + R)
        Kt = torch.cholesky_solve(CP, L)  # K^T = S^-1 C P
        IKC = eye - Kt.transpose(-1, -2) @ C
        P = sym(IKC @ P_pred @ IKC.transpose(-1, -2) + Kt.transpose(-1, -2) @ R @ Kt)  # Joseph form
        pcovs.append(P_pred)
        covs.append(P)
        gains.append((Kt.transpose(-1, -2), L))
        infos.append(info)
    if bool(torch.stack([i.reshape(-1) for i in infos]).any()):  # one sync, after the loop
        raise _not_positive_definite()
    steps = len(covs)
    parts = [pcovs, covs, [k for k, _ in gains], [c for _, c in gains]]
    stacked = []
    for seq in parts:
        b = max(v.shape[0] for v in seq)
        block = torch.stack([v.expand(b, *v.shape[1:]) for v in seq], 1)
        if steps < T:  # steady: the last value holds for the remaining steps
            block = torch.cat([block, block[:, -1:].expand(b, T - steps, *block.shape[2:])], 1)
        stacked.append(block)
    return Gains(*stacked, steady_from)


def _along_time(first: Tensor, rest: Tensor) -> Tensor:
    """Concatenate a step-0 value (b1, ...) with steps 1.. (b2, T-1, ...) on dim 1, broadcasting b."""
    b = max(first.shape[0], rest.shape[0])
    first = first.unsqueeze(1)
    return torch.cat([first.expand(b, *first.shape[1:]), rest.expand(b, *rest.shape[1:])], dim=1)


def full_time(p: Tensor, T: int) -> Tensor:
    """A (b, T', ...) parameter as (b, T, ...) (a view when T' = 1)."""
    return p.expand(p.shape[0], T, *p.shape[2:])


def _covariance_combine(earlier: tuple[Tensor, ...], later: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The (A, C, J) part of Särkkä & García-Fernández's (2021) filtering operator.

    With M = I + C_i J_j:  A = A_j M^-1 A_i,  C = A_j M^-1 C_i A_j^T + C_j,
    J = A_i^T M^-T J_j A_i + J_i.  (Their b and eta parts are the mean pass's affine scan.)
    """
    Ai, Ci, Ji = earlier
    Aj, Cj, Jj = later
    eye = torch.eye(Ai.shape[-1], dtype=Ai.dtype, device=Ai.device)
    Mt = eye + Jj @ Ci  # = M^T, as C and J are symmetric
    W = torch.linalg.solve(Mt, Aj.transpose(-1, -2)).transpose(-1, -2)  # A_j M^-1
    V = torch.linalg.solve(Mt.transpose(-1, -2), Ai).transpose(-1, -2)  # A_i^T M^-T
    return W @ Ai, sym(W @ Ci @ Aj.transpose(-1, -2) + Cj), sym(V @ Jj @ Ai + Ji)


def _covariances_parallel(prep: Prepared, C_all: Tensor, R_all: Tensor) -> Gains:
    """All filtered covariances by an associative scan, O(log T) depth.

    Element t conditions z_t on x_t given z_{t-1}: with the prior folded into step 0 as a
    transition from nothing (A_0 = 0, noise P0), ``S = C Q C^T + R``, ``K = Q C^T S^-1``,
    ``A_el = (I - K C) A``, ``C_el = (I - K C) Q (I - K C)^T + K R K^T``,
    ``J_el = A^T C^T S^-1 C A``.
    """
    T, n = prep.steps, prep.n
    A = full_time(prep.A, T)
    A0 = torch.cat([torch.zeros_like(A[:, :1]), A[:, 1:]], dim=1)
    Q0 = _along_time(prep.P0, full_time(prep.Q, T)[:, 1:])
    C, R = C_all, R_all
    Ct = C.transpose(-1, -2)
    CQ = C @ Q0
    L = _cholesky(CQ @ Ct + R)
    Kt = torch.cholesky_solve(CQ, L)
    K = Kt.transpose(-1, -2)
    IKC = torch.eye(n, dtype=A.dtype, device=A.device) - K @ C
    CA = C @ A0
    elems = (
        IKC @ A0,
        sym(IKC @ Q0 @ IKC.transpose(-1, -2) + K @ R @ Kt),
        sym(CA.transpose(-1, -2) @ torch.cholesky_solve(CA, L)),
    )
    _, covs, _ = associative_scan(_covariance_combine, elems)
    pred_covs = _along_time(prep.P0, sym(A[:, 1:] @ covs[:, :-1] @ A[:, 1:].transpose(-1, -2) + full_time(prep.Q, T)[:, 1:]))
    CP = C @ pred_covs
    chols = _cholesky(CP @ Ct + R)
    gains = torch.cholesky_solve(CP, chols).transpose(-1, -2)
    b = max(covs.shape[0], pred_covs.shape[0], gains.shape[0])
    parts = [v.expand(b, *v.shape[1:]) for v in (pred_covs, covs, gains, chols)]
    steady_from = _steady_from(pred_covs) if prep.time_invariant and prep.observed is None else None
    if steady_from is not None:
        # Hold the steady values exactly: the mean pass then solves that stretch with one gain,
        # and per-step rounding differences must not enter it (they drift along slow modes).
        parts = [torch.cat([v[:, :steady_from], v[:, steady_from : steady_from + 1].expand_as(v[:, steady_from:])], 1) for v in parts]
    return Gains(*parts, steady_from)


def _steady_from(pred_covs: Tensor) -> int | None:
    """The first step from which the predicted covariances stay put to rounding error, or None."""
    P = pred_covs.detach()
    if P.shape[1] < 3:
        return None
    step = (P[:, 1:] - P[:, :-1]).abs().amax(dim=(0, 2, 3))  # change into step t+1, (T-1,)
    calm = (step <= 8 * torch.finfo(P.dtype).eps * P.abs().amax()).int()
    calm_after = calm.flip(0).cummin(0).values.flip(0)  # 1 where every later change is calm too
    first = int(torch.argmax(calm_after)) if bool(calm_after.any()) else None
    return None if first is None else first + 1


def run_filter(prep: Prepared, method: str) -> tuple[FilterResult, Gains]:
    """The filter on prepared inputs, and its data-independent half (gains, steady state)."""
    T, Bt, n = prep.steps, prep.batch, prep.n
    x = prep.x
    C_all, R_all = prep.emission()
    gains = (_covariances_parallel if method == "parallel" else _covariances_sequential)(prep, C_all, R_all)
    K, s = gains.K, gains.steady_from
    C = full_time(C_all, T)
    IKC = torch.eye(n, dtype=x.dtype, device=x.device) - K @ C  # (b, T, n, n)
    # Mean pass: m_t = F_t m_{t-1} + g_t with F_t = (I - K_t C_t) A_t, g_t = (I - K_t C_t) B_t u_t + K_t x_t.
    g = matvec(K, x)
    controls = prep.controls()
    if controls is not None:  # u_0 drives nothing: z_0 is the prior
        g = g + torch.cat([torch.zeros_like(controls[:, :1]), matvec(IKC[:, 1:], controls[:, 1:])], dim=1)
    m_first = matvec(IKC[:, 0], prep.m0.expand(Bt, n)) + g[:, 0]
    if T == 1:
        means = m_first.unsqueeze(1)
    else:
        F = IKC[:, 1:] @ full_time(prep.A, T)[:, 1:]  # F[:, t - 1] leads into step t
        rest = steady_linear_recurrence(F, g[:, 1:], m_first, None if s is None else s - 1, method)
        means = torch.cat([m_first.unsqueeze(1), rest], dim=1)
    # One-step predictions and innovations, all steps at once.
    pred = matvec(full_time(prep.A, T)[:, 1:], means[:, :-1])
    if controls is not None:
        pred = pred + controls[:, 1:]
    pred_means = torch.cat([prep.m0.expand(Bt, n).unsqueeze(1), pred], dim=1)
    step_ll = mvn_logpdf_chol(x - matvec(C, pred_means), gains.chols, prep.observed_count())
    return (
        FilterResult(
            means,
            gains.covs.expand(Bt, T, n, n),
            pred_means,
            gains.pred_covs.expand(Bt, T, n, n),
            step_ll.sum(1),
            step_ll,
        ),
        gains,
    )

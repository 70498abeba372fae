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
the whole batch when the parameters are shared and nothing is missing. For a time-invariant,
fully observed model it runs only up to the steady state. ``"sequential"`` runs it as a loop,
compiled (``seqlvm.kalman.native``, in stretches up to the steady state) where no gradient is
taken through it on the CPU. Otherwise the steady state comes by doubling
(``_covariances_steady``), and other models take a loop (``"sequential"``) or Särkkä &
García-Fernández's associative scan (``"parallel"``).
Given the gains, the filtered means obey an affine recurrence
``m_t = (I - K_t C_t) A_t m_{t-1} + (I - K_t C_t) B_t u_t + K_t x_t``: the *mean pass* solves it
by a loop (compiled where the covariance pass is) or a blocked scan, and in exact blocks
wherever the gain is steady.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import torch
from torch import Tensor

from seqlvm.kalman import native
from seqlvm.kalman.linalg import columns, matmul_add, precise_dtype, sym, uncolumns
from seqlvm.kalman.params import LOG_2PI, LGSSMParams, Prepared, per_step, prepare
from seqlvm.kalman.scan import FIRST_STRETCH, associative_scan, steady_linear_recurrence, steady_powers, steady_start

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
    broadcast views (``expand``), not copies. Where the parameters are shared, the means are
    views of a (T, n, Bt) layout (see ``linalg.columns``): use ``reshape``, not ``view``.
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
    method: ``"sequential"`` (a loop over steps) or ``"parallel"`` (parallel in time: the
        covariances by the associative scan of Särkkä & García-Fernández 2021, O(log T) depth,
        the means by a blocked scan). Both agree to rounding error. On the CPU, where no gradient
        is taken, ``"sequential"`` runs compiled loops (``seqlvm.kalman.native``), the fastest
        there. For a time-invariant, fully observed model both compute the covariances only
        until they reach their steady state to machine precision; the PyTorch code then solves
        the means of the steady stretch in exact blocks.
    Differentiable with respect to every parameter and to x.
    """
    check_method(method, "kalman_filter")
    prep = prepare(params, x, mask, u, fn="kalman_filter")
    return run_filter(prep, method)[0]


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

    def to(self, dtype: torch.dtype) -> Gains:
        """The four sequences in ``dtype`` (themselves when they are in it already)."""
        return Gains(*(v.to(dtype) for v in self[:4]), self.steady_from)


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


def _covariances_sequential(prep: Prepared, C_all: Tensor, R_all: Tensor) -> Gains:
    """Riccati recursion step by step (time-varying or partly observed models)."""
    T, n = prep.steps, prep.n
    eye = torch.eye(n, dtype=C_all.dtype, device=C_all.device)
    pcovs, covs, gains, chols, infos = [], [], [], [], []
    P = None
    steps = zip(prep.per_step("A"), prep.per_step("Q"), per_step(C_all, T), per_step(R_all, T))
    for t, (A, Q, C, R) in enumerate(steps):
        P_pred = prep.P0 if t == 0 else sym(A @ P @ A.transpose(-1, -2) + Q)
        CP = C @ P_pred
        L, info = torch.linalg.cholesky_ex(CP @ C.transpose(-1, -2) + R)
        Kt = torch.cholesky_solve(CP, L)  # K^T = S^-1 C P
        IKC = eye - Kt.transpose(-1, -2) @ C
        P = sym(IKC @ P_pred @ IKC.transpose(-1, -2) + Kt.transpose(-1, -2) @ R @ Kt)  # Joseph form
        pcovs.append(P_pred)
        covs.append(P)
        gains.append(Kt.transpose(-1, -2))
        chols.append(L)
        infos.append(info)
    if bool(torch.cat([i.reshape(-1) for i in infos]).any()):  # one sync, after the loop
        raise _not_positive_definite()
    stacked = []
    for seq in (pcovs, covs, gains, chols):
        b = max(v.shape[0] for v in seq)
        stacked.append(torch.stack([v.expand(b, *v.shape[1:]) for v in seq], 1))
    return Gains(*stacked, None)


def _covariances_compiled(prep: Prepared, C_all: Tensor, R_all: Tensor) -> Gains:
    """The recursion of :func:`_covariances_sequential` as a compiled loop
    (:func:`seqlvm.kalman.native.riccati`), in float64 and rounded once to the model's dtype.

    A time-invariant, fully observed model runs in stretches (``FIRST_STRETCH`` steps, then four
    times as many in all, and so on) until its filtered covariances are steady, by the test of
    :func:`_covariances_steady`, which it then follows in holding them (a sequence no longer
    than the first stretch is not tested: that would save no step): a step costs O(n^3), so
    on long sequences of large states the steps after the steady state were most of the work
    (4 sequences of 10,000 steps, n = 32: 2.2 s for every step against 0.9 s for the doubling).
    """
    T = prep.steps

    def steps(P: Tensor, count: int, continued: bool) -> list[Tensor]:
        out = native.riccati(prep.A, prep.Q, C_all, R_all, P, count, continued)
        if out is None:
            raise _not_positive_definite()
        return list(out)

    settles = prep.time_invariant and prep.observed is None
    out = steps(prep.P0, min(T, FIRST_STRETCH) if settles else T, False)
    s = None
    while settles and out[1].shape[1] < T:  # the test saves the steps after it, none here
        done = out[1].shape[1]
        s = steady_start(out[1])
        if s is not None:
            break
        more = steps(out[1][:, -1], min(T - done, 3 * done), True)
        out = [torch.cat([a, b], 1) for a, b in zip(out, more)]
    if s is None:
        return Gains(*out, None).to(C_all.dtype)
    return _held(Gains(*(v[:, : s + 2] for v in out), None).to(C_all.dtype), T)


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
    J = A_i^T M^-T J_j A_i + J_i.  (Their b and eta parts are the mean pass's affine recurrence.)
    """
    Ai, Ci, Ji = earlier
    Aj, Cj, Jj = later
    eye = torch.eye(Ai.shape[-1], dtype=Ai.dtype, device=Ai.device)
    Mt = eye + Jj @ Ci  # = M^T, as C and J are symmetric
    W = torch.linalg.solve(Mt, Aj.transpose(-1, -2)).transpose(-1, -2)  # A_j M^-1
    V = torch.linalg.solve(Mt.transpose(-1, -2), Ai).transpose(-1, -2)  # A_i^T M^-T
    return W @ Ai, sym(W @ Ci @ Aj.transpose(-1, -2) + Cj), sym(V @ Jj @ Ai + Ji)


def _scan_elements(A: Tensor, Q: Tensor, C: Tensor, R: Tensor) -> tuple[Tensor, ...]:
    """The operator's elements for steps with transition (A, Q) and emission (C, R), (b, N, ...).

    Element t conditions z_t on x_t given z_{t-1}: ``S = C Q C^T + R``, ``K = Q C^T S^-1``,
    ``A_el = (I - K C) A``, ``C_el = (I - K C) Q (I - K C)^T + K R K^T``,
    ``J_el = A^T C^T S^-1 C A``. The prior enters as step 0's transition from nothing
    (A = 0, Q = P0).
    """
    CQ = C @ Q
    L = _cholesky(CQ @ C.transpose(-1, -2) + R)
    Kt = torch.cholesky_solve(CQ, L)
    K = Kt.transpose(-1, -2)
    IKC = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device) - K @ C
    CA = C @ A
    elems = (
        IKC @ A,
        sym(IKC @ Q @ IKC.transpose(-1, -2) + K @ R @ Kt),
        sym(CA.transpose(-1, -2) @ torch.cholesky_solve(CA, L)),
    )
    # One batch size for all three (a batched A with shared Q gives a batched A_el and a shared
    # C_el): the scans concatenate them.
    b = max(e.shape[0] for e in elems)
    return tuple(e.expand(b, *e.shape[1:]) for e in elems)


def _gains_from_covs(prep: Prepared, covs: Tensor, C: Tensor, R: Tensor) -> Gains:
    """Predicted covariances, gains and innovation factors from the filtered covariances
    (b, N, n, n) of steps 0..N-1; C, R (b, N or 1, ...)."""
    N = covs.shape[1]
    A, Q = full_time(prep.A, N)[:, 1:], full_time(prep.Q, N)[:, 1:]
    pred_covs = _along_time(prep.P0, sym(A @ covs[:, :-1] @ A.transpose(-1, -2) + Q))
    CP = C @ pred_covs
    chols = _cholesky(CP @ C.transpose(-1, -2) + R)
    gains = torch.cholesky_solve(CP, chols).transpose(-1, -2)
    b = max(covs.shape[0], pred_covs.shape[0], gains.shape[0])
    return Gains(*(v.expand(b, *v.shape[1:]) for v in (pred_covs, covs, gains, chols)), None)


def _covariances_parallel(prep: Prepared, C_all: Tensor, R_all: Tensor) -> Gains:
    """All filtered covariances by an associative scan, O(log T) depth."""
    T = prep.steps
    A = full_time(prep.A, T)
    A0 = torch.cat([torch.zeros_like(A[:, :1]), A[:, 1:]], dim=1)
    Q0 = _along_time(prep.P0, full_time(prep.Q, T)[:, 1:])
    _, covs, _ = associative_scan(_covariance_combine, _scan_elements(A0, Q0, C_all, R_all))
    return _gains_from_covs(prep, covs, C_all, R_all)


def _covariances_steady(prep: Prepared, C: Tensor, R: Tensor) -> Gains:
    """A time-invariant, fully observed model: the covariances up to their steady state.

    Every scan element after step 0's is the same ``e``, so the filtered covariance of step t is
    that of ``e_0 * e^t``, with the powers of e by doubling (:func:`steady_powers`) until the
    covariances have stayed put to rounding error. From there on every step holds that value
    exactly (so the mean pass can solve that stretch with one gain): the results are exact, not
    an approximation. The work runs in :func:`~seqlvm.kalman.linalg.precise_dtype` (float64 for
    float32 models) and is rounded to the model's dtype at the end, steady state included.
    """
    T, dtype, work = prep.steps, C.dtype, precise_dtype(C)
    prep = replace(prep, A=prep.A.to(work), Q=prep.Q.to(work), P0=prep.P0.to(work))
    C, R = C.to(work), R.to(work)
    first = _scan_elements(torch.zeros_like(prep.A), prep.P0.unsqueeze(1), C, R)
    if T == 1:
        return _gains_from_covs(prep, first[1], C, R).to(dtype)

    def filtered(powers: tuple[Tensor, ...]) -> Tensor:  # steps 0..N
        rest = _covariance_combine(first, powers)[1]
        return torch.cat([first[1].expand(rest.shape[0], -1, -1, -1), rest], 1)

    covs, s = steady_powers(_covariance_combine, _scan_elements(prep.A, prep.Q, C, R), filtered, T - 1)
    if s is None:
        return _gains_from_covs(prep, covs, C, R).to(dtype)
    return _held(_gains_from_covs(prep, covs[:, : s + 2], C, R).to(dtype), T)


def _held(head: Gains, T: int) -> Gains:
    """Gains of steps 0..s+1, whose filtered covariances are steady from step s (so everything
    else is from step s + 1), continued to T steps: from the first step after which none of
    their values changes (rounded to a lower precision, the values may settle before s + 1),
    every step holds the last value."""
    k = _settled(head[:4])
    parts = [torch.cat([v[:, : k + 1], v[:, -1:].expand(-1, T - k - 1, -1, -1)], 1) for v in head[:4]]
    return Gains(*parts, k)


def _settled(seqs: tuple[Tensor, ...]) -> int:
    """The first index along dim 1 from which every sequence (b, N, r, c) equals its last value."""
    flat = torch.cat([v.flatten(2) for v in seqs], -1)
    steps = (flat != flat[:, -1:]).any(-1).any(0).nonzero()
    return int(steps[-1]) + 1 if len(steps) else 0


class MeanPass(NamedTuple):
    """The filter's data-dependent half in the product layout of :func:`~seqlvm.kalman.linalg.columns`
    ((1, T, d, Bt) or (Bt, T, d, 1)), for the smoother and the gradient to build on.

    means, pred_means: filtered and predicted means (n); whitened: the innovations
    v_t = x_t - C_t m_{t|t-1} times L_t^-1, with S_t = L_t L_t^T (m);
    shared: whether the sequences are the columns.
    """

    means: Tensor
    pred_means: Tensor
    whitened: Tensor
    shared: bool


def _mean_pass(
    prep: Prepared, gains: Gains, C_all: Tensor, X: Tensor, controls: Tensor | None, m0: Tensor, method: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Filtered means, one-step predictions and whitened innovations (the MeanPass fields) in
    the product layout, by the affine recurrence of the module docstring, solved by a loop or a
    blocked scan (``method``), in exact blocks where the gain is steady."""
    T, n = prep.steps, prep.n
    K, s = gains.K, gains.steady_from
    C, A = full_time(C_all, T), full_time(prep.A, T)
    IKC = torch.eye(n, dtype=K.dtype, device=K.device) - K @ C  # (b, T, n, n)
    # m_t = F_t m_{t-1} + g_t with F_t = (I - K_t C_t) A_t, g_t = (I - K_t C_t) B_t u_t + K_t x_t.
    # Without controls g_t = K_t x_t is left to the solver (G = K), which forms it only where
    # the gain varies.
    g, G = X, K
    if controls is not None:
        g = K @ X + torch.cat([torch.zeros_like(controls[:, :1]), IKC[:, 1:] @ controls[:, 1:]], dim=1)
        G = None
    # F_0 = I - K_0 C_0 takes the prior mean m0 to m_0, so the recursion starts from m0.
    F = torch.cat([IKC[:, :1], IKC[:, 1:] @ A[:, 1:]], dim=1)
    means = steady_linear_recurrence(F, g, m0, s, method, G=G)
    # One-step predictions and innovations, all steps at once.
    pred = A[:, 1:] @ means[:, :-1]
    if controls is not None:
        pred = pred + controls[:, 1:]
    pred_means = torch.cat([m0.unsqueeze(1), pred], dim=1)
    whitened = torch.linalg.solve_triangular(gains.chols, matmul_add(X, C, pred_means, -1.0), upper=False)
    return means, pred_means, whitened


def run_filter(prep: Prepared, method: str) -> tuple[FilterResult, Gains, MeanPass]:
    """The filter on prepared inputs, its data-independent half (gains, steady state) and its
    mean pass in the product layout."""
    T, Bt, n = prep.steps, prep.batch, prep.n
    C_all, R_all = prep.emission()
    if method == "sequential" and native.usable(prep.A, prep.Q, prep.P0, C_all, R_all):
        gains = _covariances_compiled(prep, C_all, R_all)
    elif prep.time_invariant and prep.observed is None:
        gains = _covariances_steady(prep, C_all, R_all)
    else:
        gains = (_covariances_parallel if method == "parallel" else _covariances_sequential)(prep, C_all, R_all)
    shared = gains.K.shape[0] == 1
    X = columns(prep.x, shared)
    m0 = columns(prep.m0.expand(Bt, n), shared)
    controls = prep.controls()  # u_0 drives nothing: z_0 is the prior
    if controls is not None:
        controls = columns(controls, shared)
    operands = [prep.A, C_all, gains.K, gains.chols, X, m0] + ([] if controls is None else [controls])
    if method == "sequential" and native.usable(*operands):
        means, pred_means, whitened = native.filter_means(prep.A, C_all, gains.K, gains.chols, X, controls, m0)
    else:
        means, pred_means, whitened = _mean_pass(prep, gains, C_all, X, controls, m0, method)
    # log N(v; 0, S) with S = L L^T; the observed count in the 2 pi term lets padded, unobserved
    # entries (v_i = 0, unit variance, uncorrelated) add exactly 0.
    quad = uncolumns(whitened.pow(2).sum(-2, keepdim=True))
    log_det = torch.log(gains.chols.diagonal(dim1=-2, dim2=-1)).sum(-1)
    step_ll = -0.5 * (quad.squeeze(-1) + prep.observed_count() * LOG_2PI) - log_det
    result = FilterResult(
        uncolumns(means),
        gains.covs.expand(Bt, T, n, n),
        uncolumns(pred_means),
        gains.pred_covs.expand(Bt, T, n, n),
        step_ll.sum(1),
        step_ll,
    )
    return result, gains, MeanPass(means, pred_means, whitened, shared)

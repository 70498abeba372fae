"""The exact log-likelihood log p(x_obs), differentiated by Fisher's identity.

For every parameter theta, and for the observations x,

    grad log p(x; theta) = E_{p(z | x; theta)} [ grad log p(x, z; theta) ]          (Fisher's identity)

and log p(x, z) = log N(z_0; m0, P0) + sum_{t>=1} log N(z_t; A_t z_{t-1} + B_t u_t, Q_t)
+ sum_t log N(x~_t; C~_t z_t, R~_t) is a sum of Gaussian log-densities (x~, C~, R~: the emission
projected onto the observed entries, ``Prepared.emission``), so its expected gradient is a closed
form in smoothed quantities. With the disturbance smoother's adjoints rho_t and u_t
(:func:`adjoints`), P_t = Cov[z_t | x_{0:t-1}], V_t = Cov[z_t | x], s_t = E[z_t | x] = m_{t|t-1} + P_t rho_t
and N_t = P_t^-1 (P_t - V_t) P_t^-1::

    d/dx~_t = -u_t                          d/dC~_t = u_t s_t^T - R~_t^-1 C~_t V_t
    d/dR~_t = 1/2 (u_t u_t^T - D_t),        D_t = S_t^-1 + K_t^T A_{t+1}^T N_{t+1} A_{t+1} K_t
    d/dA_t  = rho_t s_{t-1}^T - N_t L_{t-1} P_{t-1},      L_{t-1} = A_t (I - K_{t-1} C~_{t-1})
    d/dQ_t  = 1/2 (rho_t rho_t^T - N_t)     d/d(B_t u_t) = rho_t
    d/dm0   = rho_0                         d/dP0 = 1/2 (rho_0 rho_0^T - N_0)

These are the textbook forms, e.g. d/dQ_t = 1/2 Q_t^-1 (E[f_t f_t^T | x] - Q_t) Q_t^-1 with
f_t = z_t - A_t z_{t-1} - B_t u_t, rewritten with E[f_t | x] = Q_t rho_t and
Cov(f_t | x) = Q_t - Q_t N_t Q_t (Durbin & Koopman 2012, 4.5). The rewriting matters: the textbook
forms subtract smoothed means from data and multiply small differences by Q^-1, which on long
random-walk data loses up to six digits in float64; these agree with autograd through the filter
to about 1e-11 there. K_t, S_t: the filter's gain and innovation covariance.

The backward pass is two backward recursions (the adjoints, and the smoothed covariances, which
do not depend on the data), the data-independent terms N, D, ... (:class:`CovarianceTerms`) and a
few batched sums, instead of backpropagation through every step of the filter. With
``method="sequential"`` on the CPU the recursions and the terms run compiled
(:mod:`seqlvm.kalman.native`). Covariance gradients are the symmetric ones (the derivative along
symmetric perturbations), as autograd gives through the filter's Cholesky factorisations.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from seqlvm.kalman import native
from seqlvm.kalman.filter import FilterResult, Gains, MeanPass, check_method, full_time, run_filter
from seqlvm.kalman.linalg import columns, matmul_add, matvec, sym, uncolumns
from seqlvm.kalman.params import LGSSMParams, Prepared, prepare
from seqlvm.kalman.scan import steady_linear_recurrence
from seqlvm.kalman.smoother import smooth_filtered


def log_likelihood(
    params: LGSSMParams,
    x: Tensor,
    mask: Tensor | None = None,
    u: Tensor | None = None,
    method: str = "sequential",
) -> Tensor:
    """log p(x_obs) of each sequence, (Bt,): the filter's ``log_likelihood``, with a faster gradient.

    Arguments as for :func:`seqlvm.kalman.kalman_filter`. The value is the filter's; the gradient
    with respect to every parameter, x and u comes from Fisher's identity (module docstring): two
    backward recursions instead of backpropagation through the filter. It is a first derivative only:
    ``create_graph=True`` raises an error (use ``kalman_filter(...).log_likelihood`` for that).
    """
    check_method(method, "log_likelihood")
    return _LogLikelihood.apply(method, mask, *params, x, u)


class _LogLikelihood(torch.autograd.Function):
    @staticmethod
    def forward(ctx, method, mask, A, C, Q, R, m0, P0, B, x, u):  # noqa: ANN001, ANN205
        prep = prepare(LGSSMParams(A, C, Q, R, m0, P0, B), x, mask, u, fn="log_likelihood")
        filt, gains, mp = run_filter(prep, method)
        ctx.saved = (prep, filt, gains, mp, method)
        ctx.shapes = [None if t is None else t.shape for t in (A, C, Q, R, m0, P0, B, x, u)]
        return filt.log_likelihood

    @staticmethod
    def backward(ctx, weights):  # noqa: ANN001, ANN205
        if torch.is_grad_enabled():  # create_graph=True: a second derivative is coming
            raise RuntimeError(
                "log_likelihood's gradient (Fisher's identity) is first-order only; for higher "
                "derivatives differentiate kalman_filter(...).log_likelihood"
            )
        prep, filt, gains, mp, method = ctx.saved
        names = ("A", "C", "Q", "R", "m0", "P0", "B", "x", "u")
        need = {k for k, flag in zip(names, ctx.needs_input_grad[2:]) if flag}
        grads = fisher_gradients(prep, filt, gains, mp, method, weights, need)
        out = [None if k not in grads else grads[k].reshape(shape) for k, shape in zip(names, ctx.shapes)]
        return (None, None, *out)


class CovarianceTerms(NamedTuple):
    """The data-independent terms of the gradient (module docstring), batch b (1 when the
    sequences share their covariances); with P_t = P_{t|t-1} and V_t = Cov[z_t | x]:

    N:  (b, T, n, n)    N_t = P_t^-1 (P_t - V_t) P_t^-1, so that Cov(z_t | x) = P_t - P_t N_t P_t
    D:  (b, T, m, m)    D_t = S_t^-1 + K_t^T A_{t+1}^T N_{t+1} A_{t+1} K_t (S^-1 alone at the last step)
    G:  (b, T-1, n, n)  G_t = N_{t+1} L_t P_t, L_t = A_{t+1} (I - K_t C~_t), t = 0..T-2
    CV: (b, T, m, n)    C~_t V_t
    D, G and CV are None where the gradients asked for do not use them.
    """

    N: Tensor
    D: Tensor | None
    G: Tensor | None
    CV: Tensor | None


def covariance_terms(prep: Prepared, gains: Gains, V: Tensor, method: str, need: set[str]) -> CovarianceTerms:
    """The :class:`CovarianceTerms` of the filter's ``gains`` and the smoothed covariances V,
    by one compiled loop with ``method="sequential"`` where it can stand in
    (:func:`seqlvm.kalman.native.fisher_terms`), else by batched products over all steps."""
    C, _ = prep.emission()
    P = gains.pred_covs
    if method == "sequential" and native.usable(prep.A, C, gains.K, gains.chols, P, V):
        out = native.fisher_terms(prep.A, C, gains.K, gains.chols, P, V)
        if out is not None:
            return CovarianceTerms(*(v.to(P.dtype) for v in out))
    T = prep.steps
    LP = torch.linalg.cholesky(P)
    N = sym(torch.cholesky_solve(torch.cholesky_solve(P - V, LP).transpose(-1, -2), LP))
    D = G = CV = None
    if "R" in need:
        eye = torch.eye(prep.m, dtype=P.dtype, device=P.device)
        S_inv = torch.cholesky_solve(eye.expand_as(gains.chols), gains.chols)
        AK = full_time(prep.A, T)[:, 1:] @ gains.K[:, :-1]
        D = sym(S_inv + torch.cat([AK.transpose(-1, -2) @ N[:, 1:] @ AK, torch.zeros_like(S_inv[:, :1])], dim=1))
    if "A" in need and T > 1:
        G = N[:, 1:] @ (_error_transitions(prep, gains) @ P[:, :-1])
    if "C" in need:
        CV = C @ V
    return CovarianceTerms(N, D, G, CV)


class _Weights(NamedTuple):
    """The sequences' weights (Bt,), the same in the mean pass's product layout (c, 1, 1, k), and
    their one value when they are a broadcast scalar (what ``.sum()`` passes back), else None:
    then sums over the sequences are scaled once instead of weighting every term."""

    vec: Tensor
    cols: Tensor
    common: Tensor | None


def fisher_gradients(
    prep: Prepared, filt: FilterResult, gains: Gains, mp: MeanPass, method: str, weights: Tensor, need: set[str]
) -> dict[str, Tensor]:
    """Gradients of sum_b weights_b log p(x_b) w.r.t. the names in ``need``, in the internal
    layout of ``prep`` (module docstring for the formulas)."""
    _, V, _ = smooth_filtered(prep, filt, None, gains.steady_from, method)
    rho, u = adjoints(prep, gains, mp, method)
    s = matmul_add(mp.pred_means, gains.pred_covs, rho)  # E[z_t | x]
    terms = covariance_terms(prep, gains, V, method, need)
    w_vec = weights.to(s.dtype)
    common = w_vec[0] if w_vec.numel() == 1 or w_vec.stride(0) == 0 else None
    w = _Weights(w_vec, columns(w_vec[:, None], mp.shared).unsqueeze(1), common)
    grads: dict[str, Tensor] = {}
    if need & {"C", "R", "x"}:
        grads.update(_emission_gradients(prep, terms, s, u, w, need))
    if need & {"A", "Q", "B", "u"}:
        if prep.steps > 1:
            grads.update(_transition_gradients(prep, terms, mp.shared, s, rho, w, need))
        else:  # a single step has no transition to differentiate through
            grads.update({k: torch.zeros_like(prep.u if k == "u" else getattr(prep, k)) for k in need & {"A", "Q", "B", "u"}})
    if "m0" in need:
        grads["m0"] = _sum_batch(uncolumns(w.cols * rho[:, :1])[:, 0], prep.m0.shape[0])
    if "P0" in need:
        target = (prep.P0.shape[0], 1)
        gP0 = 0.5 * (_outer(rho[:, :1], rho[:, :1], w, target) - _reduce(terms.N[:, :1], w.vec, target))
        grads["P0"] = gP0[:, 0]
    return grads


def adjoints(prep: Prepared, gains: Gains, mp: MeanPass, method: str) -> tuple[Tensor, Tensor]:
    """rho (n) = P_{t|t-1}^-1 (s_t - m_{t|t-1}) and u (m) = R~_t^-1 E[x~_t - C~_t z_t | x] of every
    step, in the product layout of ``mp``.

    The backward recursion of the disturbance smoother (Durbin & Koopman, 2012, 4.5), with the
    innovations v_t = x~_t - C~_t m_{t|t-1} and L_t = A_{t+1} (I - K_t C~_t)::

        rho_t = C~_t^T S_t^-1 v_t + L_t^T rho_{t+1},  rho_T = 0;   u_t = S_t^-1 v_t - K_t^T A_{t+1}^T rho_{t+1}

    rho_t for t >= 1 is also Q_t^-1 E[f_t | x] and rho_0 = P0^-1 (E[z_0 | x] - m0). Both are built
    from innovations, not from differences of smoothed means and data: on data whose states
    grow large (a random walk) those differences lose digits that these keep. With
    ``method="sequential"`` on the CPU the loop is compiled (:func:`seqlvm.kalman.native.adjoints`).
    """
    T = prep.steps
    C, _ = prep.emission()
    if method == "sequential" and native.usable(prep.A, C, gains.K, gains.chols, mp.whitened):
        return native.adjoints(prep.A, C, gains.K, gains.chols, mp.whitened)
    Sv = torch.linalg.solve_triangular(gains.chols.transpose(-1, -2), mp.whitened, upper=True)  # S^-1 v
    Ct = full_time(C, T).transpose(-1, -2)  # rho's offsets are C~_t^T S_t^-1 v_t
    last = Ct[:, -1] @ Sv[:, -1]
    if T == 1:
        return last.unsqueeze(1), Sv
    LT = _error_transitions(prep, gains).transpose(-1, -2)
    head = steady_linear_recurrence(LT, Sv[:, :-1], last, gains.steady_from, method, reverse=True, G=Ct[:, :-1])
    rho = torch.cat([head, last.unsqueeze(1)], dim=1)
    AK = full_time(prep.A, T)[:, 1:] @ gains.K[:, :-1]  # (b, T-1, n, m): small, unlike rho
    return rho, torch.cat([matmul_add(Sv[:, :-1], AK.transpose(-1, -2), rho[:, 1:], -1.0), Sv[:, -1:]], dim=1)


def _error_transitions(prep: Prepared, gains: Gains) -> Tensor:
    """L_t = A_{t+1} (I - K_t C~_t) for t = 0..T-2, (b, T-1, n, n): how an error in the prediction
    of z_t carries into the prediction of z_{t+1}."""
    T = prep.steps
    C, _ = prep.emission()
    eye = torch.eye(prep.n, dtype=prep.A.dtype, device=prep.A.device)
    return full_time(prep.A, T)[:, 1:] @ (eye - gains.K[:, :-1] @ full_time(C, T)[:, :-1])


def _emission_gradients(
    prep: Prepared, terms: CovarianceTerms, s: Tensor, u: Tensor, w: _Weights, need: set[str]
) -> dict[str, Tensor]:
    C, R = prep.emission()  # (bC, TC, m, n), (bR, TR, m, m); both (Bt, T) when entries are missing
    grads = {}
    if "x" in need:
        gx = -uncolumns(w.cols * u)
        grads["x"] = gx if prep.observed is None else gx * prep.observed
    if "C" in need:
        joint = (max(C.shape[0], R.shape[0]), max(C.shape[1], R.shape[1]))
        gC = _outer(u, s, w, joint) - torch.cholesky_solve(_reduce(terms.CV, w.vec, joint), torch.linalg.cholesky(R))
        if prep.observed is not None:
            gC = gC * prep.observed[..., None]
        grads["C"] = _sum_to(gC, prep.C.shape)
    if "R" in need:
        # D_t = R~^-1 (R~ - Cov(e_t | x)) R~^-1
        target = R.shape[:2]
        gR = 0.5 * (_outer(u, u, w, target) - _reduce(terms.D, w.vec, target))
        if prep.observed is not None:
            o = prep.observed.to(gR.dtype)
            gR = gR * (o[..., :, None] * o[..., None, :])
        grads["R"] = _sum_to(gR, prep.R.shape)
    return grads


def _transition_gradients(
    prep: Prepared, terms: CovarianceTerms, shared: bool, s: Tensor, rho: Tensor, w: _Weights, need: set[str]
) -> dict[str, Tensor]:
    """Gradients through the steps t = 1..T-1 (index 0 of a time-varying A, Q, B or u gets 0)."""

    def into(p: Tensor) -> Tensor:  # the parameter over the transitions 1..T-1
        return p[:, 1:] if p.shape[1] > 1 else p

    r = rho[:, 1:]  # Q_t^-1 E[f_t] of steps 1..T-1
    grads = {}
    if "A" in need:
        # Q_t^-1 Cov(f_t, z_{t-1} | x) = -N_t L_{t-1} P_{t-1}
        target = into(prep.A).shape[:2]
        gA = _outer(r, s[:, :-1], w, target) - _reduce(terms.G, w.vec, target)
        grads["A"] = _pad_time(gA, prep.A.shape[1])
    if "Q" in need:
        target = into(prep.Q).shape[:2]
        gQ = 0.5 * (_outer(r, r, w, target) - _reduce(terms.N[:, 1:], w.vec, target))
        grads["Q"] = _pad_time(gQ, prep.Q.shape[1])
    if need & {"B", "u"}:
        gb = w.cols * r  # d/d(B_t u_t)
        if "B" in need:
            target = into(prep.B).shape[:2]
            if shared and target[0] > 1:
                # B differs per sequence but leaves the covariances shared, so the sequences are
                # the columns: each sequence's own outer products, not their sum.
                gB = _sum_to(uncolumns(gb).unsqueeze(-1) * prep.u[:, 1:].unsqueeze(-2), target)
            else:
                gB = _outer(gb, columns(prep.u[:, 1:], shared), None, target)
            grads["B"] = _pad_time(gB, prep.B.shape[1])
        if "u" in need:
            gu = matvec(into(prep.B).transpose(-1, -2), uncolumns(gb))
            grads["u"] = torch.cat([torch.zeros_like(gu[:, :1]), gu], dim=1)
    return grads


def _outer(a: Tensor, b: Tensor, w: _Weights | None, target: tuple[int, int]) -> Tensor:
    """sum of w_i a_it b_it^T over the sequences i and time t, kept along the dims where
    ``target`` (batch, time) is not 1. a (c, T, r, k), b (c, T, q, k) in the product layout,
    where the sum over the columns is a matrix product; w None: all 1
    -> (target[0], target[1], r, q)."""
    if w is None or w.common is not None:
        out = a @ b.transpose(-1, -2)  # (c, T, r, q)
        out = out if w is None else out * w.common
    else:
        out = (a * w.cols) @ b.transpose(-1, -2)
    return _sum_to(out, target)


def _reduce(M: Tensor, w: Tensor, target: tuple[int, int]) -> Tensor:
    """sum over the batch i of w_i M_i and over time, kept where ``target`` is not 1.
    M (1 or Bt, T, r, c): a batch of 1 stands for Bt identical entries."""
    if M.shape[0] == 1:
        M = M * (w.sum() if target[0] == 1 else w[:, None, None, None])
    else:
        M = M * w[:, None, None, None]
        if target[0] == 1:
            M = M.sum(0, keepdim=True)
    return M.sum(1, keepdim=True) if target[1] == 1 else M


def _sum_to(G: Tensor, shape: Sequence[int]) -> Tensor:
    """Sum G (b, t, r, c) over the leading dims that are 1 in ``shape``."""
    dims = [i for i in (0, 1) if shape[i] == 1 and G.shape[i] > 1]
    return G.sum(dims, keepdim=True) if dims else G


def _sum_batch(g: Tensor, b: int) -> Tensor:
    return g.sum(0, keepdim=True) if b == 1 else g


def _pad_time(G: Tensor, steps: int) -> Tensor:
    """A time-varying transition parameter's gradient gets a zero at the unused index 0."""
    return torch.cat([torch.zeros_like(G[:, :1]), G], dim=1) if steps > 1 else G

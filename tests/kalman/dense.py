"""Brute-force oracle: the whole LGSSM as one dense joint Gaussian over all T*n states and T*m
observations. Filtering, prediction and smoothing are then plain Gaussian conditioning on the
observed entries, with no recursion in sight."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from seqlvm.kalman import LGSSMParams


class DenseMoments(NamedTuple):
    means: Tensor  # (Bt, T, n) filtered
    covs: Tensor
    pred_means: Tensor
    pred_covs: Tensor
    log_likelihood: Tensor  # (Bt,)
    step_log_likelihood: Tensor  # (Bt, T)
    smooth_means: Tensor
    smooth_covs: Tensor
    cross_covs: Tensor  # (Bt, T-1, n, n) Cov(z_{t+1}, z_t | x)


def _full(p: Tensor, batch: int, steps: int, event_dims: int) -> Tensor:
    """Expand a shared / batched / time-varying parameter to (Bt, T, *event)."""
    while p.dim() < event_dims + 2:
        p = p.unsqueeze(0) if p.dim() < event_dims + 1 else p.unsqueeze(1)
    return p.expand(batch, steps, *p.shape[2:])


def _mvn_logpdf(x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
    if x.numel() == 0:
        return torch.zeros((), dtype=cov.dtype)
    return torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(x)


class Joint(NamedTuple):
    """One sequence's joint Gaussian: z = (z_0..z_{T-1}) flattened, x likewise."""

    mean_z: Tensor
    cov_z: Tensor
    mean_x: Tensor
    cov_x: Tensor
    cov_zx: Tensor


def dense_joint(params: LGSSMParams, x: Tensor, u: Tensor | None = None) -> list[Joint]:
    """The dense joint Gaussian of every sequence in the batch (x gives only the sizes)."""
    Bt, T, m = x.shape
    n = params.A.shape[-1]
    A = _full(params.A, Bt, T, 2)
    C = _full(params.C, Bt, T, 2)
    Q = _full(params.Q, Bt, T, 2)
    R = _full(params.R, Bt, T, 2)
    m0 = params.m0.expand(Bt, n)
    P0 = params.P0.expand(Bt, n, n)
    Bu = None
    if params.B is not None:
        Bu = (_full(params.B, Bt, T, 2) @ u.unsqueeze(-1)).squeeze(-1)
    joints = []
    for b in range(Bt):
        # z = mu + M w, w ~ N(0, blockdiag(P0, Q_1, ..., Q_{T-1}))
        mu = [m0[b]]
        for t in range(1, T):
            nxt = A[b, t] @ mu[-1]
            if Bu is not None:
                nxt = nxt + Bu[b, t]
            mu.append(nxt)
        mu = torch.cat(mu)
        M = torch.zeros(T * n, T * n, dtype=x.dtype)
        for k in range(T):
            Phi = torch.eye(n, dtype=x.dtype)
            for t in range(k, T):
                if t > k:
                    Phi = A[b, t] @ Phi
                M[t * n : (t + 1) * n, k * n : (k + 1) * n] = Phi
        W = torch.block_diag(P0[b], *[Q[b, t] for t in range(1, T)])
        cov_z = M @ W @ M.T
        H = torch.block_diag(*[C[b, t] for t in range(T)])
        cov_x = H @ cov_z @ H.T + torch.block_diag(*[R[b, t] for t in range(T)])
        joints.append(Joint(mu, cov_z, H @ mu, cov_x, cov_z @ H.T))
    return joints


def dense_x_posterior(params: LGSSMParams, x: Tensor, observed: Tensor, u: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mean and std of every entry of x given the observed ones, each (Bt, T, m)."""
    means, stds = [], []
    for b, j in enumerate(dense_joint(params, x, u)):
        idx = torch.nonzero(observed[b].reshape(-1)).squeeze(-1)
        Soo = j.cov_x[idx][:, idx]
        Sxo = j.cov_x[:, idx]
        mean = j.mean_x + Sxo @ torch.linalg.solve(Soo, x[b].reshape(-1)[idx] - j.mean_x[idx])
        cov = j.cov_x - Sxo @ torch.linalg.solve(Soo, Sxo.T)
        means.append(mean.reshape(x.shape[1:]))
        stds.append(cov.diagonal().clamp_min(0).sqrt().reshape(x.shape[1:]))
    return torch.stack(means), torch.stack(stds)


def dense_moments(params: LGSSMParams, x: Tensor, observed: Tensor, u: Tensor | None = None) -> DenseMoments:
    """All moments by dense conditioning. x (Bt,T,m); observed (Bt,T,m) bool; float64 advised."""
    Bt, T, m = x.shape
    n = params.A.shape[-1]
    out = {k: [] for k in DenseMoments._fields}
    for b, j in enumerate(dense_joint(params, x, u)):
        mu, cov_z, mean_x, cov_x, cov_zx = j
        xf = x[b].reshape(-1)
        of = observed[b].reshape(-1)
        step_of = torch.arange(T).repeat_interleave(m)

        def condition(upto: int):
            idx = torch.nonzero(of & (step_of < upto)).squeeze(-1)
            if idx.numel() == 0:
                return mu, cov_z, torch.zeros((), dtype=x.dtype)
            Sxx = cov_x[idx][:, idx]
            Szx = cov_zx[:, idx]
            resid = xf[idx] - mean_x[idx]
            mean = mu + Szx @ torch.linalg.solve(Sxx, resid)
            cov = cov_z - Szx @ torch.linalg.solve(Sxx, Szx.T)
            return mean, cov, _mvn_logpdf(xf[idx], mean_x[idx], Sxx)

        blocks = lambda v, t: v[t * n : (t + 1) * n]
        lls = []
        for t in range(T):
            pm, pc, ll_prev = condition(t)
            fm, fc, ll = condition(t + 1)
            out["pred_means"].append(blocks(pm, t))
            out["pred_covs"].append(pc[t * n : (t + 1) * n, t * n : (t + 1) * n])
            out["means"].append(blocks(fm, t))
            out["covs"].append(fc[t * n : (t + 1) * n, t * n : (t + 1) * n])
            lls.append(ll - ll_prev)
        sm, sc, ll_all = condition(T)
        out["step_log_likelihood"].append(torch.stack(lls))
        out["log_likelihood"].append(ll_all)
        out["smooth_means"].append(sm.reshape(T, n))
        out["smooth_covs"].append(torch.stack([sc[t * n : (t + 1) * n, t * n : (t + 1) * n] for t in range(T)]))
        cc = [sc[(t + 1) * n : (t + 2) * n, t * n : (t + 1) * n] for t in range(T - 1)]
        out["cross_covs"].append(torch.stack(cc) if cc else torch.zeros(0, n, n, dtype=x.dtype))
    per_step = ("means", "covs", "pred_means", "pred_covs")
    res = {}
    for k, v in out.items():
        if k in per_step:
            res[k] = torch.stack(v).reshape(Bt, T, *v[0].shape)
        else:
            res[k] = torch.stack(v)
    return DenseMoments(**res)

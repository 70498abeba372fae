"""Small linear-algebra pieces shared by the filter, the smoother and the samplers."""

from __future__ import annotations

import torch
from torch import Tensor

from seqlvm.kalman.params import LOG_2PI


def sym(P: Tensor) -> Tensor:
    """0.5 (P + P^T): rounding makes computed covariances drift from symmetry; this stops it."""
    return 0.5 * (P + P.transpose(-1, -2))


def converged(new: Tensor, old: Tensor) -> bool:
    """True when two covariances agree to a few units of rounding error (a steady state)."""
    tol = 8 * torch.finfo(new.dtype).eps
    return bool((new - old).abs().amax() <= tol * new.abs().amax())


def safe_cholesky(S: Tensor) -> Tensor:
    """Lower Cholesky factor of a symmetric positive (semi-)definite batch.

    Tries the plain factorisation first; where it fails (a covariance that rounding pushed to
    the edge of the cone, typically a float32 smoothed or conditional covariance), retries with
    a jitter of growing size, relative to the matrix's scale, added to the diagonal.
    """
    L, info = torch.linalg.cholesky_ex(S)
    if not bool(info.any()):
        return L
    eye = torch.eye(S.shape[-1], dtype=S.dtype, device=S.device)
    scale = S.diagonal(dim1=-2, dim2=-1).abs().mean(-1).clamp_min(torch.finfo(S.dtype).tiny)
    jitter = torch.finfo(S.dtype).eps * 10.0
    for _ in range(12):
        L, info = torch.linalg.cholesky_ex(S + (jitter * scale)[..., None, None] * eye)
        if not bool(info.any()):
            return L
        jitter *= 10.0
    raise ValueError(
        "covariance is not positive definite even after adding jitter "
        f"(dtype {S.dtype}); check that Q, R and P0 are positive definite"
    )


def mvn_logpdf_chol(r: Tensor, L: Tensor, count: Tensor | float) -> Tensor:
    """log N(r; 0, S) with S = L L^T, counting ``count`` dimensions in the 2*pi term.

    r (..., d), L (..., d, d) broadcastable; returns (...). Using ``count`` < d lets padded,
    unobserved dimensions (r_i = 0, unit variance, uncorrelated) add exactly 0.
    """
    if L.dim() == r.dim() + 1 and L.shape[0] == 1 and r.shape[0] > 1:
        # A factor shared by the sequences: solve for all of them as columns (also in backward).
        v = torch.linalg.solve_triangular(L[0], r.movedim(0, -1), upper=False).movedim(-1, 0)
    else:
        v = torch.linalg.solve_triangular(L, r.unsqueeze(-1), upper=False).squeeze(-1)
    log_det = torch.log(L.diagonal(dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * (v.pow(2).sum(-1) + count * LOG_2PI) - log_det


def mvn_logpdf_of_noise(eps: Tensor, chol: Tensor) -> Tensor:
    """log N(L eps; 0, L L^T) for the standard normal eps that produced the draw: eps (..., d),
    chol L (..., d, d) broadcastable -> (...)."""
    n = eps.shape[-1]
    log_det = torch.log(chol.diagonal(dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * (eps.pow(2).sum(-1) + n * LOG_2PI) - log_det


def sample_gaussian(
    mean: Tensor, chol: Tensor, num_samples: int = 1, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """``num_samples`` = S draws ``x = mu_b + L_b eps``, eps ~ N(0, I), from each row of a batch of
    Gaussians N(mu_b, L_b L_b^T), with their log densities.

    mean (B, d), chol (d, d) shared or (B, d, d) -> x (S·B, d) with row ``s·B + b`` drawn from
    Gaussian b (the order of ``Tensor.repeat(S, 1)``), log N(x; mu, L L^T) (S·B,).
    """
    S, (B, d) = num_samples, mean.shape
    eps = torch.randn(S * B, d, dtype=mean.dtype, device=mean.device, generator=generator)
    L = chol.repeat(S, 1, 1) if chol.dim() == 3 else chol
    return mean.repeat(S, 1) + matvec(L, eps), mvn_logpdf_of_noise(eps, L)


def matvec(M: Tensor, v: Tensor) -> Tensor:
    """M v for batches: M (..., r, c), v (..., c) -> (..., r).

    When M is shared by the sequences (leading size 1) and v is not, the sequences go into the
    columns of one product per remaining index, instead of one tiny product per sequence.
    """
    if M.dim() == v.dim() + 1 and M.shape[0] == 1 and v.shape[0] > 1:
        return (M[0] @ v.movedim(0, -1)).movedim(-1, 0)
    return (M @ v.unsqueeze(-1)).squeeze(-1)


def solve_vec(L: Tensor, v: Tensor) -> Tensor:
    """S^-1 v for batches, with S = L L^T: L (..., d, d), v (..., d) -> (..., d).

    As in :func:`matvec`, a factor shared by the sequences (leading size 1) solves them all as
    the columns of one right-hand side per remaining index.
    """
    if L.dim() == v.dim() + 1 and L.shape[0] == 1 and v.shape[0] > 1:
        return torch.cholesky_solve(v.movedim(0, -1), L[0]).movedim(-1, 0)
    return torch.cholesky_solve(v.unsqueeze(-1), L).squeeze(-1)

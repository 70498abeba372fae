"""Small linear-algebra pieces shared by the filter, the smoother and the samplers."""

from __future__ import annotations

import torch
from torch import Tensor

from seqlvm.kalman.params import LOG_2PI


def sym(P: Tensor) -> Tensor:
    """0.5 (P + P^T): rounding makes computed covariances drift from symmetry; this stops it."""
    return 0.5 * (P + P.transpose(-1, -2))


def precise_dtype(t: Tensor) -> torch.dtype:
    """The dtype for the steady-state doublings' covariance work on ``t``: float64 for float32
    data, ``t``'s own otherwise, and on devices without float64 (MPS).

    The doublings square their elements about log2 T times, and in float32 that loses digits:
    the filtered covariances of a 5000-step random walk with unobserved directions came out 3-13%
    off, and steady smoothed covariances 27-58 times further from float64 than the loop's.
    That work acts on a few n x n matrices for the whole batch, so float64 costs no more there.
    """
    if t.dtype == torch.float32 and t.device.type != "mps":
        return torch.float64
    return t.dtype


def matmul_add(C: Tensor, A: Tensor, B: Tensor, alpha: float = 1.0) -> Tensor:
    """C + alpha A B for batches of matrices, in one product that adds into a copy of C
    (``torch.baddbmm``), so the product is never stored on its own: on large data one pass
    fewer. C (..., r, k); A (..., r, s) and B (..., s, k) broadcast to C's batch shape."""
    batch = C.shape[:-2]

    def flat(M: Tensor) -> Tensor:
        return M.expand(*batch, *M.shape[-2:]).reshape(-1, *M.shape[-2:])

    return torch.baddbmm(flat(C), flat(A), flat(B), alpha=alpha).view(C.shape)


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


def columns(v: Tensor, shared: bool) -> Tensor:
    """Data (Bt, ..., d) as right-hand sides for the model's matrices (the mean passes' layout).

    When the matrices are shared by the sequences (``shared``: batch size 1) the sequences become
    the columns, (1, ..., d, Bt), so each product ``M @ V`` is one matrix product per step for all
    of them, with contiguous operands; otherwise each sequence is one column, (Bt, ..., d, 1).
    Either way ``M @ V`` is the batched M v, elementwise work is unchanged, and :func:`uncolumns`
    turns it back.
    """
    if not shared or v.shape[0] == 1:
        return v.unsqueeze(-1)
    Bt, rest = v.shape[0], v.shape[1:]
    return v.reshape(Bt, -1).t().contiguous().reshape(1, *rest, Bt)


def uncolumns(V: Tensor) -> Tensor:
    """(1, ..., d, Bt) or (Bt, ..., d, 1) back to (Bt, ..., d), as a view (no copy: transposing
    a large tensor costs more than most of the filter's products)."""
    return V.squeeze(-1) if V.shape[-1] == 1 else V[0].movedim(-1, 0)

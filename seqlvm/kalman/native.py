"""Compiled loops for the sequential recursions on the CPU.

Eager PyTorch spends a few microseconds dispatching every operation, and one step of a Kalman
recursion is a handful of products of n x n matrices with n around 4, so a loop over steps is
dispatch, not arithmetic: a 100-step linear recurrence took about 0.5 ms as a blocked scan and
1 ms as a plain loop. The C module ``seqlvm.kalman._native`` (``_native.c``, built when the
package is installed) runs the same loops with no dispatch:

- :func:`linear_recurrence`: ``h_t = F_t h_{t-1} + g_t`` (or ``F_t h_{t-1} F_t^T + g_t``), in the
  tensors' own float32 or float64; it serves :func:`seqlvm.kalman.scan.linear_recurrence`.
- :func:`riccati`: the filter's covariance pass, in float64 and rounded once to the model's
  dtype (as the steady-state doubling does), and :func:`filter_means`, its mean pass given the
  gains; they serve ``method="sequential"`` in :func:`seqlvm.kalman.filter.run_filter`.
- :func:`rts_covariances`, in float64 like :func:`riccati`, and :func:`smoothed_means`: the
  Rauch-Tung-Striebel smoother's backward pass over the filter's output, for
  ``method="sequential"`` in :func:`seqlvm.kalman.smoother.smooth_filtered`.
- :func:`adjoints`: the disturbance smoother's backward pass, and :func:`fisher_terms` (float64),
  the data-independent terms, for the gradient of :func:`seqlvm.kalman.log_likelihood` with
  ``method="sequential"``.

These loops only compute values, so they stand in where no gradient is taken through them (inference,
and the forward pass of :func:`seqlvm.kalman.log_likelihood`, whose gradient comes from Fisher's
identity); everywhere else the PyTorch code runs, and it is also the fallback when the module
was not built (no C compiler at install time) or is switched off with ``SEQLVM_NATIVE=0``.
The tests hold both to the same dense-Gaussian oracle.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Iterator

import torch
from torch import Tensor

try:
    from seqlvm.kalman import _native
except ImportError:  # built without a C compiler: the PyTorch loops serve
    _native = None

_enabled = _native is not None and os.environ.get("SEQLVM_NATIVE", "1") != "0"


def available() -> bool:
    """Whether the compiled loops are built and switched on."""
    return _enabled


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the PyTorch loops instead inside this block (to compare the two)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def usable(*tensors: Tensor) -> bool:
    """Whether the compiled loops can stand in for PyTorch's on these operands: built and on,
    all on the CPU in one dtype, float32 or float64, and no gradient wanted through them."""
    if not _enabled:
        return False
    dtype = tensors[0].dtype
    if dtype not in (torch.float32, torch.float64):
        return False
    if any(t.device.type != "cpu" or t.dtype != dtype for t in tensors):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


Operand = tuple[Tensor, int, int]  # contiguous tensor, batch stride, time stride


def _operand(t: Tensor, B: int, name: str, dtype: torch.dtype | None = None) -> Operand:
    """An operand (1 or B, T', ...) for the C loops: contiguous (in ``dtype`` if given), with its
    batch stride and the stride of dim 1 in elements, each 0 where the size is 1 (shared by the
    sequences, or the same at every step). The tensor may be a copy, which the caller must hold
    until the C call returns: the C code sees only its address."""
    if t.shape[0] not in (1, B):
        raise ValueError(f"native: {name} has batch {t.shape[0]}, expected 1 or {B}")
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    if not t.is_contiguous():
        t = t.contiguous()
    # Strides from the shape, not from indexing: each index is an operation, and these calls
    # exist to save operations.
    per_batch, per_step = math.prod(t.shape[1:]), math.prod(t.shape[2:])
    return t, 0 if t.shape[0] == 1 else per_batch, 0 if t.dim() < 2 or t.shape[1] == 1 else per_step


def _with_time(*operands: Operand) -> list[int]:
    """Address, batch stride and time stride of each operand, for the C loops' arguments."""
    return [v for t, b, s in operands for v in (t.data_ptr(), b, s)]


def _batched(*operands: Operand | None) -> list[int]:
    """Address and batch stride of each operand (0, 0 for None: an absent input)."""
    return [v for op in operands for v in ((0, 0) if op is None else (op[0].data_ptr(), op[1]))]


def linear_recurrence(F: Tensor, g: Tensor, h0: Tensor, reverse: bool, congruence: bool) -> Tensor:
    """:func:`seqlvm.kalman.scan.linear_recurrence` with ``method="sequential"``, compiled:
    F (b, N, n, n), g (c, N, n, k), h0 (c', n, k) -> (B, N, n, k), B = max(b, c, c')."""
    B, N, n, k = max(F.shape[0], g.shape[0], h0.shape[0]), g.shape[1], g.shape[2], g.shape[3]
    ops = [_operand(F, B, "F"), _operand(g, B, "g"), _operand(h0, B, "h0")]  # held until the call returns
    out = torch.empty(B, N, n, k, dtype=g.dtype)
    _native.linear_recurrence(
        int(g.dtype == torch.float64), *_batched(*ops), out.data_ptr(), B, N, n, k, int(reverse), int(congruence)
    )
    return out


def riccati(
    A: Tensor, Q: Tensor, C: Tensor, R: Tensor, P0: Tensor, steps: int, continued: bool = False
) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
    """The filter's covariance pass of :func:`seqlvm.kalman.filter._covariances_sequential`,
    compiled, in float64: A, Q (b, T', n, n), C (b, T', m, n), R (b, T', m, m) in the internal
    layout (T' in {1, steps}), P0 (b, n, n) -> predicted and filtered covariances (B, T, n, n),
    gains (B, T, n, m) and the Cholesky factors of the innovation covariances (B, T, m, m), all
    float64; None when an innovation covariance is not positive definite. ``continued``: P0 is
    the filtered covariance of the step before, and the first step predicts from it (a
    time-invariant recursion resumed where an earlier call stopped)."""
    B, n, m = max(p.shape[0] for p in (A, Q, C, R, P0)), A.shape[-1], C.shape[-2]
    f64 = torch.float64
    ops = [_operand(p, B, name, f64) for name, p in (("A", A), ("Q", Q), ("C", C), ("R", R))]
    P0, sP, _ = _operand(P0, B, "P0", f64)
    pred, filt = (torch.empty(B, steps, n, n, dtype=f64) for _ in range(2))
    K, L = torch.empty(B, steps, n, m, dtype=f64), torch.empty(B, steps, m, m, dtype=f64)
    ok = _native.riccati(*_with_time(*ops), P0.data_ptr(), sP, pred.data_ptr(), filt.data_ptr(), K.data_ptr(),
                         L.data_ptr(), B, steps, n, m, int(continued))
    return (pred, filt, K, L) if ok else None


def filter_means(
    A: Tensor, C: Tensor, K: Tensor, L: Tensor, X: Tensor, U: Tensor | None, m0: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The filter's mean pass of :func:`seqlvm.kalman.filter._mean_pass`, compiled, in the
    textbook form ``m_{t|t-1} = A_t m_{t-1|t-1} + U_t``, ``v_t = X_t - C_t m_{t|t-1}``,
    ``m_{t|t} = m_{t|t-1} + K_t v_t``, with the whitened innovations ``L_t^-1 v_t``.

    A (b, T', n, n), C (b, T', m, n) in the internal layout; gains K (b, T, n, m), innovation
    factors L (b, T, m, m); data X (c, T, m, k), control offsets U (c, T, n, k) or None, prior
    means m0 (c, n, k) in the product layout of :func:`seqlvm.kalman.linalg.columns` ->
    filtered and predicted means (B, T, n, k), whitened innovations (B, T, m, k).
    """
    B, T, m, k = max(t.shape[0] for t in (A, C, K, L, X, m0)), X.shape[1], X.shape[2], X.shape[3]
    n = A.shape[-1]
    means, pred = (torch.empty(B, T, n, k, dtype=X.dtype) for _ in range(2))
    W = torch.empty(B, T, m, k, dtype=X.dtype)
    timed = [_operand(A, B, "A"), _operand(C, B, "C")]  # both lists held until the call returns
    ops = [_operand(K, B, "K"), _operand(L, B, "L"), _operand(X, B, "X"), None if U is None else _operand(U, B, "U"),
           _operand(m0, B, "m0")]
    _native.filter_means(
        int(X.dtype == torch.float64), *_with_time(*timed), *_batched(*ops),
        means.data_ptr(), pred.data_ptr(), W.data_ptr(), B, T, n, m, k,
    )
    return means, pred, W


def adjoints(A: Tensor, C: Tensor, K: Tensor, L: Tensor, W: Tensor) -> tuple[Tensor, Tensor]:
    """The disturbance smoother's adjoints of :func:`seqlvm.kalman.likelihood.adjoints`,
    compiled, in the textbook form: with ``a_t = A_{t+1}^T rho_{t+1}`` (0 at the last step),
    ``u_t = L_t^-T W_t - K_t^T a_t`` and ``rho_t = C_t^T u_t + a_t``.

    A (b, T', n, n), C (b, T', m, n) in the internal layout; gains K (b, T, n, m), innovation
    factors L (b, T, m, m), whitened innovations W (c, T, m, k) in the product layout ->
    rho (B, T, n, k), u (B, T, m, k).
    """
    B, T, m, k = max(t.shape[0] for t in (A, C, K, L, W)), W.shape[1], W.shape[2], W.shape[3]
    n = A.shape[-1]
    timed = [_operand(A, B, "A"), _operand(C, B, "C")]  # both lists held until the call returns
    ops = [_operand(K, B, "K"), _operand(L, B, "L"), _operand(W, B, "W")]
    rho, u = torch.empty(B, T, n, k, dtype=W.dtype), torch.empty(B, T, m, k, dtype=W.dtype)
    _native.adjoints(int(W.dtype == torch.float64), *_with_time(*timed), *_batched(*ops), rho.data_ptr(), u.data_ptr(),
                     B, T, n, m, k)
    return rho, u


def rts_covariances(A: Tensor, covs: Tensor, pred_covs: Tensor, margin: int) -> tuple[Tensor, Tensor, Tensor] | None:
    """The smoother's covariance pass of :func:`seqlvm.kalman.smoother.smooth_filtered`, compiled,
    in float64: A (b, T', n, n) in the internal layout (T' in {1, T}), the filter's covariances
    and predicted covariances (b, T, n, n) -> the smoother gains E_t = P_{t|t} A_{t+1}^T
    P_{t+1|t}^-1 (B, T-1, n, n), the smoothed covariances (B, T, n, n) and the cross covariances
    Cov(z_{t+1}, z_t | x) (B, T-1, n, n), all float64; None when a predicted covariance is not
    positive definite. Where the filter holds its steady state, so does the smoother: once its
    covariances have changed by a few units of rounding for ``margin`` steps in a row, as
    :func:`seqlvm.kalman.scan.steady_start` tests.
    """
    B, T, n = max(p.shape[0] for p in (A, covs, pred_covs)), covs.shape[1], covs.shape[-1]
    f64 = torch.float64
    ops = [_operand(A, B, "A", f64), _operand(covs, B, "covs", f64), _operand(pred_covs, B, "pred_covs", f64)]
    E, X = torch.empty(B, T - 1, n, n, dtype=f64), torch.empty(B, T - 1, n, n, dtype=f64)
    P = torch.empty(B, T, n, n, dtype=f64)
    ok = _native.rts_covariances(*_with_time(ops[0]), *_batched(*ops[1:]), E.data_ptr(), P.data_ptr(), X.data_ptr(),
                                 B, T, n, margin)
    return (E, P, X) if ok else None


def smoothed_means(E: Tensor, means: Tensor, pred_means: Tensor) -> Tensor:
    """The smoother's mean pass, compiled: ``m_{t|T} = m_{t|t} + E_t (m_{t+1|T} - m_{t+1|t})``
    backwards from ``m_{T-1|T} = m_{T-1|T-1}``, with the smoother gains E (b, T-1, n, n) and the
    filter's means and predicted means (c, T, n, k) in the product layout of
    :func:`seqlvm.kalman.linalg.columns` -> (B, T, n, k)."""
    B, T, n, k = max(E.shape[0], means.shape[0], pred_means.shape[0]), *means.shape[1:]
    ops = [_operand(E, B, "E"), _operand(means, B, "means"), _operand(pred_means, B, "pred_means")]
    out = torch.empty(B, T, n, k, dtype=means.dtype)
    _native.smoothed_means(int(means.dtype == torch.float64), *_batched(*ops), out.data_ptr(), B, T, n, k)
    return out


def fisher_terms(
    A: Tensor, C: Tensor, K: Tensor, L: Tensor, P: Tensor, V: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
    """The data-independent terms of :func:`seqlvm.kalman.log_likelihood`'s gradient (see
    :func:`seqlvm.kalman.likelihood.covariance_terms`), compiled, in float64: A (b, T', n, n),
    C (b, T', m, n) in the internal layout, gains K (b, T, n, m), innovation factors L
    (b, T, m, m), predicted and smoothed covariances P, V (b, T, n, n) -> N (B, T, n, n),
    D (B, T, m, m), G (B, T-1, n, n), CV (B, T, m, n), all float64; None when a predicted
    covariance is not positive definite."""
    B, T, n, m = max(t.shape[0] for t in (A, C, K, L, P, V)), K.shape[1], A.shape[-1], C.shape[-2]
    f64 = torch.float64
    timed = [_operand(A, B, "A", f64), _operand(C, B, "C", f64)]  # both lists held until the call returns
    ops = [_operand(v, B, name, f64) for name, v in (("K", K), ("L", L), ("P", P), ("V", V))]
    N, D = torch.empty(B, T, n, n, dtype=f64), torch.empty(B, T, m, m, dtype=f64)
    G, CV = torch.empty(B, T - 1, n, n, dtype=f64), torch.empty(B, T, m, n, dtype=f64)
    ok = _native.fisher_terms(*_with_time(*timed), *_batched(*ops), N.data_ptr(), D.data_ptr(), G.data_ptr(),
                              CV.data_ptr(), B, T, n, m)
    return (N, D, G, CV) if ok else None

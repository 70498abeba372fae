"""Compiled loops for the sequential recursions on the CPU.

Eager PyTorch spends a few microseconds dispatching every operation, and one step of a Kalman
recursion is a handful of products of n x n matrices with n around 4, so a loop over steps is
dispatch, not arithmetic: a 100-step linear recurrence took about 0.5 ms as a blocked scan and
1 ms as a plain loop. The C module ``seqlvm.kalman._native`` (``_native.c``, built when the
package is installed) runs the same loops with no dispatch:

- :func:`linear_recurrence`: ``h_t = F_t h_{t-1} + g_t`` (or ``F_t h_{t-1} F_t^T + g_t``), in the
  tensors' own float32 or float64; it serves :func:`seqlvm.kalman.scan.linear_recurrence`.
- :func:`riccati`: the filter's covariance pass, in float64 and rounded once to the model's
  dtype (as the steady-state doubling does); it serves ``method="sequential"`` in
  :func:`seqlvm.kalman.filter.run_filter`.

Both only compute values, so they stand in where no gradient is taken through them (inference,
and the forward pass of :func:`seqlvm.kalman.log_likelihood`, whose gradient comes from Fisher's
identity); everywhere else the PyTorch code runs, and it is also the fallback when the module
was not built (no C compiler at install time) or is switched off with ``SEQLVM_NATIVE=0``.
The tests hold both to the same dense-Gaussian oracle.
"""

from __future__ import annotations

import contextlib
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


def _batch(t: Tensor, B: int, name: str) -> tuple[Tensor, int]:
    """t (1 or B, ...) contiguous, and its batch stride in elements (0 when shared)."""
    if t.shape[0] not in (1, B):
        raise ValueError(f"native: {name} has batch {t.shape[0]}, expected 1 or {B}")
    t = t.contiguous()
    return t, 0 if t.shape[0] == 1 else t[0].numel()


def linear_recurrence(F: Tensor, g: Tensor, h0: Tensor, reverse: bool, congruence: bool) -> Tensor:
    """:func:`seqlvm.kalman.scan.linear_recurrence` with ``method="sequential"``, compiled:
    F (b, N, n, n), g (c, N, n, k), h0 (c', n, k) -> (B, N, n, k), B = max(b, c, c')."""
    B, N, n, k = max(F.shape[0], g.shape[0], h0.shape[0]), g.shape[1], g.shape[2], g.shape[3]
    F, sF = _batch(F, B, "F")
    g, sg = _batch(g, B, "g")
    h0, sh = _batch(h0, B, "h0")
    out = torch.empty(B, N, n, k, dtype=g.dtype)
    _native.linear_recurrence(
        int(g.dtype == torch.float64), F.data_ptr(), sF, g.data_ptr(), sg, h0.data_ptr(), sh,
        out.data_ptr(), B, N, n, k, int(reverse), int(congruence),
    )
    return out


def riccati(
    A: Tensor, Q: Tensor, C: Tensor, R: Tensor, P0: Tensor, steps: int
) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
    """The filter's covariance pass of :func:`seqlvm.kalman.filter._covariances_sequential`,
    compiled, in float64: A, Q (b, T', n, n), C (b, T', m, n), R (b, T', m, m) in the internal
    layout (T' in {1, steps}), P0 (b, n, n) -> predicted and filtered covariances (B, T, n, n),
    gains (B, T, n, m) and the Cholesky factors of the innovation covariances (B, T, m, m), all
    float64; None when an innovation covariance is not positive definite."""
    B, n, m = max(p.shape[0] for p in (A, Q, C, R, P0)), A.shape[-1], C.shape[-2]
    args = []
    for name, p in (("A", A), ("Q", Q), ("C", C), ("R", R)):
        p, sb = _batch(p.to(torch.float64), B, name)
        args += [p, sb, 0 if p.shape[1] == 1 else p[0, 0].numel()]
    P0, sP = _batch(P0.to(torch.float64), B, "P0")
    pred, filt = (torch.empty(B, steps, n, n, dtype=torch.float64) for _ in range(2))
    K = torch.empty(B, steps, n, m, dtype=torch.float64)
    L = torch.empty(B, steps, m, m, dtype=torch.float64)
    ptrs = [a.data_ptr() if isinstance(a, Tensor) else a for a in args]
    ok = _native.riccati(*ptrs, P0.data_ptr(), sP, pred.data_ptr(), filt.data_ptr(), K.data_ptr(),
                         L.data_ptr(), B, steps, n, m)
    return (pred, filt, K, L) if ok else None

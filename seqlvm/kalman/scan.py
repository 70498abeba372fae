"""Associative scans and linear recurrences over the time axis (dimension 1).

The parallel filter and smoother, and the fast paths of the sequential ones, reduce to these:

- :func:`associative_scan`: all prefixes ``e_0 * e_1 * ... * e_t`` of an associative operator in
  O(log T) sequential depth (the odd/even recursion of Blelloch, as in ``jax.lax.associative_scan``);
- :func:`linear_recurrence`: ``h_t = F_t h_{t-1} + g_t`` by a loop or by the scan;
- :func:`constant_linear_recurrence`: the same with one fixed ``F``, solved exactly in blocks with
  one matrix product per block level (what a steady-state Kalman filter needs).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from seqlvm.kalman.linalg import matvec

Elems = tuple[Tensor, ...]


def _interleave(even: Tensor, odd: Tensor) -> Tensor:
    """Merge along dim 1: even[0], odd[0], even[1], odd[1], ... (even may be one longer)."""
    k = odd.shape[1]
    merged = torch.stack([even[:, :k], odd], dim=2).flatten(1, 2)
    if even.shape[1] > k:
        merged = torch.cat([merged, even[:, k:]], dim=1)
    return merged


def associative_scan(
    combine: Callable[[Elems, Elems], Elems], elems: Sequence[Tensor], reverse: bool = False
) -> Elems:
    """Inclusive scan of an associative ``combine(earlier, later)`` along dim 1.

    elems: tensors with time on dim 1 (other dims broadcast inside ``combine``). Returns, for
    each t, ``e_0 * ... * e_t``; with ``reverse=True``, ``e_t * ... * e_{T-1}`` (the order of
    the arguments to ``combine`` is always earlier-in-time first).
    """
    elems = tuple(elems)
    if reverse:
        flipped = tuple(e.flip(1) for e in elems)
        out = associative_scan(lambda a, b: combine(b, a), flipped)
        return tuple(o.flip(1) for o in out)
    T = elems[0].shape[1]
    if T < 2:
        return elems
    # Combine neighbours (0,1), (2,3), ...: the prefixes at the odd positions are the scan of these.
    pairs = combine(tuple(e[:, 0:-1:2] for e in elems), tuple(e[:, 1::2] for e in elems))
    odd = associative_scan(combine, pairs)
    # Even positions t >= 2 are the odd prefix at t-1 combined with e_t.
    prev = tuple(o[:, : (T - 1) // 2] for o in odd)
    even_rest = combine(prev, tuple(e[:, 2::2] for e in elems))
    return tuple(
        _interleave(torch.cat([e[:, :1], r], dim=1), o) for e, r, o in zip(elems, even_rest, odd)
    )


def _affine_combine(earlier: Elems, later: Elems) -> Elems:
    """(F1, g1) then (F2, g2) is h -> F2 (F1 h + g1) + g2."""
    F1, g1 = earlier
    F2, g2 = later
    return F2 @ F1, matvec(F2, g1) + g2


def linear_recurrence(
    F: Tensor, g: Tensor, h0: Tensor, method: str = "sequential", reverse: bool = False
) -> Tensor:
    """Solve ``h_t = F_t h_{t-1} + g_t`` for t = 1..N with a time-varying ``F``.

    F (b, N, n, n), g (Bt, N, n), h0 (Bt, n) -> h (Bt, N, n) holding h_1..h_N. With
    ``reverse=True`` the recursion runs backwards: ``h_t = F_t h_{t+1} + g_t``, starting from
    h0 after the last step. ``method="parallel"`` uses :func:`associative_scan`.
    """
    if g.shape[1] == 0:
        return g
    if reverse:
        return linear_recurrence(F.flip(1), g.flip(1), h0, method).flip(1)
    if method == "parallel":
        # Fold h0 into the first offset, then the g-part of every prefix is h_t.
        first = g[:, 0] + matvec(F[:, 0], h0)
        g = torch.cat([first.unsqueeze(1), g[:, 1:]], dim=1)
        _, h = associative_scan(_affine_combine, (F, g))
        return h
    out = []
    h = h0
    for t in range(g.shape[1]):
        h = matvec(F[:, t], h) + g[:, t]
        out.append(h)
    return torch.stack(out, dim=1)


def steady_linear_recurrence(
    F: Tensor,
    g: Tensor,
    h0: Tensor,
    steady_from: int | None,
    method: str = "sequential",
    reverse: bool = False,
) -> Tensor:
    """:func:`linear_recurrence` where ``F[:, t]`` is one matrix for every ``t >= steady_from``.

    The varying steps go to :func:`linear_recurrence`, the steady stretch to
    :func:`constant_linear_recurrence` (exact, in blocks). Forwards the varying steps come first;
    with ``reverse=True`` the recursion starts in the steady stretch at the end. ``steady_from``
    None (or past the end) means nothing is steady. Shapes as for :func:`linear_recurrence`.
    """
    k = steady_from
    if k is None or k >= g.shape[1]:
        return linear_recurrence(F, g, h0, method, reverse)
    if reverse:
        tail = constant_linear_recurrence(F[:, k], g[:, k:], h0, reverse=True)
        head = linear_recurrence(F[:, :k], g[:, :k], tail[:, 0], method, reverse=True)
    else:
        head = linear_recurrence(F[:, :k], g[:, :k], h0, method)
        tail = constant_linear_recurrence(F[:, k], g[:, k:], head[:, -1] if k > 0 else h0)
    return torch.cat([head, tail], dim=1)


def _powers(F: Tensor, count: int) -> Tensor:
    """F^0 .. F^count stacked on dim -3, by doubling: (..., count + 1, n, n)."""
    eye = torch.eye(F.shape[-1], dtype=F.dtype, device=F.device).expand_as(F)
    P = torch.stack([eye, F], dim=-3)
    while P.shape[-3] < count + 1:
        P = torch.cat([P, P[..., -1:, :, :] @ P[..., 1:, :, :]], dim=-3)
    return P[..., : count + 1, :, :]


def _block_length(n: int) -> int:
    """Steps per block: each element costs L n^2 multiply-adds in the Toeplitz product (against n^2
    for the plain loop), while fewer, longer blocks mean fewer operations; L n = 32 was fastest
    when timed for n = 4 and 8 on a 2-core CPU."""
    return max(4, min(32, 32 // n))


def _apply(M: Tensor, X: Tensor) -> Tensor:
    """Rows of X times M^T: M (b, r, c), X (Bt, k, c) -> (Bt, k, r), as one GEMM when b = 1."""
    if M.shape[0] == 1:
        return (X.reshape(-1, X.shape[-1]) @ M[0].transpose(0, 1)).reshape(*X.shape[:-1], M.shape[1])
    return torch.bmm(X, M.transpose(1, 2))


def constant_linear_recurrence(F: Tensor, g: Tensor, h0: Tensor, reverse: bool = False) -> Tensor:
    """Solve ``h_t = F h_{t-1} + g_t`` for t = 1..N with one ``F`` for every step.

    F (b, n, n), g (Bt, N, n), h0 (Bt, n) -> (Bt, N, n); ``reverse`` as in
    :func:`linear_recurrence`. Exact (no truncation): the steps are cut into blocks of L; inside
    a block ``h_{c,i} = sum_{j<=i} F^{i-j} g_{c,j} + F^{i+1} h_{c-1}``, one product with a
    block-Toeplitz matrix of powers of F, and the block ends follow the same recurrence with
    F^L, solved recursively. When F is so unstable that its powers overflow, it falls back to
    the loop, which then gives what the plain recursion gives.
    """
    if reverse:
        return constant_linear_recurrence(F, g.flip(1), h0, reverse=False).flip(1)
    Bt, N, n = g.shape
    if N <= 2:
        return linear_recurrence(F.unsqueeze(1).expand(-1, N, -1, -1), g, h0)
    L = min(_block_length(n), N)
    powers = _powers(F, L)  # (b, L+1, n, n)
    if not bool(torch.isfinite(powers).all()):
        return linear_recurrence(F.unsqueeze(1).expand(-1, N, -1, -1), g, h0)
    blocks = -(-N // L)
    pad = blocks * L - N
    if pad:
        g = torch.cat([g, g.new_zeros(Bt, pad, n)], dim=1)
    # Toeplitz of powers: block (i, j) = F^{i-j} for i >= j, else 0.
    lag = torch.arange(L, device=g.device)
    lag = lag[:, None] - lag[None, :]
    toeplitz = powers[:, lag.clamp_min(0)] * (lag >= 0).to(g.dtype)[None, :, :, None, None]
    b = toeplitz.shape[0]
    toeplitz = toeplitz.permute(0, 1, 3, 2, 4).reshape(b, L * n, L * n)
    local = _apply(toeplitz, g.reshape(Bt, blocks, L * n)).reshape(Bt, blocks, L, n)
    # State entering each block: h0, then the block ends of the recurrence with F^L.
    ends = constant_linear_recurrence(powers[:, L], local[:, :-1, L - 1], h0) if blocks > 1 else None
    starts = h0.unsqueeze(1) if ends is None else torch.cat([h0.unsqueeze(1), ends], dim=1)
    # h_{c,i} = local_{c,i} + F^{i+1} start_c
    carry = _apply(powers[:, 1:].reshape(b, L * n, n), starts).reshape(Bt, blocks, L, n)
    return (local + carry).reshape(Bt, blocks * L, n)[:, :N]

"""Associative scans and linear recurrences over the time axis (dimension 1).

The parallel filter and smoother, and the fast paths of the sequential ones, reduce to these:

- :func:`associative_scan`: all prefixes ``e_0 * e_1 * ... * e_t`` of an associative operator in
  O(log T) sequential depth (the odd/even recursion of Blelloch, as in ``jax.lax.associative_scan``);
- :func:`linear_recurrence`: ``h_t = F_t h_{t-1} + g_t`` (or ``F_t h_{t-1} F_t^T + g_t`` for
  covariances) by a loop or by a blocked scan, which runs chunks of steps side by side;
- :func:`constant_linear_recurrence`: the same with one fixed ``F``, solved exactly in blocks with
  one matrix product per block level (what a steady-state Kalman filter needs);
- :func:`steady_powers`: the powers of one repeated element by doubling, up to a steady state
  (the covariances of a time-invariant model).

The recurrences' states are matrices with k columns (the product layout of
:func:`seqlvm.kalman.linalg.columns`).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from seqlvm.kalman import native

Elems = tuple[Tensor, ...]


def _interleave(even: Tensor, odd: Tensor) -> Tensor:
    """Merge along dim 1: even[0], odd[0], even[1], odd[1], ... (even may be one longer)."""
    k = odd.shape[1]
    merged = torch.stack([even[:, :k], odd], dim=2).flatten(1, 2)
    if even.shape[1] > k:
        merged = torch.cat([merged, even[:, k:]], dim=1)
    return merged


def associative_scan(combine: Callable[[Elems, Elems], Elems], elems: Sequence[Tensor]) -> Elems:
    """Inclusive scan of an associative ``combine(earlier, later)`` along dim 1.

    elems: tensors with time on dim 1 (other dims broadcast inside ``combine``). Returns, for
    each t, ``e_0 * ... * e_t``.
    """
    elems = tuple(elems)
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


STEADY_MARGIN = 4  # calm steps required after a steady point


def steady_start(seq: Tensor) -> int | None:
    """The first index along dim 1 from which a sequence of covariance matrices (b, N, n, n)
    stays put to a few units of rounding error, with at least ``STEADY_MARGIN`` calm steps after
    it; None if there is none (a steady state of the covariance recursions).

    Each entry is measured on its own scale, ``sqrt(P_ii P_jj)`` (which bounds ``|P_ij|``): a
    state of small variance that still converges must not pass for steady beside a large one.
    """
    P = seq.detach()
    if P.shape[1] < STEADY_MARGIN + 2:
        return None
    var = P.diagonal(dim1=-2, dim2=-1).abs()
    scale = (var.unsqueeze(-1) * var.unsqueeze(-2)).sqrt()
    scale = torch.maximum(scale[:, 1:], scale[:, :-1])
    change = P[:, 1:] - P[:, :-1]  # into step t+1
    calm = (change.abs() <= 8 * torch.finfo(P.dtype).eps * scale).all(-1).all(-1).all(0).int()  # (N-1,)
    calm_after = calm.flip(0).cummin(0).values.flip(0)  # 1 where every later change is calm too
    if not bool(calm_after[-STEADY_MARGIN:].all()):
        return None
    return int(torch.argmax(calm_after))


FIRST_STRETCH = 128  # powers computed before the first steady-state test


def steady_powers(
    combine: Callable[[Elems, Elems], Elems], elem: Elems, value: Callable[[Elems], Tensor], count: int
) -> tuple[Tensor, int | None]:
    """``value`` of the powers e^1, e^2, ... of one element of an associative operator, up to a
    steady state.

    elem: tensors (b, 1, ...); value maps the stacked powers e^1..e^N (b, N, ...) to a sequence
    of matrices (b, N', r, c) (a covariance recursion's). The powers come by doubling (log2 N
    combines of growing batches); N grows 128, 512, ... up to ``count`` until the values reach a
    steady state. Returns the values and the index from which they are steady, or None (then
    N = count).
    """
    powers, N = elem, min(count, FIRST_STRETCH)
    while True:
        while powers[0].shape[1] < N:  # e^1..e^k -> e^1..e^2k
            more = combine(tuple(p[:, -1:] for p in powers), powers)
            powers = tuple(torch.cat([p, q], 1) for p, q in zip(powers, more))
        values = value(tuple(p[:, :N] for p in powers))
        steady = steady_start(values)
        if steady is not None or N == count:
            return values, steady
        N = min(count, 4 * N)


def linear_recurrence(
    F: Tensor,
    g: Tensor,
    h0: Tensor,
    method: str = "sequential",
    reverse: bool = False,
    congruence: bool = False,
) -> Tensor:
    """Solve ``h_t = F_t h_{t-1} + g_t`` for t = 1..N with a time-varying ``F``.

    The states are matrices (k columns solved at once; see :func:`seqlvm.kalman.linalg.columns`):
    F (b, N, n, n), g (c, N, n, k), h0 (c, n, k) -> h (c, N, n, k) holding h_1..h_N, with b and c
    broadcasting. With ``reverse=True`` the recursion runs backwards: ``h_t = F_t h_{t+1} + g_t``,
    starting from h0 after the last step. With ``congruence=True`` the states are covariances
    (k = n) and the step is ``h_t = F_t h_{t-1} F_t^T + g_t``. ``method="sequential"`` is the
    plain loop (compiled, :func:`seqlvm.kalman.native.linear_recurrence`, where it can stand in);
    ``"parallel"`` the blocked scan of :func:`_chunked_recurrence`.
    """
    if g.shape[1] == 0:
        return g
    if method == "sequential" and native.usable(F, g, h0):
        return native.linear_recurrence(F, g, h0, reverse, congruence)
    if method == "parallel":
        return _chunked_recurrence(F, g, h0, reverse, congruence)
    return _stepwise(F, g, h0, reverse, congruence)


def _carry(F: Tensor, h: Tensor, congruence: bool) -> Tensor:
    """F h, or F h F^T for covariances."""
    return F @ h @ F.transpose(-1, -2) if congruence else F @ h


def _stepwise(F: Tensor, g: Tensor, h0: Tensor, reverse: bool, congruence: bool) -> Tensor:
    """:func:`linear_recurrence` one step at a time."""
    N = g.shape[1]
    out = [g] * N  # placeholders, every one overwritten below
    h = h0
    Fs, gs = F.unbind(1), g.unbind(1)  # see seqlvm.kalman.params.per_step
    for t in range(N - 1, -1, -1) if reverse else range(N):
        h = _carry(Fs[t], h, congruence) + gs[t]
        out[t] = h
    return torch.stack(out, dim=1)


def _chunk_length(N: int) -> int:
    """Steps per chunk of :func:`_chunked_recurrence` (N >= ``STEPWISE_BELOW``, so L >= 3): one
    level costs about 3 L + 2 N / L operations, least at L = sqrt(2 N / 3); capped, so that long
    recurrences nest instead."""
    return min(64, round(math.sqrt(2 * N / 3)))


STEPWISE_BELOW = 12  # shorter recurrences take fewer operations one step at a time


def _chunked_recurrence(F: Tensor, g: Tensor, h0: Tensor, reverse: bool, congruence: bool) -> Tensor:
    """:func:`linear_recurrence` by the blocked scan (Blelloch 1990, "Prefix sums and their
    applications"): O(L + N / L) sequential steps instead of N.

    The steps are cut into chunks of L. All chunks run their L steps side by side, each from a
    zero state, giving local solutions ``l_i``, and keep the products ``P_i = F_i ... F_0`` of
    their transitions (reversed: ``F_i ... F_{L-1}``). The states the chunks start from obey the
    same recurrence over the chunks, with each chunk's full product as its transition and its
    last local solution (first, reversed) as its offset; solved the same way, it nests. Then
    ``h_i = l_i + P_i h_start`` (``+ P_i h_start P_i^T`` for covariances). Exact up to
    rounding: the products are only regrouped.
    """
    b, N, n, _ = F.shape
    c, k = g.shape[0], g.shape[-1]
    if N < STEPWISE_BELOW:
        return _stepwise(F, g, h0, reverse, congruence)
    L = _chunk_length(N)
    chunks = -(-N // L)
    pad = chunks * L - N  # identity steps with zero offsets where the recursion ends, dropped after
    if pad:
        eye = torch.eye(n, dtype=F.dtype, device=F.device).expand(b, pad, n, n)
        zeros = g.new_zeros(c, pad, n, k)
        F = torch.cat([eye, F] if reverse else [F, eye], dim=1)
        g = torch.cat([zeros, g] if reverse else [g, zeros], dim=1)
    F = F.reshape(b, chunks, L, n, n)
    g = g.reshape(c, chunks, L, n, k)
    local, products = [g[:, :, 0]] * L, [F[:, :, 0]] * L  # placeholders, every one overwritten
    h = P = None
    Fs, gs = F.unbind(2), g.unbind(2)
    for i in range(L - 1, -1, -1) if reverse else range(L):
        Fi, gi = Fs[i], gs[i]
        h = gi.expand(max(b, c), *gi.shape[1:]) if h is None else _carry(Fi, h, congruence) + gi
        P = Fi if P is None else Fi @ P
        local[i], products[i] = h, P
    # The state each chunk starts from: h0 for the first (last, reversed), then the state the
    # chunk before it ends in, by the recurrence over the chunks.
    if reverse:
        ends = _chunked_recurrence(products[0][:, 1:], local[0][:, 1:], h0, reverse, congruence)
    else:
        ends = _chunked_recurrence(products[-1][:, :-1], local[-1][:, :-1], h0, reverse, congruence)
    h0 = h0.unsqueeze(1).expand(ends.shape[0], -1, -1, -1)
    starts = torch.cat([ends, h0] if reverse else [h0, ends], dim=1)
    P = torch.stack(products, 2)  # (b, chunks, L, n, n)
    if congruence:
        carried = _carry(P, starts.unsqueeze(2), True)
    else:  # one product per chunk for all its steps
        carried = (P.reshape(b, chunks, L * n, n) @ starts).reshape(-1, chunks, L, n, k)
    out = torch.stack(local, 2) + carried
    out = out.reshape(out.shape[0], chunks * L, n, k)
    return out[:, pad:] if reverse else out[:, :N]


def steady_linear_recurrence(
    F: Tensor,
    g: Tensor,
    h0: Tensor,
    steady_from: int | None,
    method: str = "sequential",
    reverse: bool = False,
    G: Tensor | None = None,
) -> Tensor:
    """:func:`linear_recurrence` where ``F[:, t]`` (and ``G[:, t]``) is one matrix for every
    ``t >= steady_from``.

    The varying steps go to :func:`linear_recurrence`, the steady stretch to
    :func:`constant_linear_recurrence` (exact, in blocks). Forwards the varying steps come first;
    with ``reverse=True`` the recursion starts in the steady stretch at the end. ``steady_from``
    None (or past the end) means nothing is steady. Shapes as for :func:`linear_recurrence`;
    with ``G`` (b, N, n, q) the offsets are ``G_t g_t`` for inputs g (c, N, q, k).
    """
    k, N = steady_from, g.shape[1]
    if k is not None:
        # A steady stretch of whole blocks needs no padding (a copy of all its data); the few
        # steps cut off join the varying ones, which take any F.
        k += (N - k) % _block_length(F.shape[-1])
    if k is None or k >= N:
        return linear_recurrence(F, g if G is None else G @ g, h0, method, reverse)
    head_g = g[:, :k] if G is None else G[:, :k] @ g[:, :k]
    tail_G = None if G is None else G[:, k]
    if reverse:
        tail = constant_linear_recurrence(F[:, k], g[:, k:], h0, reverse=True, G=tail_G)
        head = linear_recurrence(F[:, :k], head_g, tail[:, 0], method, reverse=True)
    else:
        head = linear_recurrence(F[:, :k], head_g, h0, method)
        tail = constant_linear_recurrence(F[:, k], g[:, k:], head[:, -1] if k > 0 else h0, G=tail_G)
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
    """M times each block of X: M (b, r, s), X (c, B, s, k) -> (c, B, r, k).

    With one column per sequence (k = 1) and a shared M, all blocks of all sequences go through
    one GEMM as rows; with many columns, one product per block."""
    if X.shape[-1] == 1:
        rows = X.squeeze(-1)
        if M.shape[0] == 1:
            out = (rows.reshape(-1, rows.shape[-1]) @ M[0].transpose(0, 1)).reshape(*rows.shape[:-1], M.shape[1])
        else:
            out = torch.bmm(rows, M.transpose(1, 2))
        return out.unsqueeze(-1)
    return M.unsqueeze(1) @ X


def constant_linear_recurrence(
    F: Tensor, g: Tensor, h0: Tensor, reverse: bool = False, G: Tensor | None = None
) -> Tensor:
    """Solve ``h_t = F h_{t-1} + g_t`` for t = 1..N with one ``F`` for every step.

    F (b, n, n), g (c, N, n, k), h0 (c, n, k) -> (c, N, n, k); ``reverse`` as in
    :func:`linear_recurrence`. With an input matrix G (b, n, q) the offsets are ``G g_t`` for
    inputs g (c, N, q, k): G goes into the block matrix, so the n-row offsets are never formed.
    Exact (no truncation): the steps are cut into blocks of L; inside
    a block ``h_{c,i} = sum_{j<=i} F^{i-j} g_{c,j} + F^{i+1} h_{c-1}`` (reversed:
    ``sum_{j>=i} F^{j-i} g_{c,j} + F^{L-i} h_{c+1}``), one product with a block-Toeplitz matrix
    of powers of F, and the states between blocks follow the same recurrence with F^L, solved
    recursively. When F is so unstable that its powers overflow, it falls back to the loop,
    which then gives what the plain recursion gives.
    """
    c, N, q, k = g.shape
    n = F.shape[-1]

    def stepwise() -> Tensor:
        offsets = g if G is None else G.unsqueeze(1) @ g
        return linear_recurrence(F.unsqueeze(1).expand(-1, N, -1, -1), offsets, h0, reverse=reverse)

    if N < STEPWISE_BELOW:
        return stepwise()
    L = min(_block_length(n), N)
    powers = _powers(F, L)  # (b, L+1, n, n)
    if not bool(torch.isfinite(powers).all()):
        return stepwise()
    blocks = -(-N // L)
    pad = blocks * L - N  # zero steps on the side the recursion ends at, dropped afterwards
    if pad:
        zeros = g.new_zeros(c, pad, q, k)
        g = torch.cat([zeros, g] if reverse else [g, zeros], dim=1)
    # Toeplitz of powers: block (i, j) = F^{i-j} G for i >= j (F^{j-i} G for j >= i reversed), else 0.
    lag = torch.arange(L, device=g.device)
    lag = lag[None, :] - lag[:, None] if reverse else lag[:, None] - lag[None, :]
    weights = powers if G is None else powers @ G.unsqueeze(1)  # (b, L+1, n, q)
    toeplitz = weights[:, lag.clamp_min(0)] * (lag >= 0).to(g.dtype)[None, :, :, None, None]
    b = toeplitz.shape[0]
    toeplitz = toeplitz.permute(0, 1, 3, 2, 4).reshape(b, L * n, L * q)
    local = _apply(toeplitz, g.reshape(c, blocks, L * q, k)).reshape(c, blocks, L, n, k)
    # The state each block starts from: h0, then the states between blocks, by the same
    # recurrence with F^L over the blocks' own last (first, reversed) steps.
    if blocks > 1:
        edge = local[:, 1:, 0] if reverse else local[:, :-1, L - 1]
        between = constant_linear_recurrence(powers[:, L], edge, h0, reverse)
        starts = torch.cat([between, h0.unsqueeze(1)] if reverse else [h0.unsqueeze(1), between], dim=1)
    else:
        starts = h0.unsqueeze(1)
    # h_{c,i} = local_{c,i} + F^{i+1} start_c  (reversed: F^{L-i})
    carry_powers = powers[:, 1:].flip(1) if reverse else powers[:, 1:]
    carry = _apply(carry_powers.reshape(b, L * n, n), starts).reshape(c, blocks, L, n, k)
    out = (local + carry).reshape(c, blocks * L, n, k)
    return out[:, pad:] if reverse else out[:, :N]

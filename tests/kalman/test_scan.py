"""The recurrence solvers of seqlvm.kalman.scan against the plain recursion, written out here."""

from __future__ import annotations

import pytest
import torch

from seqlvm.kalman.linalg import columns, uncolumns
from seqlvm.kalman.scan import (
    associative_scan,
    constant_linear_recurrence,
    linear_recurrence,
    steady_linear_recurrence,
    steady_powers,
)

DT = torch.float64


def plain(F: torch.Tensor, g: torch.Tensor, h0: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """h_t = F_t h_{t-1} + g_t (or h_t = F_t h_{t+1} + g_t), one step at a time."""
    N = g.shape[1]
    out = [None] * N
    h = h0
    for t in (range(N - 1, -1, -1) if reverse else range(N)):
        h = F[:, t] @ h + g[:, t]
        out[t] = h
    return torch.stack(out, dim=1)


def stable(b: int, N: int, n: int, gen: torch.Generator) -> torch.Tensor:
    F = torch.randn(b, N, n, n, dtype=DT, generator=gen)
    return 0.9 * F / torch.linalg.matrix_norm(F, ord=2)[..., None, None]


@pytest.mark.parametrize("layout", ["columns", "rows", "shared F", "shared g"])
@pytest.mark.parametrize("method", ["sequential", "parallel"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("N", [1, 11, 12, 37, 48, 1500])
def test_linear_recurrence_matches_the_plain_recursion(layout: str, method: str, reverse: bool, N: int) -> None:
    """N spans the plain loop, one level of chunks with and without padding, and nested levels;
    the layouts broadcast F over the sequences, or one g and h0 over many F."""
    gen = torch.Generator().manual_seed(N)
    Bt, n = 5, 3
    shared = layout == "columns"
    F = stable(1 if layout in ("columns", "shared F") else Bt, N, n, gen)
    rows = 1 if layout == "shared g" else Bt
    g = columns(torch.randn(rows, N, n, dtype=DT, generator=gen), shared)
    h0 = columns(torch.randn(rows, n, dtype=DT, generator=gen), shared)
    got = linear_recurrence(F, g, h0, method, reverse)
    want = plain(F, g, h0, reverse)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["sequential", "parallel"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("N", [1, 12, 37, 300])
def test_covariance_recurrence_matches_the_plain_recursion(method: str, reverse: bool, N: int) -> None:
    """congruence=True: P_t = F_t P_{t-1} F_t^T + g_t, for one F shared by a batch of covariances."""
    gen = torch.Generator().manual_seed(N)
    n, b = 3, 4
    F = stable(1, N, n, gen)
    M = torch.randn(b, N + 1, n, n, dtype=DT, generator=gen)
    S = M @ M.transpose(-1, -2)
    got = linear_recurrence(F, S[:, 1:], S[:, 0], method, reverse, congruence=True)
    want, P = [None] * N, S[:, 0]
    for t in range(N - 1, -1, -1) if reverse else range(N):
        P = F[:, t] @ P @ F[:, t].transpose(-1, -2) + S[:, t + 1]
        want[t] = P
    torch.testing.assert_close(got, torch.stack(want, 1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("N", [1, 2, 3, 31, 32, 33, 200, 1500])
@pytest.mark.parametrize("layout", ["columns", "rows", "batched"])
@pytest.mark.parametrize("reverse", [False, True])
def test_constant_linear_recurrence_is_exact(N: int, layout: str, reverse: bool) -> None:
    """Block lengths of 8 (n = 4): N spans no block, one, several and nested block levels."""
    gen = torch.Generator().manual_seed(N)
    Bt, n = 3, 4
    F = stable(Bt if layout == "batched" else 1, 1, n, gen)[:, 0]
    x = torch.randn(Bt, N, n, dtype=DT, generator=gen)
    g, h0 = columns(x, layout == "columns"), columns(torch.randn(Bt, n, dtype=DT, generator=gen), layout == "columns")
    got = constant_linear_recurrence(F, g, h0, reverse)
    want = plain(F.unsqueeze(1).expand(-1, N, -1, -1), g, h0, reverse)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert uncolumns(got).shape == (Bt, N, n)


@pytest.mark.parametrize("steady_from", [0, 10, 59, 60, None])
@pytest.mark.parametrize("reverse", [False, True])
def test_steady_linear_recurrence_splits_at_the_steady_step(steady_from: int | None, reverse: bool) -> None:
    gen = torch.Generator().manual_seed(1)
    N, n, Bt = 60, 3, 4
    F = stable(1, N, n, gen)
    if steady_from is not None and steady_from < N:
        F = torch.cat([F[:, :steady_from], F[:, steady_from : steady_from + 1].expand(-1, N - steady_from, -1, -1)], 1)
    g = columns(torch.randn(Bt, N, n, dtype=DT, generator=gen), True)
    h0 = columns(torch.randn(Bt, n, dtype=DT, generator=gen), True)
    for method in ("sequential", "parallel"):
        got = steady_linear_recurrence(F, g, h0, steady_from, method, reverse)
        torch.testing.assert_close(got, plain(F, g, h0, reverse), rtol=1e-10, atol=1e-12)


def _affine(earlier: tuple[torch.Tensor, ...], later: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    (F1, g1), (F2, g2) = earlier, later
    return F2 @ F1, F2 @ g1 + g2


def test_associative_scan_gives_every_prefix() -> None:
    gen = torch.Generator().manual_seed(2)
    for N in (1, 2, 7, 64, 100):
        F = stable(2, N, 3, gen)
        g = torch.randn(2, N, 3, 1, dtype=DT, generator=gen)
        _, h = associative_scan(_affine, (F, g))
        torch.testing.assert_close(h, plain(F, g, torch.zeros(2, 3, 1, dtype=DT)), rtol=1e-12, atol=1e-12)


def _congruence(earlier: tuple[torch.Tensor, ...], later: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    (F1, S1), (F2, S2) = earlier, later
    return F2 @ F1, F2 @ S1 @ F2.transpose(-1, -2) + S2


@pytest.mark.parametrize("count", [5, 40, 1000])
def test_steady_powers_follow_the_recursion_until_steady(count: int) -> None:
    """The covariances h_j = F h_{j-1} F^T + g from h_0 = 0 are the g-part of the j-th power of
    (F, g); with a contraction they settle at the solution of h = F h F^T + g, which steady_powers
    must notice, entry by entry on the scale sqrt(h_ii h_jj)."""
    gen = torch.Generator().manual_seed(3)
    n = 3
    F = stable(1, 1, n, gen) * 0.5
    root = torch.randn(1, 1, n, n, dtype=DT, generator=gen)
    g = root @ root.transpose(-1, -2) + torch.diag(torch.tensor([1.0, 1e-6, 1e-12], dtype=DT))  # entries of unlike scales
    values, steady = steady_powers(_congruence, (F, g), lambda p: p[1], count)
    N = values.shape[1]
    want, h = [], torch.zeros(n, n, dtype=DT)
    for _ in range(N):
        h = F[0, 0] @ h @ F[0, 0].T + g[0, 0]
        want.append(h)
    torch.testing.assert_close(values[0], torch.stack(want), rtol=1e-12, atol=1e-14)
    if count == 5:  # too short to see a steady state: all powers, none steady
        assert steady is None and N == count
    else:
        assert steady is not None and N <= count
        F0 = F[0, 0]
        fixed = torch.linalg.solve(torch.eye(n * n, dtype=DT) - torch.kron(F0, F0), g[0, 0].reshape(-1)).reshape(n, n)
        torch.testing.assert_close(values[0, -1], fixed, rtol=1e-13, atol=1e-14)
        var = values.diagonal(dim1=-2, dim2=-1)
        tol = 8 * torch.finfo(DT).eps * (var.unsqueeze(-1) * var.unsqueeze(-2)).sqrt()
        change = (values[:, 1:] - values[:, :-1]).abs()
        assert (change[:, steady:] <= torch.maximum(tol[:, steady + 1 :], tol[:, steady:-1])).all()  # steady from there on
        assert (change[:, steady - 1] > torch.maximum(tol[:, steady], tol[:, steady - 1])).any()  # and not before


@pytest.mark.parametrize("N", [2, 33, 200])
@pytest.mark.parametrize("reverse", [False, True])
def test_an_input_matrix_gives_the_same_as_its_products(N: int, reverse: bool) -> None:
    """Offsets G u_t handed over as (G, u): the block solver folds G into its block matrix."""
    gen = torch.Generator().manual_seed(N)
    Bt, n, q = 5, 4, 2
    F = stable(1, 1, n, gen)[:, 0]
    G = torch.randn(1, n, q, dtype=DT, generator=gen)
    u = columns(torch.randn(Bt, N, q, dtype=DT, generator=gen), True)
    h0 = columns(torch.randn(Bt, n, dtype=DT, generator=gen), True)
    want = plain(F.unsqueeze(1).expand(-1, N, -1, -1), G.unsqueeze(1) @ u, h0, reverse)
    torch.testing.assert_close(constant_linear_recurrence(F, u, h0, reverse, G=G), want, rtol=1e-10, atol=1e-12)
    varying = torch.cat([stable(1, N // 2, n, gen), F.unsqueeze(1).expand(-1, N - N // 2, -1, -1)], 1)
    G_head = torch.randn(1, N // 2, n, q, dtype=DT, generator=gen)
    G_t = torch.cat([G_head, G.unsqueeze(1).expand(-1, N - N // 2, -1, -1)], 1)
    got = steady_linear_recurrence(varying, u, h0, N // 2, "sequential", reverse, G=G_t)
    torch.testing.assert_close(got, plain(varying, G_t @ u, h0, reverse), rtol=1e-10, atol=1e-12)

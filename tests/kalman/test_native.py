"""The compiled loops of ``seqlvm.kalman.native`` against their definitions, and where they may
stand in for the PyTorch ones. (The oracle tests run with and without them: see conftest.py.)"""

from __future__ import annotations

import pytest
import torch

from seqlvm.kalman import LGSSMParams, kalman_filter, kalman_smoother, log_likelihood, native
from seqlvm.kalman.filter import run_filter
from seqlvm.kalman.likelihood import covariance_terms
from seqlvm.kalman.params import prepare

pytestmark = pytest.mark.skipif(not native.available(), reason="the compiled loops are not built")


@pytest.fixture(autouse=True)
def loops() -> str:
    """These tests are about the compiled loops themselves: they run once, with the loops on
    (overriding conftest.py's fixture of both)."""
    return "compiled"


def _definition(F: torch.Tensor, g: torch.Tensor, h0: torch.Tensor, reverse: bool, congruence: bool) -> torch.Tensor:
    """h_t = F_t h_{t-1} + g_t (F_t h_{t-1} F_t^T + g_t), one sequence and one step at a time, in float64."""
    F, g, h0 = F.double(), g.double(), h0.double()
    B, N = max(F.shape[0], g.shape[0], h0.shape[0]), g.shape[1]
    out = torch.empty(B, N, *g.shape[2:], dtype=torch.float64)
    for b in range(B):
        Fb, gb = F[b % F.shape[0]], g[b % g.shape[0]]
        h = h0[b % h0.shape[0]]
        for t in reversed(range(N)) if reverse else range(N):
            h = (Fb[t] @ h @ Fb[t].T if congruence else Fb[t] @ h) + gb[t]
            out[b, t] = h
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("congruence", [False, True])
@pytest.mark.parametrize("batches", [(1, 1, 1), (3, 1, 1), (1, 3, 3), (3, 3, 1), (1, 1, 3)])
def test_linear_recurrence_follows_its_definition(dtype, reverse, congruence, batches) -> None:
    gen = torch.Generator().manual_seed(0)
    n, N = 3, 7
    k = n if congruence else 5
    bF, bg, bh = batches
    F = 0.5 * torch.randn(bF, N, n, n, generator=gen, dtype=dtype)
    g = torch.randn(bg, N, n, k, generator=gen, dtype=dtype)
    h0 = torch.randn(bh, n, k, generator=gen, dtype=dtype)
    got = native.linear_recurrence(F.transpose(-1, -2).mT, g, h0, reverse, congruence)  # a strided view too
    assert got.dtype == dtype and got.shape == (max(batches), N, n, k)
    tol = 1e-5 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(got.double(), _definition(F, g, h0, reverse, congruence), rtol=tol, atol=tol)


def _model(dtype: torch.dtype) -> LGSSMParams:
    gen = torch.Generator().manual_seed(1)
    n, m = 4, 2
    A = 0.9 * torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))[0]
    X = torch.randn(n, n, generator=gen, dtype=torch.float64)
    Q = X @ X.T / n + 0.1 * torch.eye(n, dtype=torch.float64)
    C = torch.randn(m, n, generator=gen, dtype=torch.float64)
    params = LGSSMParams(A, C, Q, 0.5 * torch.eye(m, dtype=torch.float64), torch.zeros(n, dtype=torch.float64),
                         torch.eye(n, dtype=torch.float64))
    return LGSSMParams(*(None if p is None else p.to(dtype) for p in params))


def test_float32_covariances_are_float64_ones_rounded() -> None:
    """The compiled covariance pass works in float64 whatever the model's dtype, as the
    steady-state doubling does: a float32 model gets the float64 covariances, rounded once."""
    p32 = _model(torch.float32)
    p64 = LGSSMParams(*(None if p is None else p.double() for p in p32))  # the same numbers
    x = torch.randn(3, 50, 2, generator=torch.Generator().manual_seed(2))
    f32, f64 = kalman_filter(p32, x), kalman_filter(p64, x.double())
    for a, b in [(f32.covs, f64.covs), (f32.pred_covs, f64.pred_covs)]:
        assert torch.equal(a, b.float())


def test_riccati_resumed_in_stretches_repeats_one_run_exactly() -> None:
    """A time-invariant recursion runs in stretches until it is steady; each resumes from the
    last filtered covariance of the one before, with the same arithmetic as one long run."""
    p = _model(torch.float64)
    A, Q, C, R = (v[None, None] for v in (p.A, p.Q, p.C, p.R))
    P0 = p.P0[None]
    whole = native.riccati(A, Q, C, R, P0, 50)
    first = native.riccati(A, Q, C, R, P0, 20)
    rest = native.riccati(A, Q, C, R, first[1][:, -1], 30, continued=True)
    for w, a, b in zip(whole, first, rest):
        assert torch.equal(w, torch.cat([a, b], 1))
    assert native.riccati(A, Q, 0 * C, -R, P0, 5) is None  # S = -R is not positive definite


def test_usable_only_without_a_gradient_through_the_operands() -> None:
    a = torch.ones(2, 2)
    leaf = torch.ones(2, 2, requires_grad=True)
    assert native.usable(a, a)
    assert not native.usable(a, leaf)
    with torch.no_grad():
        assert native.usable(a, leaf)
    assert not native.usable(a.half(), a.half())
    assert not native.usable(a, a.double())
    assert not native.usable(a.long())
    with native.disabled():
        assert not native.usable(a) and not native.available()
    assert native.usable(a)


def test_a_gradient_takes_the_pytorch_loops_and_matches_them() -> None:
    params = _model(torch.float64)
    A = params.A.clone().requires_grad_(True)
    x = torch.randn(2, 20, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    s = kalman_smoother(params._replace(A=A), x)
    assert s.means.requires_grad and s.covs.requires_grad
    with torch.no_grad():
        compiled = kalman_smoother(params, x)
    for a, b in [(s.means, compiled.means), (s.covs, compiled.covs), (s.cross_covs, compiled.cross_covs)]:
        torch.testing.assert_close(a.detach(), b, rtol=1e-12, atol=1e-12)


def _spd(b: int, T: int, n: int, gen: torch.Generator) -> torch.Tensor:
    X = torch.randn(b, T, n, n, generator=gen, dtype=torch.float64)
    return X @ X.mT / n + 0.1 * torch.eye(n, dtype=torch.float64)


def _rts_definition(A: torch.Tensor, Pf: torch.Tensor, Pp: torch.Tensor, mf: torch.Tensor, mp: torch.Tensor):
    """The RTS recursion one step at a time, with a general solve: A (a, T', n, n), covariances
    (b, T, n, n), means (c, T, n, k) -> smoother gains, covariances and cross covariances
    (max(a, b), ...), means (max(a, b, c), ...)."""
    T, f64 = Pf.shape[1], torch.float64
    Bc, Bm = max(A.shape[0], Pf.shape[0]), max(A.shape[0], Pf.shape[0], mf.shape[0])
    E, X = torch.zeros(Bc, T - 1, *Pf.shape[2:], dtype=f64), torch.zeros(Bc, T - 1, *Pf.shape[2:], dtype=f64)
    Ps, ms = torch.zeros(Bc, *Pf.shape[1:], dtype=f64), torch.zeros(Bm, *mf.shape[1:], dtype=f64)
    for b in range(Bc):
        Ab, F, P = (v[b % v.shape[0]] for v in (A, Pf, Pp))
        Ps[b, -1] = F[-1]
        for t in reversed(range(T - 1)):
            AF = Ab[(t + 1) % Ab.shape[0]] @ F[t]
            E[b, t] = torch.linalg.solve(P[t + 1], AF).T
            Ps[b, t] = E[b, t] @ Ps[b, t + 1] @ E[b, t].T + F[t] - E[b, t] @ AF
            X[b, t] = Ps[b, t + 1] @ E[b, t].T
    for b in range(Bm):
        Eb, f, p = E[b % Bc], mf[b % mf.shape[0]], mp[b % mp.shape[0]]
        ms[b, -1] = f[-1]
        for t in reversed(range(T - 1)):
            ms[b, t] = f[t] + Eb[t] @ (ms[b, t + 1] - p[t + 1])
    return E, Ps, X, ms


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batches", [(1, 1, 1), (1, 1, 3), (3, 3, 1), (1, 3, 3)])
@pytest.mark.parametrize("time_varying", [False, True])
def test_rts_pass_follows_its_definition(dtype, batches, time_varying) -> None:
    """The compiled smoother pass on arbitrary positive definite covariances (it never assumes
    they came from a filter), batched or shared, with a constant or time-varying A."""
    gen = torch.Generator().manual_seed(4)
    n, k, T = 3, 5, 9
    bA, bP, bm = batches
    A = 0.5 * torch.randn(bA, T if time_varying else 1, n, n, generator=gen, dtype=torch.float64) / n**0.5
    Pf, Pp = _spd(bP, T, n, gen), _spd(bP, T, n, gen)
    mf, mp = (torch.randn(bm, T, n, k, generator=gen, dtype=torch.float64) for _ in range(2))
    E, Ps, X = native.rts_covariances(A.to(dtype), Pf.to(dtype), Pp.to(dtype), margin=4)
    means = native.smoothed_means(E.to(dtype), mf.to(dtype), mp.to(dtype))
    assert E.dtype == Ps.dtype == X.dtype == torch.float64 and means.dtype == dtype  # covariances: float64 work
    want = _rts_definition(*(v.to(dtype).double() for v in (A, Pf, Pp, mf, mp)))
    tol = 1e-4 if dtype == torch.float32 else 1e-11  # float32: the means' terms cancel to a few digits
    for got, ref in zip((E, Ps, X, means), want):
        assert got.shape == ref.shape
        torch.testing.assert_close(got.double(), ref, rtol=tol, atol=tol)
    Pp[0, 3] = -Pp[0, 3]
    assert native.rts_covariances(A, Pf, Pp, margin=4) is None  # a P_{t+1|t} that is not positive definite


def test_rts_pass_holds_a_steady_state_within_rounding() -> None:
    """Where the filter holds its steady state the smoother holds its own once its covariances
    are calm (no O(n^3) work per step there), and the held values are the stepwise recursion's
    to rounding."""
    p = _model(torch.float64)
    x = torch.randn(2, 3000, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    f = kalman_filter(p, x)
    Pf, Pp = f.covs[:1], f.pred_covs[:1]
    assert torch.equal(Pf[:, 1000], Pf[:, 2000])  # the filter is held there
    _, Ps, X = native.rts_covariances(p.A[None, None], Pf, Pp, margin=4)
    assert torch.equal(Ps[:, 100], Ps[:, 2000]) and torch.equal(X[:, 100], X[:, 2000])

    def changes(P: torch.Tensor) -> int:  # steps whose value differs from the next one's
        return int((P[0, 1:] != P[0, :-1]).flatten(1).any(1).sum())

    # the stepwise recursion, from a copy that defeats the hold: a random half of its filtered
    # covariances are a unit of rounding off, so the steps no longer repeat exactly
    Pf_ = Pf.clone()
    off = torch.randint(2, (3000,), generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    Pf_[..., 0, 0] *= 1 + torch.finfo(torch.float64).eps * off
    _, stepwise, cross = native.rts_covariances(p.A[None, None], Pf_, Pp, margin=4)
    assert changes(Ps) < 100 < 1000 < changes(stepwise)
    torch.testing.assert_close(Ps, stepwise, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(X, cross, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("mask", [False, True])
def test_fisher_terms_match_the_batched_products(mask: bool) -> None:
    """The compiled gradient terms against likelihood.covariance_terms' batched PyTorch products,
    on a sequence long enough to reach the steady state, where the loop copies repeated steps
    instead of computing them (and, with a mask, per sequence)."""
    params = _model(torch.float64)
    x = torch.randn(2, 600, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    observed = None
    if mask:
        observed = torch.rand(2, 600, generator=torch.Generator().manual_seed(9)) > 0.1
    prep = prepare(params, x, observed)
    _, gains, _ = run_filter(prep, "sequential")
    V = native.rts_covariances(prep.A, gains.covs, gains.pred_covs, margin=4)[1]
    compiled = covariance_terms(prep, gains, V, "sequential", {"A", "C", "Q", "R"})
    # the loop itself, so that a silent fallback to the products could not pass for it
    C, _ = prep.emission()
    direct = native.fisher_terms(prep.A, C, gains.K, gains.chols, gains.pred_covs, V)
    assert direct is not None
    assert mask or gains.steady_from is not None
    if not mask:
        assert torch.equal(direct[0][:, 300], direct[0][:, 500])  # copied, not recomputed
    with native.disabled():
        batched = covariance_terms(prep, gains, V, "sequential", {"A", "C", "Q", "R"})
    for a, d, b in zip(compiled, direct, batched):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)
        torch.testing.assert_close(d, b, rtol=1e-11, atol=1e-11)


def _smoothed(params: LGSSMParams, x: torch.Tensor) -> list[torch.Tensor]:
    s = kalman_smoother(params, x)
    return [s.means, s.covs, s.cross_covs]


def _gradients(params: LGSSMParams, x: torch.Tensor) -> list[torch.Tensor]:
    leaves = [p.clone().requires_grad_(True) for p in (params.A, params.C, params.Q, params.R)]
    ll = log_likelihood(params._replace(A=leaves[0], C=leaves[1], Q=leaves[2], R=leaves[3]), x)
    return list(torch.autograd.grad(ll.sum(), leaves))


@pytest.mark.parametrize("loop, outputs", [("rts_covariances", _smoothed), ("fisher_terms", _gradients)])
def test_a_declined_covariance_loop_falls_back_to_pytorch(loop, outputs, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a compiled covariance loop declines (a predicted covariance off the cone after
    rounding to float32), the PyTorch code serves, with the same results."""
    params = _model(torch.float64)
    x = torch.randn(2, 20, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    compiled = outputs(params, x)
    declined = []
    monkeypatch.setattr(native, loop, lambda *args: declined.append(loop))
    fallback = outputs(params, x)
    assert declined  # the patched loop was asked, so the PyTorch code gave `fallback`
    for a, b in zip(fallback, compiled):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)

"""The Kalman core against a dense joint Gaussian over all states and observations."""

from __future__ import annotations

import itertools

import pytest
import torch

from seqlvm.kalman import (
    LGSSMParams,
    forecast,
    kalman_filter,
    kalman_smoother,
    sample_posterior,
    sample_prior,
)

from .dense import dense_moments

DT = torch.float64
METHODS = ["sequential", "parallel"]


def spd(*shape: int, n: int, gen: torch.Generator) -> torch.Tensor:
    X = torch.randn(*shape, n, n, dtype=DT, generator=gen)
    return X @ X.transpose(-1, -2) / n + 0.3 * torch.eye(n, dtype=DT)


def make_params(layout: str, Bt: int, T: int, n: int, m: int, k: int, seed: int = 0) -> LGSSMParams:
    """Random parameters, shared / batched / time-varying (mixed across parameters)."""
    g = torch.Generator().manual_seed(seed)
    lead = {"shared": (), "batched": (Bt,), "time": (Bt, T), "broadcast": (1, T)}[layout]
    A = 0.6 * torch.randn(*lead, n, n, dtype=DT, generator=g)
    C = torch.randn(*lead, m, n, dtype=DT, generator=g)
    Q = spd(*lead, n=n, gen=g)
    R = spd(*lead, n=m, gen=g)
    B = torch.randn(*lead, n, k, dtype=DT, generator=g) if k else None
    m0 = torch.randn(*((Bt,) if layout == "batched" else ()), n, dtype=DT, generator=g)
    P0 = spd(*((Bt,) if layout == "batched" else ()), n=n, gen=g)
    return LGSSMParams(A, C, Q, R, m0, P0, B)


def make_mixed(layouts: dict[str, str], Bt: int, T: int, n: int, m: int, k: int) -> LGSSMParams:
    """Shared parameters, except those named in ``layouts``, which take the given layout."""
    own = {name: getattr(make_params(layout, Bt, T, n, m, k), name) for name, layout in layouts.items()}
    return make_params("shared", Bt, T, n, m, k)._replace(**own)


def make_mask(kind: str, Bt: int, T: int, m: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "none":
        return torch.ones(Bt, T, m, dtype=torch.bool)
    if kind == "steps":
        steps = torch.rand(Bt, T, generator=g) > 0.4
        steps[0, 1] = False  # at least one all-missing step
        return steps[..., None].expand(Bt, T, m)
    entries = torch.rand(Bt, T, m, generator=g) > 0.35
    entries[0, 2] = False
    entries[-1, 0] = True
    return entries


CASES = list(itertools.product(["shared", "batched", "time", "broadcast"], ["none", "steps", "entries"], [0, 2]))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("layout,mask_kind,k", CASES)
def test_filter_and_smoother_match_dense_gaussian(layout: str, mask_kind: str, k: int, method: str) -> None:
    Bt, T, n, m = 3, 5, 3, 2
    params = make_params(layout, Bt, T, n, m, k)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(Bt, T, m, dtype=DT, generator=g)
    u = torch.randn(Bt, T, k, dtype=DT, generator=g) if k else None
    observed = make_mask(mask_kind, Bt, T, m)
    dense = dense_moments(params, x, observed, u)

    # Missing entries may be marked by NaN alone, or by a mask over garbage values; neither the
    # NaNs nor the garbage may leak into any output.
    if mask_kind == "entries":
        x_in, mask = torch.where(observed, x, torch.full_like(x, float("nan"))), None
    elif mask_kind == "steps":
        x_in, mask = torch.where(observed, x, torch.full_like(x, 1e6)), observed[..., 0]
    else:
        x_in, mask = x, None
    sm = kalman_smoother(params, x_in, mask=mask, u=u, method=method)
    f = sm.filtered
    tol = dict(atol=1e-9, rtol=1e-9)
    for name in ("means", "covs", "pred_means", "pred_covs", "log_likelihood", "step_log_likelihood"):
        torch.testing.assert_close(getattr(f, name), getattr(dense, name), **tol, msg=name)
    torch.testing.assert_close(sm.means, dense.smooth_means, **tol)
    torch.testing.assert_close(sm.covs, dense.smooth_covs, **tol)
    torch.testing.assert_close(sm.cross_covs, dense.cross_covs, **tol)
    assert sm.cross_covs.shape == (Bt, T - 1, n, n)
    if mask_kind != "none":
        # An all-missing step contributes exactly nothing.
        assert f.step_log_likelihood[0, 1 if mask_kind == "steps" else 2].item() == 0.0
    # The standalone filter gives the smoother's filtered pass.
    f2 = kalman_filter(params, x_in, mask=mask, u=u, method=method)
    torch.testing.assert_close(f2.log_likelihood, f.log_likelihood, atol=0, rtol=0)


# Layouts of (A, C, Q, R, P0) mixed within one model: the batch of the covariance work is then
# that of the batched or time-varying ones only.
MIXED = [
    ("batched", "shared", "shared", "shared", "shared"),
    ("batched", "shared", "shared", "shared", "batched"),
    ("time", "shared", "shared", "shared", "shared"),
    ("shared", "shared", "time", "shared", "shared"),
    ("broadcast", "shared", "batched", "shared", "shared"),
    ("time", "batched", "broadcast", "shared", "batched"),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("layouts", MIXED)
def test_mixed_parameter_layouts_match_dense_gaussian(
    layouts: tuple[str, ...], masked: bool, method: str
) -> None:
    Bt, T, n, m = 3, 5, 3, 2
    params = make_mixed(dict(zip(("A", "C", "Q", "R", "P0"), layouts)), Bt, T, n, m, 0)
    x = torch.randn(Bt, T, m, dtype=DT, generator=torch.Generator().manual_seed(7))
    observed = make_mask("entries" if masked else "none", Bt, T, m)
    dense = dense_moments(params, x, observed, None)
    sm = kalman_smoother(params, torch.where(observed, x, torch.full_like(x, float("nan"))), method=method)
    tol = dict(atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(sm.filtered.log_likelihood, dense.log_likelihood, **tol)
    torch.testing.assert_close(sm.filtered.covs, dense.covs, **tol)
    torch.testing.assert_close(sm.means, dense.smooth_means, **tol)
    torch.testing.assert_close(sm.covs, dense.smooth_covs, **tol)
    torch.testing.assert_close(sm.cross_covs, dense.cross_covs, **tol)


@pytest.mark.parametrize("method", METHODS)
def test_step_zero_transition_entries_are_never_read(method: str) -> None:
    """A[:, 0], B[:, 0], Q[:, 0] and u[:, 0] lead into nothing (z_0 is the prior): NaN there changes
    no output, and no gradient, of the filter, the smoother, the Fisher gradient or the samplers."""
    from seqlvm.kalman import log_likelihood

    Bt, T, n, m, k = 2, 5, 3, 2, 2
    params = make_params("time", Bt, T, n, m, k)
    g = torch.Generator().manual_seed(3)
    x, u = torch.randn(Bt, T, m, dtype=DT, generator=g), torch.randn(Bt, T, k, dtype=DT, generator=g)

    def poisoned(v: torch.Tensor) -> torch.Tensor:
        v = v.clone()
        v[:, 0] = float("nan")
        return v.requires_grad_(True)

    A, Q, B, u_nan = (poisoned(v) for v in (params.A, params.Q, params.B, u))
    C = params.C.clone().requires_grad_(True)
    bad = params._replace(A=A, Q=Q, B=B, C=C)
    ref = kalman_smoother(params, x, u=u, method=method)
    sm = kalman_smoother(bad, x, u=u_nan, method=method)
    for name in ("means", "covs", "cross_covs"):
        torch.testing.assert_close(getattr(sm, name), getattr(ref, name), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(sm.filtered.log_likelihood, ref.filtered.log_likelihood, atol=1e-12, rtol=1e-12)
    leaves = (A, Q, B, C, u_nan)
    outputs = {
        "smoother": sm.filtered.log_likelihood.sum() + sm.means.sum() + sm.covs.sum(),
        "fisher": log_likelihood(bad, x, u=u_nan, method=method).sum(),
        "prior": sample_prior(bad, T, Bt, u=u_nan, generator=torch.Generator().manual_seed(0)).states.sum(),
        "posterior": sample_posterior(bad, x, None, 3, torch.Generator().manual_seed(0), u=u_nan, method=method)
        .samples.sum(),
    }
    for name, out in outputs.items():
        grads = torch.autograd.grad(out, leaves, allow_unused=True)
        for leaf, grad in zip("A Q B C u".split(), grads):
            assert grad is None or torch.isfinite(grad).all(), f"{name}: NaN in the gradient of {leaf}"


@pytest.mark.parametrize("method", METHODS)
def test_prior_moments_at_step_zero_and_single_step(method: str) -> None:
    params = make_params("shared", 2, 1, 3, 2, 0)
    x = torch.randn(2, 1, 2, dtype=DT)
    sm = kalman_smoother(params, x, method=method)
    torch.testing.assert_close(sm.filtered.pred_means, params.m0.expand(2, 1, 3))
    torch.testing.assert_close(sm.filtered.pred_covs, params.P0.expand(2, 1, 3, 3))
    torch.testing.assert_close(sm.means, sm.filtered.means)
    assert sm.cross_covs.shape == (2, 0, 3, 3)


@pytest.mark.parametrize("method", METHODS)
def test_missing_tail_smooths_to_open_loop_prediction(method: str) -> None:
    Bt, T, n, m, t0 = 2, 8, 3, 2, 3
    params = make_params("shared", Bt, T, n, m, 0)
    x = torch.randn(Bt, T, m, dtype=DT)
    mask = torch.zeros(Bt, T, dtype=torch.bool)
    mask[:, : t0 + 1] = True
    sm = kalman_smoother(params, x, mask=mask, method=method)
    mean = sm.means[:, t0]
    for t in range(t0 + 1, T):
        mean = mean @ params.A.T
        torch.testing.assert_close(sm.means[:, t], mean, atol=1e-10, rtol=1e-10)
    assert torch.all(sm.filtered.step_log_likelihood[:, t0 + 1 :] == 0)


def test_long_sequence_sequential_equals_parallel_and_uses_steady_state() -> None:
    from seqlvm.kalman.filter import run_filter
    from seqlvm.kalman.params import prepare

    params = make_params("shared", 4, 400, 4, 2, 2, seed=3)
    params = params._replace(A=params.A / torch.linalg.matrix_norm(params.A, ord=2) * 0.95)
    g = torch.Generator().manual_seed(0)
    u = torch.randn(4, 400, 2, dtype=DT, generator=g)
    _, x = sample_prior(params, 400, 4, u=u, generator=g)
    steady_from = run_filter(prepare(params, x, None, u), "sequential")[1].steady_from
    assert steady_from is not None and steady_from < 200
    s = kalman_smoother(params, x, u=u)
    p = kalman_smoother(params, x, u=u, method="parallel")
    for a, b in [(s.means, p.means), (s.covs, p.covs), (s.cross_covs, p.cross_covs)]:
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(s.filtered.log_likelihood, p.filtered.log_likelihood, atol=1e-8, rtol=1e-10)
    torch.testing.assert_close(s.filtered.means, p.filtered.means, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("method", METHODS)
def test_steady_state_shortcuts_match_the_plain_time_varying_recursion(method: str) -> None:
    """A time-invariant model takes the steady-state paths (covariances by doubling, means in
    blocks); the same model spelled out as time-varying takes the plain step-by-step ones."""
    from seqlvm.kalman import log_likelihood
    from seqlvm.kalman.filter import run_filter
    from seqlvm.kalman.params import prepare

    T = 300
    params = make_params("shared", 3, T, 4, 2, 0, seed=4)
    params = params._replace(A=params.A / torch.linalg.matrix_norm(params.A, ord=2) * 0.97)
    _, x = sample_prior(params, T, 3, generator=torch.Generator().manual_seed(1))
    spelled = params._replace(**{k: getattr(params, k).expand(3, T, -1, -1) for k in ("A", "C", "Q", "R")})
    fast, plain = kalman_smoother(params, x, method=method), kalman_smoother(spelled, x, method="sequential")
    for a, b in [(fast.means, plain.means), (fast.covs, plain.covs), (fast.cross_covs, plain.cross_covs),
                 (fast.filtered.means, plain.filtered.means), (fast.filtered.pred_covs, plain.filtered.pred_covs)]:
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(fast.filtered.log_likelihood, plain.filtered.log_likelihood, atol=1e-9, rtol=1e-12)
    assert run_filter(prepare(params, x, None, None), method)[1].steady_from is not None
    leaves = [params.A.clone().requires_grad_(True), params.C.clone().requires_grad_(True)]
    got = torch.autograd.grad(log_likelihood(params._replace(A=leaves[0], C=leaves[1]), x, method=method).sum(), leaves)
    A_t, C_t = (v.expand(3, T, -1, -1) for v in leaves)
    want = torch.autograd.grad(kalman_filter(spelled._replace(A=A_t, C=C_t), x).log_likelihood.sum(), leaves)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("ratio", [1e4, 1e12])
def test_a_small_state_beside_a_large_one_is_not_taken_for_steady(ratio: float, method: str) -> None:
    """Two decoupled states whose variances differ by ``ratio``: the small one still converges
    when the large one has settled. Its steady state must be judged on its own scale (a test
    against the largest entry held it early: 1.7e-5 off the dense Gaussian here at ratio 1e12)."""
    T, dt = 30, torch.float64
    diag = lambda *v: torch.diag(torch.tensor(v, dtype=dt))
    params = LGSSMParams(diag(0.5, 1.0), torch.eye(2, dtype=dt), diag(1.0, 1e-6 / ratio), diag(1.0, 1e-2),
                         torch.zeros(2, dtype=dt), diag(1.0, 1.0 / ratio))
    _, x = sample_prior(params, T, 2, generator=torch.Generator().manual_seed(0))
    dense = dense_moments(params, x, torch.ones_like(x, dtype=torch.bool))
    s = kalman_smoother(params, x, method=method)
    for got, want in [(s.filtered.covs, dense.covs), (s.covs, dense.smooth_covs), (s.cross_covs, dense.cross_covs)]:
        torch.testing.assert_close(got[..., 1, 1], want[..., 1, 1], rtol=1e-12, atol=0.0)
    torch.testing.assert_close(s.filtered.means, dense.means, rtol=1e-12, atol=1e-12 * float(x.abs().max()))
    torch.testing.assert_close(s.filtered.log_likelihood, dense.log_likelihood, rtol=1e-13, atol=0.0)


@pytest.mark.parametrize("method", METHODS)
def test_float32_stays_finite_and_positive_definite_on_long_sequences(method: str) -> None:
    T, n = 5000, 4
    A = torch.eye(n)
    A[0, 2] = A[1, 3] = 0.1
    C = torch.zeros(2, n)
    C[0, 0] = C[1, 1] = 1.0
    params = LGSSMParams(A, C, 1e-3 * torch.eye(n), 1e-6 * torch.eye(2), torch.zeros(n), torch.eye(n))
    _, x = sample_prior(params, T, 2, generator=torch.Generator().manual_seed(0))
    sm = kalman_smoother(params, x, method=method)
    for covs in (sm.filtered.covs, sm.filtered.pred_covs, sm.covs):
        assert torch.isfinite(covs).all()
        assert torch.linalg.eigvalsh(covs[0]).min() > 0
    assert torch.isfinite(sm.means).all() and torch.isfinite(sm.filtered.log_likelihood).all()
    ref = kalman_smoother(params._replace(**{k: v.double() for k, v in params._asdict().items() if v is not None}), x.double())
    torch.testing.assert_close(sm.filtered.log_likelihood.double(), ref.filtered.log_likelihood, rtol=1e-4, atol=0)
    # Means to float32 precision of their scale all along (no drift along the slow modes).
    scale = ref.means.abs().max()
    assert (sm.filtered.means.double() - ref.filtered.means).abs().max() < 1e-5 * scale
    assert (sm.means.double() - ref.means).abs().max() < 1e-5 * scale


def _float32_models() -> dict[str, LGSSMParams]:
    """Two float64 models where float32 steady-state doublings used to lose digits: a random walk
    with two unobserved directions (its covariances grow for ever) and a constant-velocity
    tracker (steady after a few dozen steps)."""
    g = torch.Generator().manual_seed(0)
    eye, zero = torch.eye(4, dtype=DT), torch.zeros(4, dtype=DT)
    C = torch.randn(2, 4, dtype=DT, generator=g)
    walk = LGSSMParams(eye, C, 0.1 * eye, 0.1 * eye[:2, :2], zero, eye)
    A = eye.clone()
    A[0, 2] = A[1, 3] = 0.1
    track = LGSSMParams(A, eye[:2], 0.01 * eye, 0.1 * eye[:2, :2], zero, 10 * eye)
    return {"random walk": walk, "tracker": track}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model", ["random walk", "tracker"])
def test_float32_covariances_are_float64_ones_rounded(model: str, method: str) -> None:
    params = LGSSMParams(*(v.float() for v in _float32_models()[model][:6]))
    _, x = sample_prior(params, 1000, 2, generator=torch.Generator().manual_seed(1))
    ref = kalman_smoother(LGSSMParams(*(v.double() for v in params[:6])), x.double())
    got = kalman_smoother(params, x, method=method)
    # The filter's covariances never touch the data: float64 work, rounded once (the float32
    # doubling was 7e-3 off on the walk and 4e-6 on the tracker).
    assert torch.equal(got.filtered.covs, ref.filtered.covs.float())
    assert torch.equal(got.filtered.pred_covs, ref.filtered.pred_covs.float())

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.double() - b).abs().max() / b.abs().max())

    # The smoothed ones start from float32 filtered covariances, as in the plain float32 loop
    # (1e-5 off on the tracker); before, 7e-3 and 3e-4.
    assert rel(got.covs, ref.covs) < 5e-5
    assert rel(got.cross_covs, ref.cross_covs) < 5e-5


@pytest.mark.parametrize("method", METHODS)
def test_masked_values_get_no_gradient_and_observed_ones_do(method: str) -> None:
    params = make_params("shared", 2, 6, 3, 2, 0)
    x = torch.randn(2, 6, 2, dtype=DT)
    observed = make_mask("entries", 2, 6, 2)
    x = torch.where(observed, x, torch.full_like(x, float("nan"))).requires_grad_(True)
    sm = kalman_smoother(params, x, method=method)
    (sm.filtered.log_likelihood.sum() + sm.means.sum() + sm.covs.sum()).backward()
    assert torch.isfinite(x.grad).all()
    assert torch.all(x.grad[~observed] == 0)
    assert torch.any(x.grad[observed] != 0)


def test_posterior_samples_log_density_and_moments_match_dense_posterior() -> None:
    Bt, T, n, m = 2, 4, 2, 2
    params = make_params("batched", Bt, T, n, m, 0, seed=5)
    x = torch.randn(Bt, T, m, dtype=DT)
    mask = torch.tensor([[1, 0, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    dense = dense_moments(params, x, mask[..., None].expand(Bt, T, m))
    draws = sample_posterior(params, x, mask, num_samples=4000, generator=torch.Generator().manual_seed(0))
    assert draws.samples.shape == (4000, Bt, T, n) and draws.log_prob.shape == (4000, Bt)
    # Exact log-density: the dense joint posterior evaluated at the draws.
    sm = kalman_smoother(params, x, mask)
    for b in range(Bt):
        joint_cov = _dense_joint_posterior_cov(params, x, mask, b)
        mvn = torch.distributions.MultivariateNormal(sm.means[b].reshape(-1), covariance_matrix=joint_cov)
        expect = mvn.log_prob(draws.samples[:50, b].reshape(50, -1))
        torch.testing.assert_close(draws.log_prob[:50, b], expect, atol=1e-8, rtol=1e-8)
    # Monte Carlo moments within 5 standard errors.
    mean = draws.samples.mean(0)
    se = dense.smooth_covs.diagonal(dim1=-2, dim2=-1).sqrt() / 4000**0.5
    assert torch.all((mean - dense.smooth_means).abs() < 5 * se)
    again = sample_posterior(params, x, mask, 4000, torch.Generator().manual_seed(0))  # the positional order
    assert torch.equal(again.samples, draws.samples)


def _dense_joint_posterior_cov(params: LGSSMParams, x: torch.Tensor, mask: torch.Tensor, b: int) -> torch.Tensor:
    """Cov(z_{0:T-1} | x) for sequence b from the smoother's marginals and cross-covariances is not
    enough (it gives only the band), so condition the dense prior instead."""
    T, n = x.shape[1], params.A.shape[-1]
    A, C, Q, R = (p[b] if p.dim() == 3 else p for p in (params.A, params.C, params.Q, params.R))
    P0 = params.P0[b] if params.P0.dim() == 3 else params.P0
    M = torch.zeros(T * n, T * n, dtype=DT)
    for k in range(T):
        Phi = torch.eye(n, dtype=DT)
        for t in range(k, T):
            if t > k:
                Phi = A @ Phi
            M[t * n : (t + 1) * n, k * n : (k + 1) * n] = Phi
    W = torch.block_diag(P0, *[Q] * (T - 1))
    cov_z = M @ W @ M.T
    H = torch.block_diag(*[C] * T)
    cov_x = H @ cov_z @ H.T + torch.block_diag(*[R] * T)
    idx = torch.nonzero(mask[b].repeat_interleave(C.shape[0])).squeeze(-1)
    Szx = (cov_z @ H.T)[:, idx]
    return cov_z - Szx @ torch.linalg.solve(cov_x[idx][:, idx], Szx.T)


@pytest.mark.parametrize("k", [0, 2])
def test_forecast_matches_dense_conditioning_on_the_context(k: int) -> None:
    Bt, T, H, n, m = 2, 4, 3, 3, 2
    params = make_params("time", Bt, T + H, n, m, k, seed=11)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(Bt, T + H, m, dtype=DT, generator=g)
    u = torch.randn(Bt, T + H, k, dtype=DT, generator=g) if k else None
    observed = torch.ones(Bt, T + H, m, dtype=torch.bool)
    observed[:, T:] = False
    dense = dense_moments(params, x, observed, u)
    fc = forecast(params, x[:, :T], H, u[:, T:] if k else None, u=u[:, :T] if k else None)
    torch.testing.assert_close(fc.state_means, dense.means[:, T:], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(fc.state_covs, dense.covs[:, T:], atol=1e-10, rtol=1e-10)
    C, R = params.C[:, T:], params.R[:, T:]
    torch.testing.assert_close(fc.obs_means, (C @ dense.means[:, T:, :, None]).squeeze(-1), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(fc.obs_covs, C @ dense.covs[:, T:] @ C.transpose(-1, -2) + R, atol=1e-10, rtol=1e-10)


def test_prior_samples_are_seeded_and_have_the_model_moments() -> None:
    params = make_params("shared", 1, 3, 2, 2, 0, seed=4)
    a = sample_prior(params, 3, 20000, generator=torch.Generator().manual_seed(0))
    b = sample_prior(params, 3, 20000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.observations, b.observations)
    assert a.states.shape == (20000, 3, 2) and a.observations.shape == (20000, 3, 2)
    # Observations are zero-mean-free only through m0: compare to the dense marginal of x.
    dense = dense_moments(params, torch.zeros(1, 3, 2, dtype=DT), torch.zeros(1, 3, 2, dtype=torch.bool))
    mean_x = (params.C @ dense.means[0, :, :, None]).squeeze(-1)
    cov_x = params.C @ dense.covs[0] @ params.C.T + params.R
    se = cov_x.diagonal(dim1=-2, dim2=-1).sqrt() / 20000**0.5
    assert torch.all((a.observations.mean(0) - mean_x).abs() < 5 * se)

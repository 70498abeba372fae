"""LGSSM: parameters, the model protocol and EM, checked against exact references."""

from __future__ import annotations

import pytest
import torch

from seqlvm.kalman import LGSSMParams, kalman_filter, sample_prior
from seqlvm.models import LGSSM, LGSSMConfig, get_model_class

from ..kalman.dense import dense_joint, dense_x_posterior

DT = torch.float64


def tracking(n_seq: int = 6, T: int = 60, seed: int = 0):
    """Constant-velocity 2-D tracking: true parameters, states and observations."""
    A = torch.eye(4, dtype=DT)
    A[0, 2] = A[1, 3] = 0.1
    C = torch.zeros(2, 4, dtype=DT)
    C[0, 0] = C[1, 1] = 1.0
    true = LGSSMParams(A, C, 0.01 * torch.eye(4, dtype=DT), torch.tensor([[0.2, 0.05], [0.05, 0.1]], dtype=DT),
                       torch.zeros(4, dtype=DT), torch.eye(4, dtype=DT))
    z, x = sample_prior(true, T, n_seq, generator=torch.Generator().manual_seed(seed))
    return true, z, x


def model_from(params: LGSSMParams, **config) -> LGSSM:
    torch.manual_seed(0)
    n, m = params.A.shape[-1], params.C.shape[-2]
    k = 0 if params.B is None else params.B.shape[-1]
    model = LGSSM(LGSSMConfig(state_dim=n, obs_dim=m, control_dim=k, **config)).double()
    for name, value in params._asdict().items():
        if value is not None:
            setattr(model, name, value)
    return model


def test_parameters_read_and_assign_as_plain_tensors() -> None:
    true, _, _ = tracking()
    model = model_from(true)
    for name, value in true._asdict().items():
        if value is not None:
            torch.testing.assert_close(getattr(model, name), value)
    with pytest.raises(ValueError, match=r"Q must have shape \(4, 4\); got \(3, 3\)"):
        model.Q = torch.eye(3, dtype=DT)
    with pytest.raises(ValueError, match=r"R must be symmetric positive definite; got one with smallest eigenvalue -1"):
        model.R = -torch.eye(2, dtype=DT)
    with pytest.raises(ValueError, match=r"LGSSM: Q must be symmetric \(a covariance\); got one with \|Q - Q\^T\| up to 0.8"):
        model.Q = torch.eye(4, dtype=DT) + 0.8 * torch.eye(4, dtype=DT).roll(1, 1).triu(1)
    with pytest.raises(ValueError, match=r"C must have shape \(2, 4\); got list"):
        model.C = [[1.0]]
    # Any value of the raw parameters is a valid positive-definite covariance.
    with torch.no_grad():
        model._Q.normal_()
    assert torch.linalg.eigvalsh(model.Q).min() > 0
    assert get_model_class("LGSSM") is LGSSM
    rebuilt = LGSSM.from_config(model.config_dict())
    assert rebuilt.config == model.config


def test_log_likelihood_and_elbo_are_the_exact_kalman_ones() -> None:
    true, _, x = tracking()
    model = model_from(true)
    ll = model.log_likelihood(x)
    torch.testing.assert_close(ll, kalman_filter(true, x).log_likelihood)
    elbo = model.elbo(x)
    torch.testing.assert_close(elbo.loss, -ll.mean())
    torch.testing.assert_close(elbo.terms["log_likelihood"], ll.mean())
    torch.testing.assert_close(elbo.terms["log_likelihood_per_step"], (ll / x.shape[1]).mean())


@pytest.mark.parametrize("method", ["smooth", "filter"])
def test_impute_gives_the_exact_conditional_of_missing_entries(method: str) -> None:
    true, _, x = tracking(n_seq=2, T=6)
    model = model_from(true)  # R is not diagonal: missing entries borrow from observed noise
    observed = torch.ones(2, 6, 2, dtype=torch.bool)
    observed[0, 2] = False
    observed[0, 3, 1] = False
    observed[1, 4:, 0] = False
    imp = model.impute(x, observed, method=method)
    torch.testing.assert_close(imp.mean[observed], x[observed], atol=0, rtol=0)
    assert torch.all(imp.std[observed] == 0)
    if method == "smooth":
        mean, std = dense_x_posterior(true, x, observed)
    else:
        # Causal: condition each step on the observed entries up to and including it.
        mean, std = torch.empty_like(x), torch.empty_like(x)
        for t in range(6):
            obs_t = observed.clone()
            obs_t[:, t + 1 :] = False
            mu, sd = dense_x_posterior(true, x, obs_t)
            mean[:, t], std[:, t] = mu[:, t], sd[:, t]
    torch.testing.assert_close(imp.mean, mean, atol=1e-10, rtol=1e-10)
    # (The dense oracle's std of an observed entry is sqrt(rounding error), not 0: compare the rest.)
    torch.testing.assert_close(imp.std[~observed], std[~observed], atol=1e-10, rtol=1e-10)
    # The observed entries' std of exactly 0 must not turn the parameters' gradients into NaN.
    imp = model.impute(x, observed, method=method)
    grads = torch.autograd.grad(imp.std.sum() + imp.mean.sum(), [model._A, model._C, model._Q, model._R])
    assert all(torch.isfinite(g).all() for g in grads)


def test_forecast_moments_quantiles_and_sample_paths() -> None:
    true, _, x = tracking(n_seq=3, T=40)
    model = model_from(true)
    fc = model.forecast(x[:, :30], 10, num_samples=4000, generator=torch.Generator().manual_seed(0))
    assert fc.mean.shape == (3, 10, 2) and fc.std.shape == (3, 10, 2) and fc.samples.shape == (4000, 3, 10, 2)
    se = fc.std / 4000**0.5
    assert torch.all((fc.samples.mean(0) - fc.mean).abs() < 5 * se)
    assert torch.all((fc.samples.std(0) / fc.std - 1).abs() < 0.08)
    exact = model.forecast(x[:, :30], 10)
    torch.testing.assert_close(exact.quantile(0.5), exact.mean)
    assert torch.all(exact.quantile(0.9) > exact.mean)
    again = model.forecast(x[:, :30], 10, num_samples=4000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.samples, fc.samples)
    # Quantiles of any shape from both paths, each against its own computation.
    q = torch.tensor([[0.1, 0.5], [0.9, 0.25]], dtype=fc.mean.dtype)
    from_samples, from_gaussian = fc.quantile(q), exact.quantile(q)
    assert from_samples.shape == from_gaussian.shape == (2, 2, 3, 10, 2)
    torch.testing.assert_close(from_samples[1, 0], torch.quantile(fc.samples, 0.9, dim=0))
    torch.testing.assert_close(from_gaussian[1, 0], exact.quantile(0.9))
    for bad in (float("nan"), 0.0, torch.tensor([0.5, 1.0])):
        with pytest.raises(ValueError, match=r"quantile: q must lie in \(0, 1\)"):
            fc.quantile(bad)


def test_sample_is_seeded() -> None:
    model = model_from(tracking()[0])
    a = model.sample(20, 3, generator=torch.Generator().manual_seed(1))
    b = model.sample(20, 3, generator=torch.Generator().manual_seed(1))
    assert a.states.shape == (3, 20, 4) and a.observations.shape == (3, 20, 2)
    assert torch.equal(a.observations, b.observations)


def _missing(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    observed = torch.rand(x.shape, generator=g) > p
    observed[:, 0] = True
    return observed


@pytest.mark.parametrize("with_controls", [False, True])
def test_em_log_likelihood_never_decreases(with_controls: bool) -> None:
    true, _, x = tracking(n_seq=4, T=50)
    observed = _missing(x, 0.25, seed=3)
    x = torch.where(observed, x, torch.full_like(x, float("nan")))
    torch.manual_seed(0)
    k = 1 if with_controls else 0
    model = LGSSM(LGSSMConfig(4, 2, control_dim=k)).double()
    model.R = torch.tensor([[1.0, 0.4], [0.4, 1.0]], dtype=DT)
    u = torch.randn(4, 50, 1, dtype=DT) if with_controls else None
    learn = ("A", "C", "Q", "R", "m0", "P0") + (("B",) if with_controls else ())
    lls = model.fit_em(x, None, 25, learn, u=u)  # the positional order of the issue
    gains = lls[1:] - lls[:-1]
    assert torch.all(gains >= -1e-8 * lls[1:].abs())
    assert lls[-1] > lls[0] + 50
    torch.testing.assert_close(lls[-1], model.log_likelihood(x, u=u).sum())


def well_determined(n_seq: int, T: int, with_controls: bool, seed: int = 1):
    """A small model whose states the data pin down well (m > n, small R), so EM converges fast."""
    g = torch.Generator().manual_seed(seed)
    A = torch.tensor([[0.8, 0.3], [-0.2, 0.7]], dtype=DT)
    C = torch.tensor([[1.0, 0.0], [0.3, 1.0], [0.5, -0.5]], dtype=DT)
    R = torch.tensor([[0.05, 0.01, 0.0], [0.01, 0.04, 0.0], [0.0, 0.0, 0.06]], dtype=DT)
    B = torch.tensor([[0.5], [-0.3]], dtype=DT) if with_controls else None
    true = LGSSMParams(A, C, 0.3 * torch.eye(2, dtype=DT), R, torch.tensor([1.0, -1.0], dtype=DT), 0.5 * torch.eye(2, dtype=DT), B)
    u = torch.randn(n_seq, T, 1, dtype=DT, generator=g) if with_controls else None
    _, x = sample_prior(true, T, n_seq, u=u, generator=g)
    return true, x, u


def dense_q_function(params: LGSSMParams, post_mean: torch.Tensor, post_cov: torch.Tensor, x, u) -> torch.Tensor:
    """EM's Q(theta) = E[log p(z, x; theta)] under a fixed Gaussian posterior over y = (z, x).

    The complete-data density is the dense joint Gaussian N(y; mu(theta), Sigma(theta)), so
    Q = log N(y_hat; mu, Sigma) - tr(Sigma^-1 V) / 2, summed over sequences.
    """
    total = 0.0
    for b, j in enumerate(dense_joint(params, x, u)):
        mu = torch.cat([j.mean_z, j.mean_x])
        Sigma = torch.cat([torch.cat([j.cov_z, j.cov_zx], 1), torch.cat([j.cov_zx.T, j.cov_x], 1)], 0)
        mvn = torch.distributions.MultivariateNormal(mu, covariance_matrix=Sigma)
        total = total + mvn.log_prob(post_mean[b]) - 0.5 * torch.trace(torch.linalg.solve(Sigma, post_cov[b]))
    return total


def dense_posterior(params: LGSSMParams, x, observed, u):
    """Mean and covariance of y = (z, x) given the observed entries of x, per sequence."""
    means, covs = [], []
    for b, j in enumerate(dense_joint(params, x, u)):
        mu = torch.cat([j.mean_z, j.mean_x])
        Sigma = torch.cat([torch.cat([j.cov_z, j.cov_zx], 1), torch.cat([j.cov_zx.T, j.cov_x], 1)], 0)
        nz = j.mean_z.numel()
        idx = nz + torch.nonzero(observed[b].reshape(-1)).squeeze(-1)
        gain = Sigma[:, idx] @ torch.linalg.inv(Sigma[idx][:, idx])
        means.append(mu + gain @ (x[b].reshape(-1)[idx - nz] - mu[idx]))
        covs.append(Sigma - gain @ Sigma[idx])
    return torch.stack(means), torch.stack(covs)


@pytest.mark.parametrize(
    "learn,masked,with_controls",
    [
        (("A", "Q"), False, False),
        (("C", "R"), True, False),
        (("A", "B", "Q"), True, True),
        (("B",), False, True),
        (("A", "C", "Q", "R", "m0", "P0"), True, False),
    ],
)
def test_em_step_maximises_the_dense_q_function(learn, masked, with_controls) -> None:
    """One M-step must land where the gradient of EM's Q-function, computed independently from
    the dense joint Gaussian of (z, x), vanishes for every learned parameter."""
    true, x, u = well_determined(3, 5, with_controls)
    observed = _missing(x, 0.3, seed=2) if masked else torch.ones_like(x, dtype=torch.bool)
    start = true._replace(
        A=true.A * 0.8, Q=true.Q * 2, C=true.C + 0.2, R=true.R * 2, m0=true.m0 + 0.5, P0=true.P0 * 2,
        B=None if true.B is None else true.B * 0.5,
    )
    post_mean, post_cov = dense_posterior(start, x, observed, u)
    model = model_from(start)
    model.fit_em(torch.where(observed, x, torch.full_like(x, float("nan"))), u=u, num_iters=1, learn=learn)
    names = [k for k in ("A", "C", "Q", "R", "m0", "P0", "B") if getattr(model, k) is not None]
    leaves = {k: getattr(model, k).detach().clone().requires_grad_(True) for k in names}
    q_new = dense_q_function(LGSSMParams(**leaves), post_mean, post_cov, x, u)
    grads = torch.autograd.grad(q_new, [leaves[k] for k in learn])
    for name, g in zip(learn, grads):
        if name in ("Q", "R", "P0"):  # symmetric: only the symmetric part of the gradient counts
            g = 0.5 * (g + g.T)
        assert g.abs().max() < 1e-8, f"dQ/d{name} = {g}"
    assert q_new >= dense_q_function(start, post_mean, post_cov, x, u)
    for name in set(names) - set(learn):  # what was not learned did not move
        torch.testing.assert_close(getattr(model, name), getattr(start, name))


def test_gradient_training_raises_the_likelihood() -> None:
    true, _, x = tracking(n_seq=8, T=40)
    torch.manual_seed(0)
    model = LGSSM(LGSSMConfig(4, 2)).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    first = model.elbo(x).loss.item()
    for _ in range(60):
        opt.zero_grad()
        loss = model.elbo(x).loss
        loss.backward()
        opt.step()
    # At least halfway from the start to the true parameters' value.
    target = -kalman_filter(true, x).log_likelihood.mean().item()
    assert loss.item() < target + 0.5 * (first - target)


def test_frozen_parameters_do_not_train() -> None:
    model = LGSSM(LGSSMConfig(3, 2, trainable=["A", "Q"]))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"_A", "_Q"}


def test_bad_inputs_name_the_argument() -> None:
    model = LGSSM(LGSSMConfig(3, 2, control_dim=1))
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, 2\); got \(4, 5, 3\)"):
        model.log_likelihood(torch.zeros(4, 5, 3))
    with pytest.raises(ValueError, match=r"u of shape \(B, T, 1\) is required"):
        model.elbo(torch.zeros(4, 5, 2))
    with pytest.raises(ValueError, match="learn has unknown names"):
        model.fit_em(torch.zeros(4, 5, 2), u=torch.zeros(4, 5, 1), learn=("A", "D"))
    only_first = torch.zeros(4, 5, 1)
    only_first[:, 0] = 1.0  # u_0 drives nothing
    for u in (torch.zeros(4, 5, 1), only_first):
        with pytest.raises(ValueError, match=r"learn contains 'B', but the controls u\[:, 1:\] span 0 of their 1 directions"):
            model.fit_em(torch.randn(4, 5, 2), u=u, learn=("A", "B", "Q"))
    with pytest.raises(ValueError, match=r"LGSSM.forecast: u_future must be None or a tensor.*got 5.*num_samples="):
        model.forecast(torch.zeros(4, 5, 2), 3, 5)
    for bad in (-1, 2.0, True):
        with pytest.raises(ValueError, match=rf"LGSSM.forecast: num_samples must be an int >= 0; got {bad!r}"):
            model.forecast(torch.zeros(4, 5, 2), 3, torch.zeros(4, 3, 1), num_samples=bad, u=torch.zeros(4, 5, 1))
    with pytest.raises(ValueError, match=r"u must have shape \(4, 5, 1\); got list"):
        model.log_likelihood(torch.zeros(4, 5, 2), u=[[0.0]])
    u = torch.zeros(4, 5, 1)
    calls = (lambda m: model.fit_em(torch.zeros(4, 5, 2), m, 1, u=u), lambda m: model.impute(torch.zeros(4, 5, 2), m, u))
    for call in calls:
        with pytest.raises(ValueError, match=r"mask must have shape \(4, 5\) or \(4, 5, 2\); got \(4, 4\)"):
            call(torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="state_dim must be an int >= 1"):
        LGSSMConfig(state_dim=0)
    with pytest.raises(ValueError, match="trainable has unknown names"):
        LGSSMConfig(trainable=["Z"])
    with pytest.raises(ValueError, match="unknown key"):
        LGSSM.from_config({"state_dim": 2, "bogus": 1})
    with pytest.raises(ValueError, match="method must be"):
        model.impute(torch.zeros(1, 5, 2), u=torch.zeros(1, 5, 1), method="both")

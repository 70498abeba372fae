"""The simulator interface (rollout_start / rollout_step) of LGSSM, KVAE and SRNN, against exact oracles:
the Kalman forecast's moments, Gaussian densities from torch.distributions, the KVAE's own forecast
sample paths, the SRNN's generative step re-done by hand, and errors for bad input."""

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from seqlvm.kalman import forecast as kalman_forecast
from seqlvm.models import LGSSM, SRNN, LGSSMConfig, SRNNConfig
from seqlvm.models.kvae import KVAECarry
from tests.models.test_kvae import moving_dots, tiny


def controlled_lgssm() -> LGSSM:
    torch.manual_seed(3)
    model = LGSSM(LGSSMConfig(state_dim=2, obs_dim=2, control_dim=1)).double()
    model.A = torch.tensor([[0.9, 0.2], [-0.1, 0.8]], dtype=torch.float64)
    model.B = torch.tensor([[0.5], [-1.0]], dtype=torch.float64)
    model.Q = torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=torch.float64)
    model.R = 0.5 * torch.eye(2, dtype=torch.float64)
    return model


def test_lgssm_particles_match_the_exact_forecast_moments():
    """After h = 1..3 steps the particles' latents and observations (C z) have the mean and covariance
    of the exact forecast (obs: Cov[C z] = Cov[x] - R), within Monte-Carlo error, per sequence."""
    model = controlled_lgssm()
    g = torch.Generator().manual_seed(0)
    B, T, H, P = 2, 6, 3, 40000
    x = torch.randn(B, T, 2, generator=g, dtype=torch.float64)
    u = torch.randn(B, T, 1, generator=g, dtype=torch.float64)
    u_future = torch.tensor([[[1.0], [-2.0], [0.5]], [[0.0], [3.0], [-1.0]]], dtype=torch.float64)
    fc = kalman_forecast(model.params(), x, H, u=u, u_future=u_future)
    with torch.no_grad():
        carry = model.rollout_start(x, u, num_particles=P, generator=g)
        for h in range(H):
            carry, step = model.rollout_step(carry, u_future[:, h].repeat(P, 1), g)
            for values, mean, cov in (
                (step.latent, fc.state_means[:, h], fc.state_covs[:, h]),
                (step.observation, fc.obs_means[:, h], fc.obs_covs[:, h] - model.R),
            ):
                draws = values.view(P, B, 2)  # rows p*B + b
                se = (cov.diagonal(dim1=-2, dim2=-1) / P).sqrt()
                assert bool(((draws.mean(0) - mean).abs() < 5 * se).all()), (h, draws.mean(0), mean)
                centred = draws - draws.mean(0)
                sample_cov = torch.einsum("pbi,pbj->bij", centred, centred) / (P - 1)
                torch.testing.assert_close(sample_cov, cov, rtol=0.05, atol=0.05 * float(cov.abs().max()))


def test_lgssm_step_log_prob_is_the_transition_density():
    model = controlled_lgssm()
    g = torch.Generator().manual_seed(1)
    z = torch.randn(5, 2, generator=g, dtype=torch.float64)
    u = torch.randn(5, 1, generator=g, dtype=torch.float64)
    with torch.no_grad():
        (z_new,), step = model.rollout_step((z,), u, g)
        oracle = MultivariateNormal(z @ model.A.T + u @ model.B.T, model.Q).log_prob(z_new)
    torch.testing.assert_close(step.log_prob, oracle)
    torch.testing.assert_close(step.latent, z_new)
    torch.testing.assert_close(step.observation, z_new @ model.C.T)


def test_kvae_particles_are_the_forecast_sample_paths():
    """rollout_start + rollout_step with a generator seeded like forecast's draws the same paths."""
    model = tiny(control_dim=2).eval()
    x = moving_dots(2, 5)
    u = torch.randn(2, 5, 2)
    u_future = torch.randn(2, 4, 2)
    S = 3
    with torch.no_grad():
        fc = model.forecast(x, 4, u_future=u_future, num_samples=S, generator=torch.Generator().manual_seed(7), u=u)
        g = torch.Generator().manual_seed(7)
        carry = model.rollout_start(x, u, num_particles=S, generator=g)
        frames = []
        for h in range(4):
            carry, step = model.rollout_step(carry, u_future[:, h].repeat(S, 1), g)
            frames.append(step.observation)
    torch.testing.assert_close(torch.stack(frames, 1).view(S, 2, 4, 1, 8, 8), fc.samples)
    assert step.latent.shape == (S * 2, 4 + 2) and step.log_prob.shape == (S * 2,)


def test_kvae_step_log_prob_is_the_density_of_z_and_a():
    """With K = 1 the step is a fixed LGSSM step: z' ~ N(A z + B u, Q), a' ~ N(C z', R)."""
    model = tiny(control_dim=2, num_mixtures=1).double().eval()
    g = torch.Generator().manual_seed(2)
    z = torch.randn(4, 4, generator=g, dtype=torch.float64)
    carry = KVAECarry(z, torch.zeros(4, 2, dtype=torch.float64), None)
    u = torch.randn(4, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        new, step = model.rollout_step(carry, u, g)
        A, B, C = model.A_k[0], model.B_k[0], model.C_k[0]
        oracle = (MultivariateNormal(z @ A.T + u @ B.T, model.Q).log_prob(new.z)
                  + MultivariateNormal(new.z @ C.T, model.R).log_prob(new.a))
        frames = model.frame_means(new.a)
    torch.testing.assert_close(step.log_prob, oracle)
    torch.testing.assert_close(step.latent, torch.cat([new.z, new.a], -1))
    torch.testing.assert_close(step.observation, frames)


def test_rollout_is_deterministic_for_a_seeded_generator():
    model = tiny(control_dim=2).eval()
    x = moving_dots(1, 4)
    u = torch.zeros(1, 4, 2)
    runs = []
    for _ in range(2):
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            carry = model.rollout_start(x, u, num_particles=2, generator=g)
            _, step = model.rollout_step(carry, torch.ones(2, 2), g)
        runs.append(step)
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("make", ["lgssm", "kvae"])
def test_bad_rollout_inputs_raise(make):
    if make == "lgssm":
        model, x, u = controlled_lgssm(), torch.zeros(1, 3, 2, dtype=torch.float64), torch.zeros(1, 3, 1, dtype=torch.float64)
    else:
        model, x, u = tiny(control_dim=1).eval(), moving_dots(1, 3), torch.zeros(1, 3, 1)
    name = type(model).__name__
    with pytest.raises(ValueError, match=f"{name}.rollout_start: num_particles must be an int >= 1; got 0"):
        model.rollout_start(x, u, num_particles=0)
    with pytest.raises(ValueError, match=f"{name}.rollout_start: the model has control_dim = 1"):
        model.rollout_start(x)
    with torch.no_grad():
        carry = model.rollout_start(x, u, num_particles=2)
        with pytest.raises(ValueError, match=r"u must have shape \(N, A\) = \(2, 1\), one action per particle; got \(1, 1\)"):
            model.rollout_step(carry, torch.zeros(1, 1))
        with pytest.raises(ValueError, match="u must have shape"):
            model.rollout_step(carry, None)
        with pytest.raises(ValueError, match=f"{name}.rollout_step: carry must be"):
            model.rollout_step((torch.zeros(2, 7),), torch.zeros(2, 1))


def test_models_without_controls_refuse_an_action():
    model = tiny().eval()
    with torch.no_grad():
        carry = model.rollout_start(moving_dots(1, 3))
        with pytest.raises(ValueError, match="KVAE.rollout_step: u is given but the model has control_dim = 0"):
            model.rollout_step(carry, torch.zeros(1, 1))
        _, step = model.rollout_step(carry, None)
    assert step.observation.shape == (1, 1, 8, 8) and bool(((step.observation >= 0) & (step.observation <= 1)).all())


def small_srnn(control_dim: int = 2) -> SRNN:
    torch.manual_seed(0)
    return SRNN(SRNNConfig(obs_dim=3, control_dim=control_dim, likelihood="gaussian", state_dim=4,
                           deterministic_dim=6, inference_dim=6, feature_dims=[5], hidden_dim=7,
                           output_hidden_dims=[8])).double().eval()


def test_srnn_step_is_the_generative_transition():
    """d' = GRU(phi(u), d), z' = mu_p + sigma_p eps with the generator's eps; observation = the
    output mean at (d', z'); log_prob = log N(z'; mu_p, sigma_p^2), all re-done from the modules."""
    model = small_srnn()
    g = torch.Generator().manual_seed(0)
    z, d = torch.randn(4, 4, generator=g, dtype=torch.float64), torch.randn(4, 6, generator=g, dtype=torch.float64)
    u = torch.randn(4, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        (z1, d1), step = model.rollout_step((z, d), u, torch.Generator().manual_seed(5))
        d_ref = model.forward_gru(model.input_features(u[:, None]), d[None])[1][0]
        mp, lp = model.prior(model.prior.project(d_ref), z)
        eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        z_ref = mp + torch.exp(0.5 * lp) * eps
        mean = model._observation(torch.cat([d_ref, z_ref], -1))[0]
    torch.testing.assert_close(d1, d_ref)
    torch.testing.assert_close(z1, z_ref)
    torch.testing.assert_close(step.latent, z_ref)
    torch.testing.assert_close(step.observation, mean)
    torch.testing.assert_close(step.log_prob, Normal(mp, torch.exp(0.5 * lp)).log_prob(z_ref).sum(-1))


def test_srnn_rollout_starts_from_the_posterior_and_needs_actions():
    model = small_srnn()
    x, u = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(2, 5, 2, dtype=torch.float64)
    carry = model.rollout_start(x, u, num_particles=3, generator=torch.Generator().manual_seed(1))
    post, run = model._posterior(x, None, u, 3, torch.Generator().manual_seed(1), "test")
    torch.testing.assert_close(carry[0], run.z_last)
    torch.testing.assert_close(carry[1], run.d_last)
    assert carry[0].shape == (6, 4)
    with pytest.raises(ValueError, match="control_dim = 0"):
        small_srnn(control_dim=0).rollout_start(x)
    with pytest.raises(ValueError, match="u must have shape"):
        model.rollout_step(carry, u[:, 0])


def mean_path(model, x, u, u_future, num_particles: int = 2, seed: int = 0):
    """rollout_start + rollout_step without noise: observations, latents, log_probs stacked over the
    horizon (rows p·B + b), from a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    P = num_particles
    with torch.no_grad():
        carry = model.rollout_start(x, u, num_particles=P, generator=g, noise=False)
        steps = []
        for h in range(u_future.shape[1]):
            carry, step = model.rollout_step(carry, u_future[:, h].repeat(P, 1), g, noise=False)
            steps.append(step)
    return [torch.stack(values, 1) for values in zip(*steps)]


def test_lgssm_mean_path_is_the_exact_forecast_mean():
    model = controlled_lgssm()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 2, generator=g, dtype=torch.float64)
    u = torch.randn(2, 6, 1, generator=g, dtype=torch.float64)
    u_future = torch.randn(2, 3, 1, generator=g, dtype=torch.float64)
    fc = kalman_forecast(model.params(), x, 3, u=u, u_future=u_future)
    obs, latents, log_probs = mean_path(model, x, u, u_future)
    torch.testing.assert_close(latents.view(2, 2, 3, 2), fc.state_means.expand(2, -1, -1, -1))
    torch.testing.assert_close(obs.view(2, 2, 3, 2), fc.obs_means.expand(2, -1, -1, -1))
    assert bool((log_probs == 0).all())


def test_kvae_mean_path_is_the_deterministic_forecast():
    model = tiny(control_dim=2).eval()
    x, u, u_future = moving_dots(2, 5), torch.randn(2, 5, 2), torch.randn(2, 4, 2)
    with torch.no_grad():
        fc = model.forecast(x, 4, u_future=u_future, u=u)
    obs, _, log_probs = mean_path(model, x, u, u_future)
    torch.testing.assert_close(obs.view(2, 2, 4, 1, 8, 8), fc.mean.expand(2, -1, -1, -1, -1, -1))
    assert bool((log_probs == 0).all())


def test_gtmsm_mean_path_is_the_forecast_mean():
    from tests.models.test_gtmsm import tiny as tiny_gtmsm
    from tests.models.test_gtmsm import walks

    model = tiny_gtmsm().eval()
    x, u, _ = walks(2, 20)
    with torch.no_grad():
        fc = model.forecast(x[:, :12], 8, u_future=u[:, 12:], u=u[:, :12])
    obs, latents, log_probs = mean_path(model, x[:, :12], u[:, :12], u[:, 12:])
    torch.testing.assert_close(obs.view(2, 2, 8, 3, 8, 8), fc.mean.expand(2, -1, -1, -1, -1, -1))
    torch.testing.assert_close(latents[:2], model.infer_states(u)[:, 12:].detach())
    assert bool((log_probs == 0).all())


def test_srnn_mean_path_is_deterministic_and_steps_to_the_prior_mean():
    model = small_srnn()
    x, u = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(2, 5, 2, dtype=torch.float64)
    u_future = torch.randn(2, 3, 2, dtype=torch.float64)
    first, second = mean_path(model, x, u, u_future, seed=0), mean_path(model, x, u, u_future, seed=1)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b)
    obs, latents, log_probs = first
    torch.testing.assert_close(latents[:2], latents[2:])  # the two particles are one path
    assert bool((log_probs == 0).all())
    with torch.no_grad():  # one step from the start re-done from the modules: z' = mu_p
        z, d = model.rollout_start(x, u, generator=torch.Generator().manual_seed(3), noise=False)
        d_ref = model.forward_gru(model.input_features(u_future[:, :1]), d[None])[1][0]
        mp, _ = model.prior(model.prior.project(d_ref), z)
    torch.testing.assert_close(latents[:2, 0], mp)

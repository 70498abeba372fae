"""GTM-SM: states against a hand-rolled transition, the mixture prior against scipy, the memory
against exact revisits, gradients, masks, the posteriors against the encoder and a hand-built
memory prior, the predictive std against the mixture's moments by hand and by Monte Carlo, the
protocol's shapes and errors, and a short training run that learns the map of image navigation
(affine fit of the states to the true positions)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from seqlvm.envs import roll_episodes
from seqlvm.metrics import affine_r2
from seqlvm.models import MODELS, GTMSM, GTMSMConfig

TINY = dict(channels=(8, 4), z_dim=4, memory_steps=12, kl_samples=4)
# The exact grid moves of ImageNavigationEnv (0 stay, 1 up, 2 down, 3 left, 4 right) as (row, col).
GRID = torch.tensor([[0.0, -1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, -1.0, 1.0]])


def tiny(**overrides) -> GTMSM:
    torch.manual_seed(0)
    return GTMSM(GTMSMConfig(**{**TINY, **overrides}))


def walks(batch: int, T: int, blocked: str = "stay", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image-navigation episodes: frames (B, T, 3, 8, 8) in [0, 1], one-hot actions (B, T, 5),
    true positions (B, T, 2)."""
    eps = roll_episodes("seqlvm/ImageNavigation-v0", {"exploration_blocked": blocked}, "default", seed, 0, batch, T)
    x = torch.from_numpy(eps.observations).permute(0, 1, 4, 2, 3).float() / 255
    return x, torch.from_numpy(eps.actions), torch.from_numpy(eps.states)


def test_registered_and_config_round_trip():
    model = tiny()
    assert MODELS["gtmsm"] is GTMSM
    again = GTMSM.from_config(model.config_dict())
    assert again.config == model.config


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(obs_shape=(3, 6, 6)), "obs_shape"),
        (dict(value_type="mean"), "value_type"),
        (dict(delta=0.0), "delta"),
        (dict(num_neighbours=0), "num_neighbours"),
        (dict(channels=()), "channels"),
        (dict(grid_moves=(4, 3, 1, 9)), "grid_moves"),
        (dict(walls="yes"), "walls"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        GTMSMConfig(**{**TINY, **overrides})


def test_linear_states_follow_the_actions_exactly():
    _, u, pos = walks(3, 30)
    model = tiny()
    with torch.no_grad():
        model.moves.copy_(GRID)
    states = model.infer_states(u)
    assert torch.equal(states[:, 0], torch.zeros(3, 2))
    torch.testing.assert_close(states, pos - pos[:, :1], rtol=0, atol=1e-5)


def test_wall_gate_transition_matches_a_hand_rolled_loop():
    model = tiny(walls=True).double()
    g = torch.Generator().manual_seed(3)
    u = torch.nn.functional.one_hot(torch.randint(0, 5, (2, 9), generator=g), 5).double()
    states = model.infer_states(u)
    M = model.moves.detach()
    for b in range(2):
        s = torch.zeros(2, dtype=torch.float64)
        for t in range(1, 9):
            move = M @ u[b, t]
            s = s + move * model.gate(s + move)
            torch.testing.assert_close(states[b, t], s, rtol=1e-12, atol=1e-12)
    assert model.infer_states(u[:, :1]).abs().max() == 0


def test_mixture_prior_matches_scipy():
    """log p(z | s, m) = log sum_k w_k N(z; mu_k, diag sigma_k^2) over the K nearest keys, with
    w_k ∝ 1 / (|s - s_k|^2 + delta), against a brute-force numpy/scipy evaluation."""
    model = tiny(num_neighbours=3, delta=0.05).double()
    g = torch.Generator().manual_seed(0)
    B, N, Q, Z = 2, 7, 4, model.config.z_dim
    keys = torch.randn(B, N, 2, generator=g, dtype=torch.float64)
    values = torch.randn(B, N, 2 * Z, generator=g, dtype=torch.float64) * 0.5
    query = torch.randn(B, Q, 2, generator=g, dtype=torch.float64)
    z = torch.randn(3, B, Q, Z, generator=g, dtype=torch.float64)
    from seqlvm.models.gtmsm import _Memory

    look = model._lookup(_Memory(keys, values, torch.ones(B, N, dtype=torch.bool)), query)
    got = model._mixture_log_prob(z, look).numpy()
    for b in range(B):
        for q in range(Q):
            d2 = ((keys[b] - query[b, q]) ** 2).sum(-1).numpy()
            near = np.argsort(d2)[:3]
            logw = -np.log(d2[near] + 0.05)
            logw -= logsumexp(logw)
            for s in range(3):
                comps = [
                    multivariate_normal(values[b, k, :Z].numpy(), np.diag(np.exp(2 * values[b, k, Z:].numpy()))).logpdf(
                        z[s, b, q].numpy()
                    )
                    for k in near
                ]
                assert got[s, b, q] == pytest.approx(logsumexp(logw + np.array(comps)), rel=1e-10)


def test_frame_likelihood_is_the_gaussian_density():
    model = tiny(pixel_variance=0.3).double()
    g = torch.Generator().manual_seed(0)
    x, mean = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64), torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    expected = [
        multivariate_normal(mean[i].flatten().numpy(), 0.3 * np.eye(192)).logpdf(x[i].flatten().numpy()) for i in range(2)
    ]
    np.testing.assert_allclose(model.frame_log_likelihood(x, mean).numpy(), expected, rtol=1e-12)


def test_forecast_of_a_revisited_place_is_the_memorised_frame():
    """With the true grid as M (so revisits hit stored keys exactly) and a tiny delta, the
    predicted frame at a memorised position is decoder(mu) of the crop seen there."""
    x, u, pos = walks(2, 40)
    model = tiny(memory_steps=30, delta=1e-12).double().eval()
    with torch.no_grad():
        model.moves.copy_(GRID)
    x, u = x.double(), u.double()
    fc = model.forecast(x[:, :30], 10, u_future=u[:, 30:], u=u[:, :30], num_samples=2)
    recon = model.decode(model.encode(x)[0])
    seen = 0
    for b in range(2):
        for h in range(10):
            match = [t for t in range(30) if torch.equal(pos[b, t], pos[b, 30 + h])]
            if match:
                seen += 1
                torch.testing.assert_close(fc.mean[b, h], recon[b, match[0]], rtol=0, atol=1e-6)
                torch.testing.assert_close(x[b, 30 + h], x[b, match[0]])  # the crop the memory holds
    assert seen > 0
    assert fc.samples.shape == (2, 2, 10, 3, 8, 8) and fc.std.shape == (2, 10, 3, 8, 8)


def test_gradients_reach_the_moves_the_gate_and_the_encoder_but_not_missing_frames():
    x, u, _ = walks(2, 20, blocked="bump")
    model = tiny(walls=True)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[0, 3] = mask[1, 15] = False
    x = x.clone().requires_grad_(True)
    noisy = torch.where(mask[:, :, None, None, None], x, torch.full_like(x, math.nan))
    model.elbo(noisy, mask=mask, u=u).loss.backward()
    assert model.moves.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.gate[0].weight.grad.abs().sum() > 0
    assert model.encoder.mean.weight.grad.abs().sum() > 0
    assert x.grad[0, 3].abs().sum() == 0 and x.grad[1, 15].abs().sum() == 0
    assert x.grad[:, :12].abs().sum() > 0  # memorised frames learn through the memory prior


def test_missing_frames_change_nothing_but_their_own_terms():
    x, u, _ = walks(2, 20)
    model = tiny().eval()
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[:, 16] = False
    other = torch.where(mask[:, :, None, None, None], x, torch.rand_like(x))
    torch.manual_seed(5)
    a = model.elbo(x, mask=mask, u=u)
    torch.manual_seed(5)
    b = model.elbo(other, mask=mask, u=u)
    for name in a.terms:
        torch.testing.assert_close(a.terms[name], b.terms[name])


def test_kl_estimate_matches_the_closed_form_for_one_component():
    """K = 1 and one memory entry: the mixture is one Gaussian, so KL(q || p) is analytic."""
    model = tiny(num_neighbours=1, kl_samples=20000, memory_steps=1).double().eval()
    x, u, _ = walks(1, 2)
    x, u = x.double(), u.double()
    torch.manual_seed(0)
    out = model.elbo(x, u=u)
    with torch.no_grad():
        (mq, lq), (mp, lp) = (tuple(t[0, i] for t in model.encode(x)) for i in (1, 0))
    kl = (lp - lq + (torch.exp(2 * lq) + (mq - mp) ** 2) / (2 * torch.exp(2 * lp)) - 0.5).sum()
    assert float(out.terms["kl"]) == pytest.approx(float(kl), abs=0.05 * max(1.0, float(kl)))


def test_iwae_with_one_sample_is_the_elbo_and_more_samples_tighten_it():
    """IWAE(1) is an unbiased estimate of the ELBO; IWAE(K) rises with K above it."""
    x, u, _ = walks(8, 20)  # eight sequences per draw: a smaller standard error
    model = tiny().eval()
    torch.manual_seed(0)
    with torch.no_grad():
        elbos = torch.stack([model.elbo(x, u=u).terms["elbo"] for _ in range(400)])
        iwae1 = torch.stack([model.log_likelihood(x, u=u, num_samples=1).mean() for _ in range(400)])
        iwae = model.log_likelihood(x, u=u, num_samples=500).mean()
    se = float(torch.sqrt(elbos.var() / 400 + iwae1.var() / 400))
    assert abs(float(elbos.mean() - iwae1.mean())) < 4 * se
    assert iwae > elbos.mean() + 2 * se


def test_impute_keeps_observed_frames_and_fills_revisits_from_memory():
    x, u, pos = walks(1, 40)
    model = tiny(delta=1e-12).double().eval()
    with torch.no_grad():
        model.moves.copy_(GRID)
    x, u = x.double(), u.double()
    mask = torch.ones(1, 40, dtype=torch.bool)
    mask[0, 25:] = False
    recon = model.decode(model.encode(x)[0])
    for method in ("smooth", "filter"):
        imp = model.impute(x, mask, u=u, method=method, num_samples=2)
        torch.testing.assert_close(imp.mean[0, :25], recon[0, :25])
        for t in range(25, 40):
            match = [s for s in range(25) if torch.equal(pos[0, s], pos[0, t])]
            if match:
                torch.testing.assert_close(imp.mean[0, t], recon[0, match[0]], rtol=0, atol=1e-6)
        assert imp.samples.shape == (2, 1, 40, 3, 8, 8)
    # "filter" sees only the past: the first frame, missing, has an empty memory.
    first_missing = torch.ones(1, 40, dtype=torch.bool)
    first_missing[0, 0] = False
    filt = model.impute(x, first_missing, u=u, method="filter")
    torch.testing.assert_close(filt.mean[0, 0], model.decode(torch.zeros(1, model.config.z_dim, dtype=torch.float64))[0])


def nearest(keys: np.ndarray, occupied: np.ndarray, query: np.ndarray, K: int, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force DND lookup of one query: the slots of the (at most) K nearest occupied keys and
    their weights w_k ∝ 1 / (|s − s_k|² + delta). Callers use continuous random actions: on a
    lattice walk, keys one move before and after the query are tied, and which one a search keeps
    is arbitrary."""
    slots = np.flatnonzero(occupied)
    d2 = ((keys[slots] - query) ** 2).sum(-1)
    near = slots[np.argsort(d2)[:K]]
    kernel = 1.0 / (((keys[near] - query) ** 2).sum(-1) + delta)
    return near, kernel / kernel.sum()


@pytest.mark.parametrize("value_type", ["posterior_params", "sample"])
def test_filter_and_smooth_are_the_encoder_on_observed_steps_and_the_memory_prior_elsewhere(value_type):
    """Observed steps: both posteriors are q(z_t | x_t) (the encoder's mu_t, sigma_t) and the states
    are infer_states(u). Missing steps: the mean and variance of the mixture sum_k w_k N(mu_k, v_k)
    (v_k = sigma_k², + value_std² for "sample"), in raw-moment form sum_k w_k (v_k + mu_k²) − mean²,
    over the observed steps before t (filter) or all of them (smooth); N(0, I) with no memory."""
    model = tiny(num_neighbours=3, delta=0.05, value_type=value_type, value_std=0.3).double()
    x = walks(2, 20)[0].double()
    u = torch.randn(2, 20, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mu, log_sigma = (t.detach().numpy() for t in model.encode(x))
    states = model.infer_states(u)
    filt, smooth = model.filter(x, u=u), model.smooth(x, u=u)
    for post in (filt, smooth):
        assert post.mean.shape == post.std.shape == (2, 20, 4)
        assert post.states.shape == (2, 20, 2) and post.observed.shape == (2, 20) and post.observed.all()
        np.testing.assert_allclose(post.mean.detach().numpy(), mu, rtol=0, atol=1e-12)
        np.testing.assert_allclose(post.std.detach().numpy(), np.exp(log_sigma), rtol=1e-12)
        torch.testing.assert_close(post.states, states, rtol=0, atol=0)
    for a, b in zip(filt, smooth):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[0, [0, 5, 6, 13]] = mask[1, [9, 19]] = False
    holes = torch.where(mask[:, :, None, None, None], x, torch.full_like(x, math.nan))
    filt, smooth = model.filter(holes, mask=mask, u=u), model.smooth(holes, u=u)  # NaN frames are missing
    keys, extra = states.detach().numpy(), (0.3**2 if value_type == "sample" else 0.0)
    for method, post in (("filter", filt), ("smooth", smooth)):
        assert torch.equal(post.observed, mask) and torch.isfinite(post.mean).all() and torch.isfinite(post.std).all()
        for b in range(2):
            for t in range(20):
                got_mean, got_std = post.mean[b, t].detach().numpy(), post.std[b, t].detach().numpy()
                if mask[b, t]:
                    np.testing.assert_allclose(got_mean, mu[b, t], rtol=0, atol=1e-12)
                    np.testing.assert_allclose(got_std, np.exp(log_sigma[b, t]), rtol=1e-12)
                    continue
                occupied = mask[b].numpy() & ((np.arange(20) < t) if method == "filter" else True)
                if not occupied.any():
                    np.testing.assert_array_equal(got_mean, 0.0)
                    np.testing.assert_array_equal(got_std, 1.0)
                    continue
                near, w = nearest(keys[b], occupied, keys[b, t], 3, 0.05)
                m_k, v_k = mu[b, near], np.exp(2 * log_sigma[b, near]) + extra
                mean = w @ m_k
                np.testing.assert_allclose(got_mean, mean, rtol=1e-10, atol=1e-12)
                np.testing.assert_allclose(got_std, np.sqrt(w @ (v_k + m_k**2) - mean**2), rtol=1e-8)
    assert not torch.allclose(filt.mean[0, 0], smooth.mean[0, 0])  # the filter has no memory at t = 0
    # Gradients stay finite through the empty-memory branch (a sqrt(0) there would give NaN).
    x_req = holes.clone().requires_grad_(True)
    post = model.filter(x_req, mask=mask, u=u)
    (post.mean.sum() + post.std.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert torch.isfinite(x_req.grad).all() and x_req.grad[0, 0].abs().sum() == 0


def test_forecast_std_is_the_mixture_of_the_decoded_memories():
    """mean = sum_k w_k d_k and std² = pixel_variance + sum_k w_k d_k² − mean², d_k = decoder(mu_k),
    against the pieces by hand (brute-force lookup, the encoder, the decoder) and against a
    Monte-Carlo estimate from draws of sum_k w_k N(d_k, pixel_variance I); quantiles without samples."""
    model = tiny(num_neighbours=3, delta=0.05, pixel_variance=0.01).double().eval()
    x = walks(2, 17)[0].double()
    u = torch.randn(2, 17, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    fc = model.forecast(x[:, :12], 5, u_future=u[:, 12:], u=u[:, :12])
    assert fc.samples is None and fc.mean.shape == fc.std.shape == (2, 5, 3, 8, 8)
    with torch.no_grad():
        keys = model.infer_states(u).numpy()
        frames = model.decode(model.encode(x[:, :12])[0]).flatten(2).numpy()  # (B, 12, 192)
    g = np.random.default_rng(0)
    for b in range(2):
        for h in range(5):
            near, w = nearest(keys[b, :12], np.ones(12, bool), keys[b, 12 + h], 3, 0.05)
            d = frames[b, near]
            mean = w @ d
            std = np.sqrt(0.01 + w @ d**2 - mean**2)
            np.testing.assert_allclose(fc.mean[b, h].detach().flatten().numpy(), mean, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(fc.std[b, h].detach().flatten().numpy(), std, rtol=1e-8)
            if h == 0:  # Monte Carlo: pick k ~ w, add the decoder's pixel noise
                n = 40000
                draws = d[g.choice(len(w), size=n, p=w)] + 0.1 * g.standard_normal((n, d.shape[1]))
                np.testing.assert_allclose(draws.std(0), std, rtol=0.03)
                np.testing.assert_allclose(draws.mean(0), mean, atol=4 * 0.25 / math.sqrt(n) + 4 * std.max() / math.sqrt(n))
    z90 = 1.2815515655446004
    torch.testing.assert_close(fc.quantile(0.5), fc.mean)
    torch.testing.assert_close(fc.quantile(0.9), fc.mean + z90 * fc.std)
    assert fc.quantile(torch.tensor([0.1, 0.5])).shape == (2, 2, 5, 3, 8, 8)


def test_forecast_with_sample_values_is_seeded_by_the_generator():
    """value_type="sample" memorises a draw z ~ q: the forecast's generator drives it too."""
    model = tiny(value_type="sample").eval()
    x, u, _ = walks(1, 16)
    outs = [
        model.forecast(x[:, :12], 4, u_future=u[:, 12:], u=u[:, :12], generator=torch.Generator().manual_seed(3))
        for _ in range(2)
    ]
    torch.manual_seed(1)  # the global RNG must not matter
    again = model.forecast(x[:, :12], 4, u_future=u[:, 12:], u=u[:, :12], generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(outs[0].mean, outs[1].mean, rtol=0, atol=0)
    torch.testing.assert_close(outs[0].mean, again.mean, rtol=0, atol=0)


def test_impute_std_is_the_pixel_std_on_observed_frames_and_the_mixture_std_on_missing_ones():
    model = tiny(num_neighbours=3, delta=0.05, pixel_variance=0.04).double().eval()
    x = walks(1, 20)[0].double()
    u = torch.randn(1, 20, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    mask = torch.ones(1, 20, dtype=torch.bool)
    mask[0, 14:] = False
    with torch.no_grad():
        keys = model.infer_states(u).numpy()[0]
        frames = model.decode(model.encode(x)[0]).flatten(2).numpy()[0]
    for method in ("smooth", "filter"):
        imp = model.impute(x, mask, u=u, method=method)
        assert imp.std.shape == imp.mean.shape == (1, 20, 3, 8, 8)
        torch.testing.assert_close(imp.std[0, :14], torch.full_like(imp.std[0, :14], 0.2))
        for t in range(14, 20):
            near, w = nearest(keys, mask[0].numpy(), keys[t], 3, 0.05)
            d = frames[near]
            std = np.sqrt(0.04 + w @ (d - w @ d) ** 2)
            np.testing.assert_allclose(imp.std[0, t].detach().flatten().numpy(), std, rtol=1e-8)


def test_an_empty_memory_gives_the_reference_prior_and_missing_sequences_add_nothing():
    """A sequence whose memorised frames are all missing has an empty memory: its codes are scored
    against N(0, I) (as _draw and _code_moments use), so the bound and the log-likelihood stay
    finite, with finite gradients; a sequence with nothing observed at all adds exactly 0."""
    model = tiny().double()
    x, u, _ = walks(3, 16)
    x, tau = x.double(), model.config.memory_steps
    mask = torch.ones(3, 16, dtype=torch.bool)
    mask[0, :tau] = False  # nothing memorised
    mask[1] = False  # nothing at all
    out = model.elbo(torch.where(mask[:, :, None, None, None], x, torch.full_like(x, math.nan)), mask, u)
    assert torch.isfinite(out.loss) and all(torch.isfinite(t) for t in out.terms.values())
    grads = torch.autograd.grad(out.loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    with torch.no_grad():
        ll = model.log_likelihood(x, mask, u, num_samples=4)
        assert torch.isfinite(ll).all() and ll[1] == 0
        # The empty memory's prior is N(0, I): with the codes of sequence 0 the bound's mixture
        # term equals log N(z; 0, I).
        look, mean, _, _ = model._predicted_frames(x, mask, u.double(), None, False, "elbo")
        z = mean.unsqueeze(0)
        want = -0.5 * (z[:, 0].square().sum(-1) + model.config.z_dim * math.log(2 * math.pi))
        torch.testing.assert_close(model._mixture_log_prob(z, look)[:, 0], want)


def test_rollout_is_seeded_and_moves_every_particle_by_the_learned_transition():
    x, u, _ = walks(2, 16)
    model = tiny().eval()
    carry = model.rollout_start(x, u=u, num_particles=3)
    actions = torch.nn.functional.one_hot(torch.tensor([4, 1, 2, 3, 0, 4]), 5).float()
    outs = []
    for seed in (7, 7):
        g = torch.Generator().manual_seed(seed)
        carry2, step = model.rollout_step(carry, actions, generator=g)
        outs.append(step)
    torch.testing.assert_close(outs[0].observation, outs[1].observation)
    expected = model.infer_states(u)[:, -1].repeat(3, 1) + actions @ model.moves.T
    torch.testing.assert_close(outs[0].latent, expected.detach(), rtol=0, atol=0.01)
    assert outs[0].observation.shape == (6, 3, 8, 8) and outs[0].log_prob.shape == (6,)
    assert torch.isfinite(outs[0].log_prob).all()
    with pytest.raises(ValueError, match="u must have shape"):
        model.rollout_step(carry, actions[:2])


def test_inputs_are_checked_by_name():
    x, u, _ = walks(1, 20)
    model = tiny()
    with pytest.raises(ValueError, match="u of shape"):
        model.elbo(x)
    with pytest.raises(ValueError, match="memory_steps"):
        model.elbo(x[:, :12], u=u[:, :12])
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, 3, 8, 8\)"):
        model.elbo(x[..., :4], u=u)
    with pytest.raises(ValueError, match="mask must have shape"):
        model.elbo(x, mask=torch.ones(1, 19, dtype=torch.bool), u=u)
    with pytest.raises(ValueError, match="u_future"):
        model.forecast(x, 3, u=u)
    with pytest.raises(ValueError, match="method"):
        model.impute(x, torch.ones(1, 20, dtype=torch.bool), u=u, method="both")
    with pytest.raises(ValueError, match=r"GTMSM\.log_likelihood: x has T = 12 steps; expected more than memory_steps = 12"):
        model.log_likelihood(x[:, :12], u=u[:, :12])
    with pytest.raises(ValueError, match=r"GTMSM\.filter: u of shape \(1, 20, 5\) is required"):
        model.filter(x)
    with pytest.raises(ValueError, match=r"GTMSM\.smooth: x must have shape \(B, T, 3, 8, 8\) with B, T >= 1; got \(1, 20, 3, 8, 4\)"):
        model.smooth(x[..., :4], u=u)
    with pytest.raises(ValueError, match=r"GTMSM\.filter: mask must have shape \(1, 20\)"):
        model.filter(x, mask=torch.ones(1, 19, dtype=torch.bool), u=u)
    with pytest.raises(ValueError, match=r"GTMSM\.smooth: u must have shape \(1, 20, 5\); got \(1, 20, 4\)"):
        model.smooth(x, u=u[..., :4])
    with pytest.raises(ValueError, match=r"GTMSM\.infer_states: actions must have shape \(B, T, 5\) with B, T >= 1; got \(20, 5\)"):
        model.infer_states(u[0])
    with pytest.raises(ValueError, match=r"GTMSM\.infer_states: actions must have shape \(1, 20, 5\); got \(1, 20, 3\)"):
        model.infer_states(u[..., :3])
    assert model.infer_states(actions=u).shape == (1, 20, 2)
    with pytest.raises(ValueError, match=r"GTMSM\.forecast: x must have shape \(B, T, 3, 8, 8\) with B, T >= 1; got \(0, 20"):
        model.forecast(x[:0], 3, u_future=u[:0, :3], u=u[:0])
    with pytest.raises(ValueError, match=r"GTMSM\.infer_states: actions must have shape \(B, T, 5\) with B, T >= 1; got \(1, 0, 5\)"):
        model.infer_states(u[:, :0])
    assert model.sample(5, 2, u=u[:1, :5].repeat(2, 1, 1)).observations.shape == (2, 5, 3, 8, 8)


def test_short_training_learns_the_map_of_the_grid():
    """Memory-driven learning on no-wall random walks (the recipe of configs/gtmsm_nav_map.toml):
    after 200 steps the learned states are an affine image of the true positions (R² > 0.99)."""
    x, u, pos = walks(64, 64)
    torch.manual_seed(0)
    model = GTMSM(GTMSMConfig(memory_steps=32, state_dim=3, delta=0.01, pixel_variance=0.02))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        idx = torch.randint(0, 64, (16,), generator=g)
        loss = model.elbo(x[idx], u=u[idx]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert affine_r2(model.infer_states(u), pos).min() > 0.99

"""KVAE: the z-terms against a dense Gaussian oracle and Monte Carlo, the alpha-network's
inputs, training, imputation, generation, shapes and errors. Tiny 8x8 frames keep it fast."""

import dataclasses
import math

import pytest
import torch

from seqlvm.models import MODELS, KVAE, KVAEConfig
from tests.kalman.dense import dense_moments

TINY = dict(obs_shape=(1, 8, 8), conv_channels=4, alpha_hidden=6)


def tiny(**overrides) -> KVAE:
    torch.manual_seed(0)
    return KVAE(KVAEConfig(**{**TINY, **overrides}))


def moving_dots(batch: int, T: int, seed: int = 0) -> torch.Tensor:
    """Binary 8x8 frames of a 2x2 dot bouncing between the walls: (B, T, 1, 8, 8)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(batch, T, 1, 8, 8)
    pos = torch.randint(0, 7, (batch, 2), generator=g)
    vel = torch.randint(0, 2, (batch, 2), generator=g) * 2 - 1
    for t in range(T):
        for b in range(batch):
            r, c = pos[b].tolist()
            x[b, t, 0, r : r + 2, c : c + 2] = 1.0
        nxt = pos + vel
        vel = torch.where((nxt < 0) | (nxt > 6), -vel, vel)
        pos = pos + vel
    return x


def dense_oracle(model: KVAE, a: torch.Tensor, observed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha (B, T, K) and log p(a_obs) (B,) with no recursion in the model's code: alpha_t is the
    LSTM re-run from scratch over [a_init, a~_0 .. a~_{t-1}], and the prediction a~ of a missing
    frame is C_t E[z_t | earlier observed codes] by dense Gaussian conditioning."""
    B, T, _ = a.shape
    inputs = [model.a_init.expand(B, -1)]
    for t in range(T):
        alpha, _ = model.alpha_net(torch.stack(inputs, 1))
        params = model._params(alpha)
        moments = dense_moments(params, a[:, : t + 1], observed[:, : t + 1, None].expand(-1, -1, a.shape[-1]))
        predicted = (params.C[:, t] @ moments.pred_means[:, t, :, None]).squeeze(-1)
        inputs.append(torch.where(observed[:, t, None], a[:, t], predicted))
    full = dense_moments(params, a, observed[..., None].expand(-1, -1, a.shape[-1]))
    return alpha, full.log_likelihood


@pytest.mark.parametrize("missing", [False, True])
def test_exact_z_term_matches_dense_oracle(missing):
    model = tiny(num_mixtures=3, init_kf_std=0.5).double()
    g = torch.Generator().manual_seed(1)
    B, T = 3, 5
    a = torch.randn(B, T, 2, generator=g, dtype=torch.float64)
    observed = torch.ones(B, T, dtype=torch.bool)
    if missing:
        observed[0, 1] = observed[1, 2:4] = observed[2, 4] = False
    a = a * observed[..., None]
    dyn = model.dynamics(a, observed)
    alpha, log_p = dense_oracle(model, a, observed)
    torch.testing.assert_close(dyn.alpha, alpha)
    torch.testing.assert_close(model._log_p_codes(dyn, a, observed, None), log_p)


def test_joint_sample_is_unbiased_for_exact_and_marginal_is_lower():
    """E[joint_sample] = exact (within 4 standard errors); E[marginal] <= exact."""
    model = tiny(init_kf_std=0.5).double()
    g = torch.Generator().manual_seed(2)
    a = torch.randn(2, 6, 2, generator=g, dtype=torch.float64)
    observed = torch.ones(2, 6, dtype=torch.bool)
    observed[:, 3] = False
    a = a * observed[..., None]
    dyn = model.dynamics(a, observed)
    exact = model._log_p_codes(dyn, a, observed, None)
    torch.manual_seed(3)
    draws = {}
    for term in ("joint_sample", "marginal"):
        model.config.z_term = term
        draws[term] = torch.stack([model._log_p_codes(dyn, a, observed, None) for _ in range(200)])
    for term, d in draws.items():
        se = d.std(0) / math.sqrt(d.shape[0])
        if term == "joint_sample":
            assert bool(((d.mean(0) - exact).abs() <= 4 * se + 1e-9).all())
        else:
            assert bool((d.mean(0) + 4 * se < exact).all())


def test_alpha_uses_the_previous_code_only():
    """Changing a_t changes alpha_{t+1} on, never alpha_0..alpha_t (no look-ahead)."""
    model = tiny()
    a = torch.randn(2, 6, 2)
    b = a.clone()
    b[:, 3] += 1.0
    alpha_a, alpha_b = model.dynamics(a).alpha, model.dynamics(b).alpha
    torch.testing.assert_close(alpha_a[:, :4], alpha_b[:, :4])
    assert not torch.allclose(alpha_a[:, 4:], alpha_b[:, 4:])


def test_loop_and_whole_sequence_paths_agree():
    """Missing only the last frame, the step-by-step path must give the whole-sequence alphas."""
    model = tiny()
    a = torch.randn(3, 7, 2)
    observed = torch.ones(3, 7, dtype=torch.bool)
    observed[:, -1] = False
    torch.testing.assert_close(model.dynamics(a, observed).alpha, model.dynamics(a).alpha)


def test_training_on_a_few_sequences_reduces_the_loss():
    model = tiny()
    x = moving_dots(8, 8)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    torch.manual_seed(4)
    model.eval()
    with torch.no_grad():
        before = sum(float(model.elbo(x).loss) for _ in range(4)) / 4
    model.train()
    for _ in range(40):
        opt.zero_grad()
        model.elbo(x).loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = sum(float(model.elbo(x).loss) for _ in range(4)) / 4
    assert after < before - 0.2 * abs(before)


@pytest.mark.parametrize("z_term", ["exact", "joint_sample", "marginal"])
def test_gradients_are_finite_with_masks(z_term):
    model = tiny(z_term=z_term, control_dim=2)
    x = moving_dots(3, 6)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, 2:] = False  # everything after the prefix missing
    mask[1, ::2] = False  # the first frame missing too
    x[2, 3] = float("nan")  # NaN means missing
    u = torch.randn(3, 6, 2)
    out = model.elbo(x, mask, u)
    out.loss.backward()
    assert set(out.terms) == {"elbo", "reconstruction", "kl", "log_q_a", "log_p_a"}
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
    assert float(model.B_k.grad.abs().sum()) > 0  # the controls reach the transition


def test_reconstruction_weight_applies_in_training_only():
    model = tiny()
    x = moving_dots(2, 5)
    torch.manual_seed(5)
    train = model.train().elbo(x)
    torch.manual_seed(5)
    test = model.eval().elbo(x)
    t = train.terms
    torch.testing.assert_close(train.loss, -(0.3 * t["reconstruction"] - t["kl"]))
    torch.testing.assert_close(test.loss, -test.terms["elbo"])
    model.kl_weight = 0.5
    torch.manual_seed(5)
    half = model.eval().elbo(x)
    torch.testing.assert_close(half.loss, -(half.terms["reconstruction"] - 0.5 * half.terms["kl"]))


@pytest.mark.parametrize("method", ["smooth", "filter"])
def test_impute_keeps_observed_frames(method):
    model = tiny().eval()
    x = moving_dots(2, 7)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[:, 3:5] = False
    with torch.no_grad():
        imp = model.impute(x, mask, method=method)
    assert imp.mean.shape == imp.probs.shape == x.shape
    torch.testing.assert_close(imp.mean[mask], x[mask])
    torch.testing.assert_close(imp.mean[~mask], imp.probs[~mask])
    assert bool(((imp.probs > 0) & (imp.probs < 1)).all())


def test_smoothing_and_filtering_agree_at_the_last_frame():
    model = tiny().eval()
    x = moving_dots(2, 6)
    mask = torch.tensor([[1, 1, 0, 0, 1, 0], [1, 0, 1, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        s, f = model.impute(x, mask, method="smooth"), model.impute(x, mask, method="filter")
    torch.testing.assert_close(s.probs[:, -1], f.probs[:, -1])


def test_gaussian_decoder_imputation_std():
    model = tiny(decoder="gaussian").eval()
    x = torch.rand(2, 5, 1, 8, 8)
    mask = torch.tensor([[1, 1, 0, 1, 1], [1, 0, 0, 0, 1]], dtype=torch.bool)
    imp = model.impute(x, mask)
    assert imp.probs is None
    torch.testing.assert_close(imp.std[~mask], torch.full_like(imp.std[~mask], math.sqrt(0.1)))
    assert float(imp.std[mask].abs().max()) == 0.0


def test_forecast_sample_and_log_likelihood_shapes():
    model = tiny(control_dim=1).eval()
    x = moving_dots(2, 6)
    u = torch.zeros(2, 6, 1)
    g = torch.Generator().manual_seed(0)
    fc = model.forecast(x, 4, u_future=torch.zeros(2, 4, 1), num_samples=3, generator=g, u=u)
    assert fc.mean.shape == fc.probs.shape == (2, 4, 1, 8, 8)
    assert fc.samples.shape == (3, 2, 4, 1, 8, 8)
    s1 = model.sample(5, 3, u=torch.zeros(3, 5, 1), generator=torch.Generator().manual_seed(1))
    s2 = model.sample(5, 3, u=torch.zeros(3, 5, 1), generator=torch.Generator().manual_seed(1))
    assert s1.observations.shape == (3, 5, 1, 8, 8) and s1.states.shape == (3, 5, 4)
    torch.testing.assert_close(s1.observations, s2.observations)
    with torch.no_grad():
        ll = model.log_likelihood(x, u=u, num_samples=4)
    assert ll.shape == (2,) and bool(torch.isfinite(ll).all())


def test_gaussian_forecast_std_without_samples_is_the_decoder_noise():
    """S = 0: std = sqrt(v) on every pixel, so quantiles come from N(mean, v); the Bernoulli
    decoder keeps probs = mean and no std."""
    model = tiny(decoder="gaussian", pixel_variance=0.05).eval()
    x = torch.rand(2, 5, 1, 8, 8)
    with torch.no_grad():
        fc = model.forecast(x, 3)
    assert fc.probs is None and fc.samples is None
    torch.testing.assert_close(fc.std, torch.full_like(fc.mean, math.sqrt(0.05)))
    z90 = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.9))
    torch.testing.assert_close(fc.quantile(0.9), fc.mean + z90 * math.sqrt(0.05))
    with torch.no_grad():
        binary = tiny().eval().forecast(moving_dots(2, 5), 3)
    assert binary.std is None and binary.probs is binary.mean


def test_gaussian_forecast_std_with_samples_is_the_law_of_total_variance():
    """S > 0: std^2 = v + (1/S) sum_s (g(a^s) - gbar)^2 (by hand from the returned samples), and
    it matches the spread of pixel draws x = g(a) + sqrt(v) eps along paths drawn independently
    through the simulator protocol (Monte Carlo)."""
    v = 2e-3  # small, and codes that move the decoded frames: the spread of g(a) dominates
    model = tiny(decoder="gaussian", pixel_variance=v, init_kf_std=2.0).eval()
    x = torch.rand(2, 4, 1, 8, 8)
    S, H = 3000, 2
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(3.0)
        fc = model.forecast(x, H, num_samples=S, generator=torch.Generator().manual_seed(0))
        by_hand = (v + ((fc.samples - fc.samples.mean(0)) ** 2).mean(0)).sqrt()
        torch.testing.assert_close(fc.std, by_hand)
        assert float((fc.std**2 / v).mean()) > 2.0  # the code's spread is really in it

        g = torch.Generator().manual_seed(1)
        carry = model.rollout_start(x, num_particles=S, generator=g)
        draws = []
        for _ in range(H):
            carry, step = model.rollout_step(carry, None, generator=g)
            eps = torch.randn(step.observation.shape, generator=g)
            draws.append(step.observation + math.sqrt(v) * eps)
        pixels = torch.stack(draws, 1).view(S, 2, H, 1, 8, 8)
    mc_var = pixels.var(0)
    # pooled over the 256 pixels, the Monte-Carlo variance agrees to well within 2%...
    assert abs(float(mc_var.sum() / (fc.std**2).sum()) - 1.0) < 0.02
    # ...and pixel by pixel within the error of two 3000-draw variance estimates
    torch.testing.assert_close(mc_var.sqrt(), fc.std, rtol=0.1, atol=1e-3)


def test_forecast_refuses_a_count_in_place_of_u_future():
    model = tiny().eval()
    with pytest.raises(ValueError, match=r"u_future must be None or a tensor of shape \(B, H, k\).*got 5.*num_samples="):
        model.forecast(moving_dots(1, 4), 3, 5)


def test_box_recipe_file_repeats_the_model_default_recipe():
    """KVAE.train_defaults is the recipe; configs/kvae_box.toml, read over the generic defaults,
    must carry the same values, and `seqlvm train kvae` without a file resolves to them."""
    from pathlib import Path

    from seqlvm.train import TrainConfig
    from seqlvm.train.run import default_config

    recipe = TrainConfig.from_toml(Path(__file__).parents[2] / "configs" / "kvae_box.toml")
    defaults = default_config("kvae")
    for key, value in KVAE.train_defaults.items():
        assert getattr(recipe, key) == value == getattr(defaults, key), key
    assert (defaults.lr, defaults.lr_schedule, defaults.lr_step_epochs, defaults.lr_step_factor) == (0.007, "step", 20, 0.85)
    assert (defaults.batch_size, defaults.epochs, defaults.grad_clip, defaults.freeze) == (32, 80, 150.0, {"alpha_net.*": 10})
    assert KVAEConfig().recon_weight == recipe.model_config["recon_weight"] == 0.3
    defaults.freeze["alpha_net.*"] = 1  # a run's config is a copy: the class's recipe stays put
    assert KVAE.train_defaults["freeze"] == {"alpha_net.*": 10}


def test_forecast_continues_the_alpha_lstm_from_the_context():
    """A forecast of h steps equals the imputation of h missing frames appended to the context,
    up to the smoothing: with filtering both are the open-loop prediction."""
    model = tiny().eval()
    x = moving_dots(2, 8)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[:, 5:] = False
    with torch.no_grad():
        fc = model.forecast(x[:, :5], 3)
        imp = model.impute(x, mask, method="filter")
    torch.testing.assert_close(fc.probs, imp.probs[:, 5:])


def test_registered_and_config_round_trip():
    assert MODELS["kvae"] is KVAE
    model = tiny()
    again = KVAE.from_config(model.config_dict())
    assert again.config == model.config
    assert KVAEConfig(obs_shape=[1, 32, 32]).obs_shape == (1, 32, 32)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(z_term="mean"), "z_term"),
        (dict(obs_shape=(1, 30, 30)), "multiples of 8"),
        (dict(dim_a=0), "dim_a"),
        (dict(transition_noise=-1.0), "transition_noise"),
        (dict(decoder="poisson"), "decoder"),
        (dict(network_dtype="float16"), "network_dtype"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KVAEConfig(**{**TINY, **kwargs})


def test_bad_inputs_raise_before_any_work():
    model = tiny()
    x = moving_dots(2, 5)
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, 1, 8, 8\); got \(2, 5, 1, 16, 16\)"):
        model.elbo(torch.zeros(2, 5, 1, 16, 16))
    with pytest.raises(ValueError, match=r"mask must have shape \(B, T\) = \(2, 5\)"):
        model.impute(x, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="binary frames"):
        model.elbo(x * 0.5)
    with pytest.raises(ValueError, match="control_dim = 0"):
        model.elbo(x, u=torch.zeros(2, 5, 1))
    with pytest.raises(ValueError, match="method"):
        model.impute(x, method="viterbi")
    with pytest.raises(ValueError, match="obs_shape is None"):
        KVAE(KVAEConfig())
    controlled = tiny(control_dim=2)
    with pytest.raises(ValueError, match=r"u of shape \(2, 5, 2\) is required"):
        controlled.elbo(x)
    with pytest.raises(ValueError, match="controls must have shape"):
        controlled.forecast(x, 3, u_future=torch.zeros(2, 2, 2), u=torch.zeros(2, 5, 2))
    with pytest.raises(ValueError, match=r"controls of shape \(2, 3, 2\) are required"):
        controlled.forecast(x, 3, u=torch.zeros(2, 5, 2))
    with pytest.raises(ValueError, match="horizon"):
        model.forecast(x, 0)
    with pytest.raises(ValueError, match="num_samples"):
        model.log_likelihood(x, num_samples=0)


class _Frames(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i]}


def test_recipe_trains_with_the_alpha_network_frozen_first(tmp_path):
    """configs/kvae_box.toml drives the Trainer: the alpha-LSTM stays at its initial values in the
    frozen first stage (one epoch here) while the base matrices move, and joins afterwards."""
    from pathlib import Path

    from seqlvm.train import TrainConfig, Trainer

    recipe = TrainConfig.from_toml(Path(__file__).parents[2] / "configs" / "kvae_box.toml")
    assert (recipe.lr, recipe.batch_size, recipe.epochs, recipe.grad_clip) == (0.007, 32, 80, 150.0)
    assert recipe.freeze == {"alpha_net.*": 10} and recipe.model_config["recon_weight"] == 0.3
    config = dataclasses.replace(
        recipe, batch_size=4, epochs=2, freeze={"alpha_net.*": 1}, out_dir=str(tmp_path),
        progress=False, tensorboard=False, device="cpu",
        model_config={**recipe.model_config, **TINY, "network_dtype": "float32"},
    )
    model = KVAE(KVAEConfig(**config.model_config))
    lstm0, A0 = model.alpha_net.lstm.weight_hh_l0.detach().clone(), model.A_k.detach().clone()
    trainer = Trainer(dataclasses.replace(config, epochs=1), model, _Frames(moving_dots(8, 6)))
    trainer.fit()
    torch.testing.assert_close(model.alpha_net.lstm.weight_hh_l0, lstm0)
    assert not torch.allclose(model.A_k, A0)
    Trainer(config, model, _Frames(moving_dots(8, 6))).fit(resume=True)
    assert not torch.allclose(model.alpha_net.lstm.weight_hh_l0, lstm0)


def test_bfloat16_networks_give_the_same_bound_to_rounding():
    x = moving_dots(2, 5)
    exact, fast = tiny().eval(), tiny(network_dtype="bfloat16").eval()
    fast.load_state_dict(exact.state_dict())
    torch.manual_seed(6)
    ref = exact.elbo(x).terms["elbo"]
    torch.manual_seed(6)
    out = fast.elbo(x)
    assert out.loss.dtype == torch.float32
    torch.testing.assert_close(out.terms["elbo"], ref, rtol=0.02, atol=0.0)

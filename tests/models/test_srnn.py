"""SRNN: bounds against exact values and Monte-Carlo oracles, masks, protocol shapes and errors."""

from __future__ import annotations

import math

import pytest
import torch

from seqlvm.models import MODELS, SRNN, SRNNConfig
from seqlvm.models.srnn import clipped_leaky_relu

torch.set_num_threads(1)


def small(**kw) -> SRNNConfig:
    base = dict(obs_dim=5, state_dim=3, deterministic_dim=8, inference_dim=8, feature_dims=[12],
                hidden_dim=12, output_hidden_dims=[12])
    base.update(kw)
    return SRNNConfig(**base)


def model(seed: int = 0, **kw) -> SRNN:
    torch.manual_seed(seed)
    return SRNN(small(**kw)).double()


def binary(B: int, T: int, D: int = 5, seed: int = 1) -> torch.Tensor:
    return (torch.rand(B, T, D, generator=torch.Generator().manual_seed(seed)) < 0.3).double()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- configuration ----------------------------------------------------------------------------------
def test_registry_and_config_round_trip():
    assert MODELS["srnn"] is SRNN
    m = model(likelihood="gaussian", inference="filter", residual_posterior=False, control_dim=2)
    clone = SRNN.from_config(m.config_dict()).double()
    clone.load_state_dict(m.state_dict())
    x, u = torch.randn(2, 6, 5, dtype=torch.float64), torch.randn(2, 6, 2, dtype=torch.float64)
    assert torch.equal(m.bound(x, u=u, generator=gen()).elbo, clone.bound(x, u=u, generator=gen()).elbo)


@pytest.mark.parametrize(
    "field, value",
    [("obs_dim", 0), ("state_dim", 1.5), ("control_dim", -1), ("feature_dims", []), ("output_hidden_dims", [0]),
     ("likelihood", "poisson"), ("inference", "both"), ("residual_posterior", "yes"), ("min_variance", 0.0),
     ("dropout", 1.0), ("dropout", -0.1)],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        small(**{field: value})


def test_from_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="x_size"):
        SRNN.from_config({"x_size": 3})


def test_nonlinearity_is_clipped_very_leaky_relu():
    x = torch.tensor([-20.0, -6.0, -3.0, 0.0, 1.0, 2.5, 7.0])
    assert torch.equal(clipped_leaky_relu(x), torch.tensor([-3.0, -2.0, -1.0, 0.0, 1.0, 2.5, 3.0]))


# -- bounds against exact values ------------------------------------------------------------------------
def z_blind(seed: int = 0, **kw) -> SRNN:
    """A model whose output ignores z: then log p(x) = sum_t log p(x_t | d_t) exactly."""
    m = model(seed, **kw)
    with torch.no_grad():
        m.output.layers[0].weight[:, m.config.deterministic_dim :] = 0.0
    return m


def exact_z_blind(m: SRNN, x: torch.Tensor) -> torch.Tensor:
    """log p(x) of a z-blind model, from the deterministic path alone: d_t = GRU(phi(x_{t-1}))."""
    u = torch.nn.functional.pad(x[:, :-1], (0, 0, 1, 0))
    d = m.forward_gru(m.features(u))[0]
    z = torch.zeros(*d.shape[:2], m.config.state_dim, dtype=x.dtype)
    logits = m.output_a(m.output(torch.cat([d, z], -1)))
    return -torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2))


@pytest.mark.parametrize("inference", ["smooth", "filter"])
def test_bounds_below_exact_likelihood_and_tighten_with_k(inference):
    m = z_blind(inference=inference)
    x = binary(1, 10)
    exact = exact_z_blind(m, x)[0].item()
    with torch.no_grad():
        b = m.bound(x, generator=gen())
        # The output ignores z, so the reconstruction term is exact and the ELBO is exact - KL.
        torch.testing.assert_close(b.log_likelihood[0].item(), exact)
        assert b.kl.item() > 0
        # Means over 100 independent estimates, compared with their standard errors.
        reps = x.expand(100, -1, -1)
        iw = [m.log_likelihood(reps, num_samples=k, generator=gen(k)) for k in (1, 10, 100)]
    means = [v.mean().item() for v in iw]
    ses = [v.std().item() / 10 for v in iw]
    assert means[0] + 3 * ses[0] < means[1] and means[1] + 3 * ses[1] < means[2]
    assert means[2] <= exact + 3 * ses[2]


def test_importance_weights_are_unbiased():
    """E_q[w] = p(x): the mean of exp(log w - log p(x)) over draws is 1 within its standard error."""
    m = z_blind(seed=3)
    x = binary(1, 6, seed=4)
    exact = exact_z_blind(m, x)
    with torch.no_grad():
        post = m.smooth(x, num_samples=20000, generator=gen(5))
    ratio = torch.exp(post.log_weights[:, 0] - exact[0])
    se = ratio.std() / math.sqrt(ratio.numel())
    assert abs(ratio.mean().item() - 1.0) < 4 * se.item() + 1e-3


def test_iwae_with_one_sample_equals_elbo_in_expectation():
    m = model(seed=2)
    x = binary(1, 8, seed=3).expand(4000, -1, -1)
    with torch.no_grad():
        elbo = m.bound(x, generator=gen(1)).elbo
        iw1 = m.log_likelihood(x, num_samples=1, generator=gen(2))
        iw20 = m.log_likelihood(x[:400], num_samples=20, generator=gen(3))
    se = math.sqrt(elbo.var().item() / elbo.numel() + iw1.var().item() / iw1.numel())
    assert abs(elbo.mean().item() - iw1.mean().item()) < 4 * se
    assert iw20.mean() > iw1.mean() + 4 * se


def test_iwae_chunks_change_nothing_but_memory():
    m = model()
    x = binary(2, 7)
    a = m.log_likelihood(x, num_samples=12, chunk_size=12, generator=gen())
    b = m.log_likelihood(x, num_samples=12, chunk_size=12, generator=gen())
    c = m.log_likelihood(x, num_samples=12, chunk_size=5, generator=gen())
    assert torch.equal(a, b)
    assert a.shape == c.shape == (2,)
    assert torch.isfinite(c).all()


# -- masks -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("inference", ["smooth", "filter"])
def test_values_at_missing_entries_never_matter(inference):
    m = model(inference=inference)
    x = binary(2, 9)
    mask = torch.ones(2, 9, 5, dtype=torch.bool)
    mask[0, 3:5] = False
    mask[1, 6, :2] = False
    other = torch.where(mask, x, torch.full_like(x, 7.0))
    nan = torch.where(mask, x, torch.full_like(x, float("nan")))
    ref = m.bound(x, mask, generator=gen()).elbo
    torch.testing.assert_close(m.bound(other, mask, generator=gen()).elbo, ref)
    torch.testing.assert_close(m.bound(nan, generator=gen()).elbo, ref)
    assert not torch.allclose(m.bound(x, generator=gen()).elbo, ref)


def test_trailing_padding_costs_nothing():
    """Steps after the last observation add zero to the KL and to every importance weight."""
    m = model(likelihood="gaussian")
    x = torch.randn(2, 6, 5, dtype=torch.float64)
    u = torch.randn(2, 6, 5, dtype=torch.float64)
    pad = lambda t: torch.cat([t, torch.randn(2, 4, 5, dtype=torch.float64)], 1)  # noqa: E731
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[:, 6:] = False
    short, padded = m.bound(x, None, u, generator=gen()), m.bound(pad(x), mask, pad(u), generator=gen())
    torch.testing.assert_close(padded.elbo, short.elbo)
    assert padded.num_steps.tolist() == [6, 6]
    torch.testing.assert_close(
        m.log_likelihood(pad(x), mask, pad(u), num_samples=7, generator=gen()),
        m.log_likelihood(x, None, u, num_samples=7, generator=gen()),
    )


def test_missing_step_drops_out_of_the_data_term():
    m = model(likelihood="gaussian")
    x = torch.randn(1, 5, 5, dtype=torch.float64)
    u = torch.randn(1, 5, 5, dtype=torch.float64)
    mask = torch.tensor([[True, True, False, True, True]])
    full, part = m.bound(x, None, u, generator=gen()), m.bound(x, mask, u, generator=gen())
    assert part.num_steps.item() == 4
    assert not torch.isclose(full.log_likelihood, part.log_likelihood)


# -- training objective -----------------------------------------------------------------------------------
def test_kl_weight_scales_only_the_kl_in_the_loss():
    m = model()
    x = binary(3, 7)
    m.kl_weight = 0.3
    torch.manual_seed(11)
    out = m.elbo(x)
    torch.manual_seed(11)
    b = m.bound(x)
    torch.testing.assert_close(out.loss, (-(b.log_likelihood - 0.3 * b.kl) / 7).mean())
    torch.testing.assert_close(out.terms["kl"], b.kl.mean())  # logged unweighted
    torch.testing.assert_close(out.terms["elbo"], b.elbo.mean())
    assert set(out.terms) == {"elbo", "reconstruction", "kl", "elbo_per_step"}


@pytest.mark.parametrize("control_dim", [0, 2])
def test_chunks_started_from_the_previous_end_add_up_to_the_whole_sequence(control_dim):
    """Truncated BPTT's carry-over is exact: with filtering inference (q_t sees no future frames) and
    one generator, the bounds of x[:, :4] and of x[:, 4:] started from the first chunk's end sum to
    the bound of x, and the second chunk ends where x ends. Inputs: actions, or the frames x_{t-1}
    given explicitly (as the music arrays give them, so a chunk's first input is the previous chunk's
    last frame)."""
    m = model(inference="filter", control_dim=control_dim)
    x = binary(3, 9)
    if control_dim:
        u = torch.randn(3, 9, control_dim, dtype=torch.float64, generator=gen(2))
    else:
        u = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1)
    whole = m.bound(x, u=u, generator=gen(4))
    g = gen(4)
    first = m.bound(x[:, :4], u=u[:, :4], generator=g)
    second = m.bound(x[:, 4:], u=u[:, 4:], generator=g, start=first.end)
    torch.testing.assert_close(first.elbo + second.elbo, whole.elbo)
    for a, b in zip(second.end, whole.end):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match=r"SRNN.bound: start must be \(z_0, d_0\) of shapes \(3, 3\) and \(3, 8\); got \(\(3, 3\),\)"):
        m.bound(x, u=u, start=(first.end[0],))


def test_tiny_training_reduces_the_loss():
    torch.manual_seed(0)
    m = SRNN(small(obs_dim=4))
    # A deterministic rotating one-hot pattern: predictable from x_{t-1}.
    x = torch.eye(4)[torch.arange(12) % 4].expand(8, -1, -1).contiguous()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2, eps=1e-4)
    losses = []
    for _ in range(60):
        loss = m.elbo(x).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_dropout_acts_in_training_only():
    x = binary(3, 7)
    plain, dropped = model(), model(dropout=0.5)  # same seed: the same weights
    dropped.eval()
    assert torch.equal(plain.bound(x, generator=gen()).elbo, dropped.bound(x, generator=gen()).elbo)
    dropped.train()
    g = gen()
    first = dropped.bound(x, generator=g).elbo
    assert not torch.equal(first, dropped.bound(x, generator=g).elbo)  # fresh masks per call
    assert not torch.equal(first, plain.bound(x, generator=gen()).elbo)
    # Training through elbo (no generator) draws its masks from the global RNG.
    torch.manual_seed(1)
    a = dropped.elbo(x).loss
    torch.manual_seed(1)
    assert torch.equal(a, dropped.elbo(x).loss)
    torch.manual_seed(2)
    assert not torch.equal(a, dropped.elbo(x).loss)


@pytest.mark.parametrize("control_dim", [0, 2])
def test_dropout_masks_come_from_the_generator_not_the_global_rng(control_dim):
    """Same generator, same result, whatever the global seed: in training mode with dropout, bound
    draws its masks from the generator, and the inference methods apply no dropout at all."""
    m = model(dropout=0.3, likelihood="gaussian", control_dim=control_dim)
    x = torch.randn(2, 5, 5, dtype=torch.float64)
    u = torch.randn(2, 5, 2, dtype=torch.float64) if control_dim else None
    uf = torch.randn(2, 3, 2, dtype=torch.float64) if control_dim else None
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[:, 2] = False
    calls = {
        "bound": lambda g: m.bound(x, u=u, generator=g).elbo,
        "log_likelihood": lambda g: m.log_likelihood(x, u=u, num_samples=3, generator=g),
        "smooth": lambda g: m.smooth(x, u=u, num_samples=3, generator=g).states,
        "impute": lambda g: m.impute(x, mask, u=u, num_samples=3, generator=g).samples,
        "forecast": lambda g: m.forecast(x, 3, uf, num_samples=3, generator=g, u=u).samples,
    }
    results = {}
    for mode in ("train", "eval"):
        getattr(m, mode)()
        for name, call in calls.items():
            torch.manual_seed(1)
            first = call(gen(7))
            torch.manual_seed(2)
            assert torch.equal(first, call(gen(7))), (mode, name)
            results[mode, name] = first
    for name in calls:  # the inference methods score the network without dropout
        same = torch.equal(results["train", name], results["eval", name])
        assert same == (name != "bound"), name


def test_batch_of_zero_sequences_is_refused():
    m = model()
    empty = binary(2, 4)[:0]
    for call in (lambda: m.elbo(empty), lambda: m.bound(empty), lambda: m.log_likelihood(empty, num_samples=2),
                 lambda: m.smooth(empty, num_samples=2), lambda: m.impute(empty, num_samples=2)):
        with pytest.raises(ValueError, match=r"x must have shape \(B, T, 5\) with B >= 1 and T >= 1; got \(0, 4, 5\)"):
            call()
    with pytest.raises(ValueError, match=r"x_context must have shape \(B, T, 5\) with B >= 1.*\(0, 4, 5\)"):
        m.forecast(empty, 2, num_samples=2)
    with pytest.raises(ValueError, match=r"x must have shape.*B >= 1.*\(0, 4, 5\)"):
        model(control_dim=2).rollout_start(empty, torch.zeros(0, 4, 2))


def test_rollout_step_checks_its_carry():
    m = model(control_dim=2, likelihood="gaussian")
    x, u = torch.randn(2, 4, 5, dtype=torch.float64), torch.randn(2, 4, 2, dtype=torch.float64)
    z, d = m.rollout_start(x, u, num_particles=3, generator=gen())
    assert z.shape == (6, 3) and d.shape == (6, 8)
    a = torch.zeros(6, 2, dtype=torch.float64)
    (z1, d1), step = m.rollout_step((z, d), a, generator=gen())
    assert z1.shape == (6, 3) and d1.shape == (6, 8) and step.observation.shape == (6, 5)
    bad = [z, (z,), (z, d, d), (d, z), (z, d[:4]), (z[0], d), (z, d.numpy()), [z, d]]
    for carry in bad:
        with pytest.raises(ValueError, match=r"carry must be the \(z, d\) of rollout_start, z \(N, 3\) and d \(N, 8\)"):
            m.rollout_step(carry, a)
    with pytest.raises(ValueError, match="control_dim = 0"):
        model().rollout_step((z, d), None)


def test_gradients_reach_every_parameter():
    m = model(likelihood="gaussian")
    m.elbo(torch.randn(2, 5, 5, dtype=torch.float64)).loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


# -- protocol: posterior, impute, forecast, sample ----------------------------------------------------------
def test_impute_keeps_observed_entries_and_fills_the_rest():
    m = model()
    x = binary(2, 8)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[:, 2:4] = False
    imp = m.impute(x, mask, num_samples=16, generator=gen())
    assert imp.mean.shape == imp.std.shape == imp.probs.shape == (2, 8, 5)
    assert imp.samples.shape == (16, 2, 8, 5)
    assert torch.equal(imp.mean[mask], x[mask]) and (imp.std[mask] == 0).all()
    assert torch.equal(imp.samples[:, mask], x[mask].expand(16, -1, -1))
    gap = ~mask[..., None].expand_as(x)
    assert ((imp.mean[gap] > 0) & (imp.mean[gap] < 1)).all() and (imp.std[gap] > 0).all()
    assert set(imp.samples[:, gap].unique().tolist()) <= {0.0, 1.0}


def test_forecast_and_sample_shapes_and_seeding():
    m = model()
    x = binary(3, 6)
    fc = m.forecast(x, 4, num_samples=10, generator=gen(1))
    assert fc.samples.shape == (10, 3, 4, 5) and fc.mean.shape == fc.probs.shape == fc.std.shape == (3, 4, 5)
    assert fc.quantile(torch.tensor([0.1, 0.9])).shape == (2, 3, 4, 5)
    assert torch.equal(fc.samples, m.forecast(x, 4, num_samples=10, generator=gen(1)).samples)
    s = m.sample(7, batch_size=2, generator=gen())
    assert s.states.shape == (2, 7, 3) and s.deterministic.shape == (2, 7, 8) and s.observations.shape == (2, 7, 5)
    post = m.smooth(x, num_samples=5, generator=gen())
    assert post.states.shape == (5, 3, 6, 3) and post.means.shape == post.stds.shape == (3, 6, 3)
    assert post.log_weights.shape == (5, 3)


def test_model_with_inputs_needs_them():
    m = model(control_dim=2, likelihood="gaussian")
    x, u = torch.randn(2, 5, 5, dtype=torch.float64), torch.randn(2, 5, 2, dtype=torch.float64)
    assert m.bound(x, u=u).elbo.shape == (2,)
    fc = m.forecast(x, 3, u_future=torch.randn(2, 3, 2, dtype=torch.float64), num_samples=4, u=u)
    assert fc.samples.shape == (4, 2, 3, 5) and fc.probs is None
    with pytest.raises(ValueError, match="u of shape"):
        m.bound(x)
    with pytest.raises(ValueError, match=r"u_future.*\(2, 3, 2\)"):
        m.forecast(x, 3, u=u)


# -- errors ---------------------------------------------------------------------------------------------------
def test_forecast_takes_the_protocol_order_and_refuses_a_count_as_u_future():
    """forecast(x_context, horizon, u_future=None, num_samples=...): the issue's
    ``forecast(x, horizon, num_samples)`` read positionally puts the count in u_future; that is
    refused by name for models with and without inputs, and the keyword call works."""
    x = binary(2, 4)
    for m in (model(), model(control_dim=2)):
        with pytest.raises(ValueError, match=r"u_future must be None or a tensor of shape \(B, H, k\).*got 5.*num_samples="):
            m.forecast(x, 3, 5)
    fc = model().forecast(x, 3, num_samples=5, generator=gen())
    assert fc.samples.shape == (5, 2, 3, 5)


def test_bad_inputs_raise_value_errors_naming_the_argument():
    m = model()
    x = binary(2, 4)
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, 5\).*\(2, 4, 3\)"):
        m.elbo(x[..., :3])
    with pytest.raises(ValueError, match=r"mask must have shape"):
        m.elbo(x, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"u \(previous frames"):
        m.elbo(x, u=torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match="num_samples"):
        m.log_likelihood(x, num_samples=0)
    with pytest.raises(ValueError, match="chunk_size"):
        m.log_likelihood(x, chunk_size=0)
    with pytest.raises(ValueError, match="horizon"):
        m.forecast(x, 0)
    with pytest.raises(ValueError, match="control_dim = 0"):
        m.sample(3, u=torch.zeros(1, 3, 5))
    with pytest.raises(ValueError, match="inference network was built for 'smooth'"):
        m.filter(x)
    with pytest.raises(ValueError, match="method must be"):
        m.impute(x, method="both")


def test_default_iwae_chunks_bound_the_memory(monkeypatch):
    """The default chunk holds at most CHUNK_STEPS sequence-steps, so long sequences get fewer samples per chunk."""
    import seqlvm.models.srnn as srnn_module

    m = model()
    seen = []
    run = m._run
    monkeypatch.setattr(srnn_module, "CHUNK_STEPS", 60)
    monkeypatch.setattr(m, "_run", lambda x, o, u, s, g: seen.append(s) or run(x, o, u, s, g))
    m.log_likelihood(binary(2, 10), num_samples=7, generator=gen())
    assert seen == [3, 3, 1]

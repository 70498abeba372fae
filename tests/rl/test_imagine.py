"""imagine: seeded determinism, the (B, P, H) layout against a linear model whose rollout is known
in closed form, the shared context, and errors."""

from __future__ import annotations

import pytest
import torch

from seqlvm.models import LGSSM, LGSSMConfig
from seqlvm.rl import imagine


def integrator(noise: float = 1e-6) -> LGSSM:
    """z' = z + u + N(0, noise I), x = z + N(0, noise I), a vague z_0: the imagined latents are the
    context's last observation plus the running sum of the actions, up to the noise."""
    model = LGSSM(LGSSMConfig(state_dim=2, obs_dim=2, control_dim=2)).double()
    eye = torch.eye(2, dtype=torch.float64)
    model.A, model.B, model.C = eye, eye.clone(), eye.clone()
    model.Q, model.R, model.P0 = noise * eye, noise * eye, 100.0 * eye
    return model


def test_layout_follows_each_sequences_actions_and_context():
    model = integrator()
    B, T, H, P = 3, 4, 5, 2
    x = torch.arange(B, dtype=torch.float64)[:, None, None].expand(B, T, 2).clone()  # sequence b sits at (b, b)
    u = torch.zeros(B, T, 2, dtype=torch.float64)
    actions = torch.randn(B, H, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    im = imagine(model, x, actions, P, u_context=u, generator=torch.Generator().manual_seed(1))
    assert im.observations.shape == (B, P, H, 2) and im.latents.shape == (B, P, H, 2) and im.log_probs.shape == (B, P, H)
    expected = x[:, -1, None, None, :] + actions.cumsum(1)[:, None]
    torch.testing.assert_close(im.latents, expected.expand(B, P, H, 2), atol=0.02, rtol=0)
    torch.testing.assert_close(im.observations, im.latents)
    assert not im.latents.requires_grad


def test_a_shared_context_is_broadcast_to_every_action_sequence():
    model = integrator()
    x = torch.full((1, 3, 2), 5.0, dtype=torch.float64)
    actions = torch.stack([torch.ones(4, 2), -torch.ones(4, 2)]).double()
    im = imagine(model, x, actions, 3, u_context=torch.zeros(1, 3, 2, dtype=torch.float64))
    steps = torch.arange(1, 5, dtype=torch.float64)[:, None]
    torch.testing.assert_close(im.latents[0], (5.0 + steps).expand(3, 4, 2), atol=0.02, rtol=0)
    torch.testing.assert_close(im.latents[1], (5.0 - steps).expand(3, 4, 2), atol=0.02, rtol=0)


def test_same_seed_same_imagination_and_particles_differ():
    model = integrator(noise=0.5)
    x, u = torch.zeros(2, 3, 2, dtype=torch.float64), torch.zeros(2, 3, 2, dtype=torch.float64)
    actions = torch.zeros(2, 4, 2, dtype=torch.float64)
    first, again, other = (
        imagine(model, x, actions, 4, u, torch.Generator().manual_seed(seed)) for seed in (3, 3, 4)
    )
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(first.latents, other.latents)
    assert not torch.allclose(first.latents[:, 0], first.latents[:, 1])



def test_without_noise_every_particle_follows_the_mean_path():
    """With noise = 0.5 the draws spread widely; without noise the latents are the filtered mean
    plus the running sum of the actions, whatever the seed, with log_probs 0."""
    model = integrator(noise=0.5)
    x = torch.full((2, 3, 2), 1.0, dtype=torch.float64)
    u = torch.zeros(2, 3, 2, dtype=torch.float64)
    actions = torch.randn(2, 4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    runs = [imagine(model, x, actions, 1, u, torch.Generator().manual_seed(seed), noise=False) for seed in (3, 4)]
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        filtered = model.filter(x, u=u).means[:, -1]
    torch.testing.assert_close(runs[0].latents[:, 0], filtered[:, None] + actions.cumsum(1))
    assert bool((runs[0].log_probs == 0).all())


def test_bad_input_raises():
    model = integrator()
    x, u = torch.zeros(2, 3, 2, dtype=torch.float64), torch.zeros(2, 3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"actions must have shape \(B, H >= 1, A = control_dim = 2\); got \(2, 4, 3\)"):
        imagine(model, x, torch.zeros(2, 4, 3), 1, u)
    with pytest.raises(ValueError, match=r"actions must have shape \(B, H, A\); got \(4, 2\)"):
        imagine(model, x, torch.zeros(4, 2), 1, u)
    with pytest.raises(ValueError, match=r"x_context must have shape \(3 or 1, T, \*event\); got \(2, 3, 2\)"):
        imagine(model, x, torch.zeros(3, 4, 2), 1, u)
    with pytest.raises(ValueError, match="num_particles must be an int >= 1; got 0"):
        imagine(model, x, torch.zeros(2, 4, 2), 0, u)

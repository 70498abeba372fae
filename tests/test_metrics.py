"""CRPS, MAE and the affine-fit R² against their definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqlvm.metrics import affine_r2, crps_gaussian, crps_samples, mae


def test_crps_gaussian_matches_the_integral_definition():
    """CRPS(F, y) = integral of (F(x) - 1[x >= y])^2 dx, by quadrature on a fine grid."""
    mean, std, y = torch.tensor(0.3, dtype=torch.float64), torch.tensor(1.7, dtype=torch.float64), torch.tensor(-1.1, dtype=torch.float64)
    grid = torch.linspace(-20, 20, 400001, dtype=torch.float64)
    F = torch.distributions.Normal(mean, std).cdf(grid)
    integral = torch.trapezoid((F - (grid >= y).double()) ** 2, grid)
    torch.testing.assert_close(crps_gaussian(mean, std, y), integral, atol=1e-4, rtol=0)  # the jump at y costs O(grid step)


def test_crps_samples_is_the_empirical_crps():
    # One draw: the absolute error. Two draws a < b: E|X - y| - |a - b| / 4.
    y = torch.tensor([0.5])
    assert crps_samples(torch.tensor([[2.0]]), y).item() == pytest.approx(1.5)
    two = torch.tensor([[0.0], [3.0]])
    assert crps_samples(two, y).item() == pytest.approx((0.5 + 2.5) / 2 - 3.0 / 4)
    # Brute-force pairwise mean on random ensembles, any order.
    s, t = torch.randn(37, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    brute = (s - t).abs().mean(0) - 0.5 * (s[:, None] - s[None]).abs().mean((0, 1))
    torch.testing.assert_close(crps_samples(s, t), brute)


def test_crps_samples_converges_to_the_gaussian_value():
    g = torch.Generator().manual_seed(0)
    s = 2.0 + 0.5 * torch.randn(200000, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(crps_samples(s, y), crps_gaussian(torch.tensor(2.0), torch.tensor(0.5), y), atol=5e-3, rtol=0)


def test_mae_and_errors():
    assert torch.equal(mae(torch.tensor([1.0, -2.0]), torch.tensor([0.0, 1.0])), torch.tensor([1.0, 3.0]))
    with pytest.raises(ValueError, match="same shape"):
        mae(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match=r"samples must have shape \(S, \*truth.shape\)"):
        crps_samples(torch.zeros(5, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="std must be > 0"):
        crps_gaussian(torch.zeros(2), torch.tensor([1.0, 0.0]), torch.zeros(2))


def test_affine_r2_matches_numpy_least_squares():
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 50, 3, generator=g)
    targets = latents @ torch.randn(3, 2, generator=g) + 0.3 * torch.randn(2, 50, 2, generator=g)
    design = np.c_[latents.reshape(-1, 3).numpy(), np.ones(100)]
    y = targets.reshape(-1, 2).numpy().astype(np.float64)
    res = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    expected = 1 - (res**2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(affine_r2(latents, targets).numpy(), expected, rtol=1e-6)
    exact = latents @ torch.randn(3, 2, generator=g) + 5.0
    np.testing.assert_allclose(affine_r2(latents, exact).numpy(), 1.0, atol=1e-10)
    with pytest.raises(ValueError, match="leading shape"):
        affine_r2(latents, targets[:, :10])

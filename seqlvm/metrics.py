"""Metrics as plain functions over tensors: CRPS (from samples or a Gaussian) and MAE of forecasts,
and the affine-fit R² that compares learned latents with ground-truth states.

The forecast metrics reduce nothing: they return one value per forecast entry, so callers average
over the axes they mean (series, horizon, dimension). Lower is better for all three.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def crps_samples(samples: Tensor, truth: Tensor) -> Tensor:
    """Continuous ranked probability score of an ensemble, one value per entry of ``truth``.

    ``CRPS(F, y) = E|X - y| - 1/2 E|X - X'|`` with X, X' independent draws from F, estimated from
    the S samples (the plug-in estimator of the empirical distribution). With the samples sorted,
    ``E|X - X'| = 2 / S^2 * sum_i (2i - S - 1) x_(i)``, so the cost is O(S log S) per entry.
    samples (S, *shape), truth (*shape) -> (*shape).
    """
    if not isinstance(samples, Tensor) or not isinstance(truth, Tensor) or samples.shape[1:] != truth.shape:
        got = (tuple(samples.shape) if isinstance(samples, Tensor) else type(samples).__name__,
               tuple(truth.shape) if isinstance(truth, Tensor) else type(truth).__name__)
        raise ValueError(f"crps_samples: samples must have shape (S, *truth.shape); got samples, truth = {got}")
    S = samples.shape[0]
    if S < 1:
        raise ValueError("crps_samples: samples must hold at least one draw; got S = 0")
    spread_to_truth = (samples - truth).abs().mean(0)
    ranks = torch.arange(1, S + 1, dtype=samples.dtype, device=samples.device)
    weights = (2 * ranks - S - 1).reshape((S,) + (1,) * truth.dim())
    pairwise = 2.0 / S**2 * (weights * samples.sort(0).values).sum(0)
    return spread_to_truth - 0.5 * pairwise


def crps_gaussian(mean: Tensor, std: Tensor, truth: Tensor) -> Tensor:
    """CRPS of N(mean, std^2) in closed form: ``std [w (2 Phi(w) - 1) + 2 phi(w) - 1/sqrt(pi)]``,
    ``w = (y - mean) / std``. All arguments broadcast; std must be > 0."""
    if torch.any(std <= 0):
        raise ValueError(f"crps_gaussian: std must be > 0; got min {std.min().item()}")
    w = (truth - mean) / std
    normal = torch.distributions.Normal(torch.zeros_like(w), torch.ones_like(w))
    return std * (w * (2 * normal.cdf(w) - 1) + 2 * normal.log_prob(w).exp() - 1 / math.sqrt(math.pi))


def mae(prediction: Tensor, truth: Tensor) -> Tensor:
    """Absolute error ``|prediction - truth|`` per entry (a forecast's median minimises its mean)."""
    if prediction.shape != truth.shape:
        raise ValueError(
            f"mae: prediction and truth must have the same shape; got {tuple(prediction.shape)} and {tuple(truth.shape)}"
        )
    return (prediction - truth).abs()


def affine_r2(latents: Tensor, targets: Tensor) -> Tensor:
    """R² of the least-squares affine map from learned latents to true states, per target dimension.

    Latent spaces are identifiable only up to such a map (a KVAE's codes, a GTM-SM's states), so
    this is how they are compared with the truth: fit ``targets ≈ latents @ W + b`` and return
    ``1 − SS_res / SS_tot`` of each target column. latents (..., d), targets (..., k) with the same
    leading shape, flattened to N rows; computed in float64. Returns (k,); 1 is a perfect fit.
    """
    if latents.shape[:-1] != targets.shape[:-1]:
        raise ValueError(
            f"affine_r2: latents {tuple(latents.shape)} and targets {tuple(targets.shape)} must share "
            "their leading shape (one latent per target row)"
        )
    x = latents.reshape(-1, latents.shape[-1]).double()
    y = targets.reshape(-1, targets.shape[-1]).double().to(x.device)
    if x.shape[0] <= x.shape[1] + 1:
        raise ValueError(f"affine_r2: got {x.shape[0]} rows; expected more than latent size + 1 = {x.shape[1] + 1}")
    design = torch.cat([x, torch.ones_like(x[:, :1])], 1)
    residual = y - design @ torch.linalg.lstsq(design, y).solution
    return 1.0 - residual.square().sum(0) / (y - y.mean(0)).square().sum(0)

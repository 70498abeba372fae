"""The honesty check of SRNN's IWAE estimator: data from a known LGSSM, whose exact log-likelihood
the Kalman filter gives.

An SRNN with a Gaussian output (smoothing inference, Resq) is trained on sequences drawn from a
2-d linear-Gaussian state-space model; on held-out sequences its IWAE bound (K samples) must come
within 1% of the exact mean log-likelihood, and must not exceed it by more than its Monte-Carlo
error (a bound above the truth would mean a biased estimator, not a good model). The error is the
standard error over the held-out sequences of (IWAE_i - exact_i).

The same model's forecasts (sample paths after a 25-step context) are compared with the exact
Kalman predictive moments of the true model (``seqlvm.kalman.forecast``).

Run:  python benchmarks/srnn_exact.py            (about 2 minutes on one CPU thread)
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from seqlvm.kalman import LGSSMParams, forecast, kalman_filter, sample_prior
from seqlvm.models import SRNN, SRNNConfig
from seqlvm.train.config import TrainConfig
from seqlvm.train.schedule import kl_weight


def true_model() -> LGSSMParams:
    """A damped rotation observed through a mixing matrix with diagonal noise."""
    angle = 0.3
    rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=torch.float64)
    return LGSSMParams(
        A=0.95 * rot,
        C=torch.tensor([[1.0, 0.5], [-0.3, 1.0]], dtype=torch.float64),
        Q=0.1 * torch.eye(2, dtype=torch.float64),
        R=torch.diag(torch.tensor([0.1, 0.2], dtype=torch.float64)),
        m0=torch.zeros(2, dtype=torch.float64),
        P0=torch.eye(2, dtype=torch.float64),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=2000, help="training sequences")
    ap.add_argument("--test", type=int, default=200, help="held-out sequences")
    ap.add_argument("--length", type=int, default=25)
    ap.add_argument("--steps", type=int, default=3000, help="optimiser steps")
    ap.add_argument("--iwae-samples", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    params = true_model()
    x_train = sample_prior(params, args.length, args.train, generator=gen).observations.float()
    x_test = sample_prior(params, args.length, args.test, generator=gen).observations
    exact = kalman_filter(params, x_test).log_likelihood  # (N,) float64

    model = SRNN(SRNNConfig(
        obs_dim=2, state_dim=4, deterministic_dim=32, inference_dim=32, feature_dims=[32],
        hidden_dim=32, output_hidden_dims=[32], likelihood="gaussian",
    ))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, eps=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps, eta_min=1e-4)
    warmup = TrainConfig(kl_warmup_steps=args.steps // 5, kl_weight_start=0.2)
    start = time.perf_counter()
    for step in range(args.steps):
        idx = torch.randint(0, args.train, (64,), generator=gen)
        model.kl_weight = kl_weight(warmup, step)
        out = model.elbo(x_train[idx])
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if (step + 1) % 500 == 0:
            print(f"step {step + 1}: train ELBO per sequence {out.terms['elbo'].item():.3f}", flush=True)
    train_seconds = time.perf_counter() - start

    model.eval()
    x_eval = x_test.float()
    with torch.no_grad():
        # The ELBO and IWAE_1 averaged over 20 draws per sequence, so that their expectations
        # (equal in theory) are measured, not one noisy draw.
        elbo = torch.stack([model.bound(x_eval, generator=gen).elbo for _ in range(20)]).double().mean(0)
        iwae1 = torch.stack([model.log_likelihood(x_eval, num_samples=1, generator=gen) for _ in range(20)]).double().mean(0)
        iwae = model.log_likelihood(x_eval, num_samples=args.iwae_samples, generator=gen).double()

    def gap(v: torch.Tensor) -> dict[str, float]:
        """Mean of (v_i - exact_i) over the held-out sequences and its standard error."""
        g = v - exact
        return {"minus_exact": g.mean().item(), "stderr": (g.std() / math.sqrt(args.test)).item()}

    iw = gap(iwae)
    x_fc = sample_prior(params, args.length + 10, 100, generator=gen).observations
    with torch.no_grad():
        fc = model.forecast(x_fc[:, : args.length].float(), 10, num_samples=500, generator=gen)
    ref = forecast(params, x_fc[:, : args.length], 10)
    ref_std = ref.obs_covs.diagonal(dim1=-2, dim2=-1).sqrt()
    rel = iw["minus_exact"] / exact.mean().abs().item()
    result = {
        "exact_mean_log_lik": exact.mean().item(),
        "elbo_mean": elbo.mean().item(), "elbo": gap(elbo),
        "iwae1_mean": iwae1.mean().item(), "iwae1": gap(iwae1),
        f"iwae{args.iwae_samples}_mean": iwae.mean().item(), f"iwae{args.iwae_samples}": iw,
        "relative_gap": rel,
        "within_1_percent": abs(rel) <= 0.01,
        "not_above_exact_beyond_error": iw["minus_exact"] <= 2 * iw["stderr"],
        "forecast_mean_abs_error_vs_exact_by_horizon": (fc.mean.double() - ref.obs_means).abs().mean((0, 2)).tolist(),
        "forecast_std_by_horizon": fc.std.double().mean((0, 2)).tolist(),
        "exact_std_by_horizon": ref_std.mean((0, 2)).tolist(),
        "train_seconds": train_seconds,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

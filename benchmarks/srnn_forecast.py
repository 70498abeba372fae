"""Forecasting a real series: SRNN against an LGSSM fitted by EM, by CRPS and MAE.

Data: yearly sunspot numbers 1700-2008 (``statsmodels.datasets.sunspots``, shipped with the
package). Both models see the same split: they are fitted on 1700-1949 (250 years, standardised
with that part's mean and std), then backtested from every second year 1950-1998 as forecast
origin, each time with the last 60 years before the origin as context (the SRNN's training window
length: it was trained on windows that start from zero states) and a horizon of 10 years.
Scores are in sunspot units, averaged over origins and horizons:

- CRPS: SRNN from its sample paths (``seqlvm.metrics.crps_samples``), the LGSSM in closed form
  from its exact Gaussian predictive (``crps_gaussian``);
- MAE of the predictive median (the point forecast that minimises it).

Run:  python benchmarks/srnn_forecast.py          (a few minutes on one CPU thread)
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from seqlvm.metrics import crps_gaussian, crps_samples, mae
from seqlvm.models import LGSSM, SRNN, LGSSMConfig, SRNNConfig
from seqlvm.train.config import TrainConfig
from seqlvm.train.schedule import kl_weight


def load_series() -> torch.Tensor:
    import statsmodels.api as sm

    data = sm.datasets.sunspots.load_pandas().data
    return torch.tensor(data["SUNACTIVITY"].to_numpy(), dtype=torch.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-years", type=int, default=250)
    ap.add_argument("--horizon", type=int, default=10)
    ap.add_argument("--window", type=int, default=60, help="SRNN training window and context length of both models")
    ap.add_argument("--steps", type=int, default=2500, help="SRNN optimiser steps")
    ap.add_argument("--samples", type=int, default=200, help="SRNN forecast sample paths")
    ap.add_argument("--lgssm-state", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    y = load_series()
    n, H = args.train_years, args.horizon
    mean, std = y[:n].mean(), y[:n].std()
    z = ((y - mean) / std)[None, :, None]  # (1, T, 1) standardised
    origins = list(range(n, y.numel() - H + 1, 2))
    truth = torch.stack([y[o : o + H] for o in origins])  # (O, H)

    # LGSSM by EM on the training part.
    start = time.perf_counter()
    lgssm = LGSSM(LGSSMConfig(state_dim=args.lgssm_state, obs_dim=1)).double()
    lgssm.fit_em(z[:, :n], num_iters=300, tol=1e-7)
    lg_mean, lg_std = [], []
    for o in origins:
        fc = lgssm.forecast(z[:, o - args.window : o], H)
        lg_mean.append(fc.mean[0, :, 0])
        lg_std.append(fc.std[0, :, 0])
    lg_mean, lg_std = mean + std * torch.stack(lg_mean), std * torch.stack(lg_std)
    lgssm_seconds = time.perf_counter() - start

    # SRNN on overlapping windows of the training part.
    start = time.perf_counter()
    windows = z[0, :n].unfold(0, args.window, 1).permute(0, 2, 1).float()  # (N, window, 1)
    srnn = SRNN(SRNNConfig(
        obs_dim=1, state_dim=4, deterministic_dim=32, inference_dim=32, feature_dims=[32],
        hidden_dim=32, output_hidden_dims=[32], likelihood="gaussian",
    ))
    opt = torch.optim.Adam(srnn.parameters(), lr=3e-3, eps=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps, eta_min=1e-4)
    warmup = TrainConfig(kl_warmup_steps=args.steps // 5, kl_weight_start=0.2)
    for step in range(args.steps):
        idx = torch.randint(0, windows.shape[0], (32,), generator=gen)
        srnn.kl_weight = kl_weight(warmup, step)
        loss = srnn.elbo(windows[idx]).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(srnn.parameters(), 1.0)
        opt.step()
        sched.step()
    srnn.eval()
    paths = torch.stack([
        srnn.forecast(z[:, o - args.window : o].float(), H, num_samples=args.samples, generator=gen).samples[:, 0, :, 0]
        for o in origins
    ], 1).double()  # (S, O, H)
    paths = mean + std * paths
    srnn_seconds = time.perf_counter() - start

    result = {
        "origins": len(origins), "horizon": H,
        "lgssm": {"crps": crps_gaussian(lg_mean, lg_std, truth).mean().item(),
                  "mae": mae(lg_mean, truth).mean().item(), "seconds": lgssm_seconds},
        "srnn": {"crps": crps_samples(paths, truth).mean().item(),
                 "mae": mae(paths.median(0).values, truth).mean().item(), "seconds": srnn_seconds},
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

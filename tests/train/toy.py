"""A small real model and its data for the Trainer's tests: independent scalar linear-Gaussian chains per dimension.

For each of the D dimensions, ``z_t = a z_{t-1} + b + (W u_t) + N(0, q)``, ``x_t = z_t + N(0, r)``,
``z_1 ~ N(m0, p0)``. The log-likelihood is exact (a scalar Kalman filter, vectorised over B and D,
skipping the update where ``mask`` is False), so its gradients are those of a genuine model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from seqlvm.kalman.predict import PriorSamples
from seqlvm.models import ELBO, Forecast, Imputation, SequenceModel


@dataclass
class ToyConfig:
    obs_dim: int | None = None
    control_dim: int = 0


class ToyChains(SequenceModel):
    config_class = ToyConfig

    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        d = config.obs_dim
        self.transition = nn.Parameter(torch.full((d,), 0.5))
        self.offset = nn.Parameter(torch.zeros(d))
        self.control = nn.Parameter(0.1 * torch.randn(d, config.control_dim))
        self.log_q = nn.Parameter(torch.zeros(d))
        self.log_r = nn.Parameter(torch.zeros(d))
        self.init_mean = nn.Parameter(torch.zeros(d))

    def _drive(self, u: Tensor | None, shape: torch.Size) -> Tensor:
        drift = self.offset.expand(shape)
        return drift if u is None else drift + u @ self.control.T

    def filter(self, x: Tensor, mask: Tensor | None = None, u: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Filtered means and variances (B, T, D) and log p(x) per sequence (B,)."""
        if mask is None:
            mask = ~torch.isnan(x)
        elif mask.dim() == 2:
            mask = mask.unsqueeze(-1).expand_as(x)
        x = torch.where(mask, x, torch.zeros_like(x))
        drive = self._drive(u, x.shape)
        q, r = self.log_q.exp(), self.log_r.exp()
        m, p = self.init_mean.expand_as(x[:, 0]), torch.ones_like(x[:, 0])
        means, variances, ll = [], [], x.new_zeros(x.shape[0])
        for t in range(x.shape[1]):
            if t:
                m = self.transition * m + drive[:, t]
                p = self.transition**2 * p + q
            s = p + r
            resid = x[:, t] - m
            step_ll = -0.5 * (math.log(2 * math.pi) + s.log() + resid**2 / s)
            ll = ll + torch.where(mask[:, t], step_ll, torch.zeros_like(step_ll)).sum(-1)
            gain = torch.where(mask[:, t], p / s, torch.zeros_like(p))
            m, p = m + gain * resid, (1 - gain) * p
            means.append(m)
            variances.append(p)
        return torch.stack(means, 1), torch.stack(variances, 1), ll

    def log_likelihood(self, x: Tensor, mask: Tensor | None = None, u: Tensor | None = None) -> Tensor:
        return self.filter(x, mask, u)[2]

    def elbo(self, x: Tensor, mask: Tensor | None = None, u: Tensor | None = None) -> ELBO:
        ll = self.log_likelihood(x, mask, u) / x.shape[1]
        return ELBO(loss=-ll.mean(), terms={"log_likelihood": ll.mean()})

    def impute(self, x: Tensor, mask: Tensor, u: Tensor | None = None, method: str = "filter") -> Imputation:
        means, variances, _ = self.filter(x, mask, u)
        return Imputation(mean=means, std=(variances + self.log_r.exp()).sqrt())

    def forecast(self, x_context: Tensor, horizon: int, u_future: Tensor | None = None,
                 num_samples: int = 0, generator: torch.Generator | None = None,
                 mask: Tensor | None = None, u: Tensor | None = None) -> Forecast:
        means, variances, _ = self.filter(x_context, mask, u)
        m, p = means[:, -1], variances[:, -1]
        drive = self._drive(u_future, torch.Size((x_context.shape[0], horizon, x_context.shape[-1])))
        out_m, out_s = [], []
        for t in range(horizon):
            m = self.transition * m + drive[:, t]
            p = self.transition**2 * p + self.log_q.exp()
            out_m.append(m)
            out_s.append((p + self.log_r.exp()).sqrt())
        return Forecast(mean=torch.stack(out_m, 1), std=torch.stack(out_s, 1))

    def sample(self, num_steps: int, batch_size: int = 1, u: Tensor | None = None,
               generator: torch.Generator | None = None) -> PriorSamples:
        d = self.config.obs_dim
        drive = self._drive(u, torch.Size((batch_size, num_steps, d)))
        z = self.init_mean + torch.randn(batch_size, d, generator=generator)
        states = []
        for t in range(num_steps):
            if t:
                z = self.transition * z + drive[:, t] + self.log_q.exp().sqrt() * torch.randn(batch_size, d, generator=generator)
            states.append(z)
        states_t = torch.stack(states, 1)
        obs = states_t + self.log_r.exp().sqrt() * torch.randn(states_t.shape, generator=generator)
        return PriorSamples(states_t, obs)


def make_toy(seed: int = 0, obs_dim: int = 2, control_dim: int = 0) -> ToyChains:
    """A ToyChains with parameters drawn from ``seed``."""
    torch.manual_seed(seed)
    return ToyChains(ToyConfig(obs_dim=obs_dim, control_dim=control_dim))


class Sequences(Dataset):
    """Items ``{"x": (T, D)}`` (and ``"u": (T, A)``) from a seeded AR(1) process."""

    def __init__(self, n: int = 24, T: int = 10, D: int = 2, A: int = 0, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.u = torch.randn(n, T, A, generator=g) if A else None
        z = torch.zeros(n, T, D)
        for t in range(1, T):
            z[:, t] = 0.8 * z[:, t - 1] + 0.3 * torch.randn(n, D, generator=g)
            if self.u is not None:
                z[:, t] += self.u[:, t].sum(-1, keepdim=True)
        self.x = z + 0.1 * torch.randn(n, T, D, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"x": self.x[i]}
        if self.u is not None:
            item["u"] = self.u[i]
        return item

"""Small heads that turn features into distributions."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from seqlvm.nn.frames import glorot_init

__all__ = ["GaussianHead"]


class GaussianHead(nn.Module):
    """Features ``(..., F)`` -> diagonal Gaussian ``N(mean, diag var)`` over ``(..., D)``.

    ``mean = W_m h + b_m``. With ``max_var`` set, ``var = min_var + (max_var - min_var) *
    sigmoid(W_v h + b_v)``: the variance is bounded above (the KVAE caps its encoder noise at the
    emission noise R, so the VAE's noise cannot swamp the dynamics); without it,
    ``var = softplus(W_v h + b_v) + min_var``. The floor ``min_var`` keeps log-densities finite
    where the sigmoid or softplus underflows to 0.
    """

    def __init__(self, in_features: int, out_features: int, max_var: float | None = None, min_var: float = 1e-6) -> None:
        super().__init__()
        if not 0 < min_var < math.inf:
            raise ValueError(f"GaussianHead: min_var must be a finite number > 0; got {min_var!r}")
        if max_var is not None and not min_var < max_var < math.inf:
            raise ValueError(f"GaussianHead: max_var must be finite and exceed min_var = {min_var}, or be None; got {max_var!r}")
        self.mean = nn.Linear(in_features, out_features)
        self.raw_var = nn.Linear(in_features, out_features)
        self.max_var, self.min_var = max_var, min_var
        glorot_init(self)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """h (..., F) -> mean (..., D), var (..., D)."""
        raw = self.raw_var(h)
        if self.max_var is not None:
            var = self.min_var + (self.max_var - self.min_var) * torch.sigmoid(raw)
        else:
            var = nn.functional.softplus(raw) + self.min_var
        return self.mean(h), var

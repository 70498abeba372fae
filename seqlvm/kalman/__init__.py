"""Differentiable, batched Kalman filtering and smoothing: pure functions over tensors.

Model (0-based time, column vectors)::

    z_0 ~ N(m0, P0),  z_t = A_t z_{t-1} + B_t u_t + N(0, Q_t),  x_t = C_t z_t + N(0, R_t)

Functions: :func:`kalman_filter`, :func:`kalman_smoother`, :func:`log_likelihood` (with its
gradient by Fisher's identity), :func:`sample_posterior`,
:func:`sample_prior`, :func:`forecast`; each takes an :class:`LGSSMParams`. Filter and smoother
accept ``method="sequential" | "parallel"``.
"""

from seqlvm.kalman.filter import FilterResult, kalman_filter
from seqlvm.kalman.likelihood import log_likelihood
from seqlvm.kalman.params import LGSSMParams
from seqlvm.kalman.predict import KalmanForecast, PriorSamples, forecast, sample_prior
from seqlvm.kalman.smoother import PosteriorSamples, SmootherResult, kalman_smoother, sample_posterior

__all__ = [
    "LGSSMParams",
    "FilterResult",
    "SmootherResult",
    "PosteriorSamples",
    "PriorSamples",
    "KalmanForecast",
    "kalman_filter",
    "kalman_smoother",
    "log_likelihood",
    "sample_posterior",
    "sample_prior",
    "forecast",
]

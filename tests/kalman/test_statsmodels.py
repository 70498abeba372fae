"""Oracle test: seqlvm.kalman against statsmodels' state-space Kalman filter and smoother.

Real series shipped with statsmodels, fixed parameters, float64, agreement to 1e-8 relative to
each time step's scale. The worst error measured is ~3e-9, in the bivariate trend model's
smoothed covariances (its slopes are weakly identified), where both seqlvm methods agree with
each other to ~1e-13 and a textbook filter/RTS smoother lands at the same distance from
statsmodels.

Convention map (statsmodels -> seqlvm), checked on these models:

* ``transition`` T = A, ``design`` Z = C, ``obs_cov`` H = R, and with ``selection`` = I the
  ``state_cov`` is Q itself (statsmodels' state noise is R_sel eta with Cov(eta) = state_cov).
* ``initialize_known(a1, P1)`` is the prior of the FIRST state, exactly our (m0, P0): neither
  library applies a transition before the first observation.
* ``filtered_state[:, t]`` / ``filtered_state_cov[:, :, t]`` = E/Cov[z_t | x_{0:t}];
  ``predicted_state[:, t]`` = E[z_t | x_{0:t-1}] (column T is the out-of-sample forecast, dropped);
  ``smoothed_state_autocov[:, :, t]`` = Cov(z_{t+1}, z_t | x) for t < T-1, our ``cross_covs[:, t]``.
* ``llf_obs[t]`` = log p(x_t,obs | x_{0:t-1},obs), 0 at an all-missing step, like our
  ``step_log_likelihood``. NaN marks a missing entry in both libraries; a partly observed step
  updates on its observed entries only.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import pytest
import torch
from statsmodels.datasets import macrodata, nile
from statsmodels.tsa.statespace.kalman_smoother import KalmanSmoother

from seqlvm.kalman import LGSSMParams, kalman_filter, kalman_smoother

METHODS = ("sequential", "parallel")
RTOL = 1e-8


class Case(NamedTuple):
    """A fixed-parameter LGSSM and a real series (T, m), NaN where missing."""

    A: np.ndarray
    C: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    m0: np.ndarray
    P0: np.ndarray
    x: np.ndarray


def nile_local_level(missing: bool) -> Case:
    """Nile annual flow, 1871-1970 (T = 100): the local-level model with Durbin & Koopman's
    maximum-likelihood variances (R = 15099, Q = 1469.1). ``missing`` drops the years that they
    drop in their missing-data example (t = 20..39 and 60..79)."""
    x = nile.load_pandas().data["volume"].to_numpy(dtype=float)[:, None]
    if missing:
        x = x.copy()
        x[20:40] = x[60:80] = np.nan
    one = np.ones((1, 1))
    return Case(one, one, 1469.1 * one, 15099.0 * one, np.array([1000.0]), 1e6 * one, x)


def macro_local_linear_trend(missing: bool) -> Case:
    """US real GDP and real consumption, 1959Q1-2009Q3 (T = 203), as 100 * log: a bivariate
    local linear trend, state (level_gdp, level_cons, slope_gdp, slope_cons), correlated level
    shocks and correlated measurement noise (full Q and R, non-square C). ``missing`` removes
    consumption alone (t = 50..59), GDP alone (t = 100..104) and both (t = 150..152)."""
    x = 100 * np.log(macrodata.load_pandas().data[["realgdp", "realcons"]].to_numpy(dtype=float))
    if missing:
        x = x.copy()
        x[50:60, 1] = x[100:105, 0] = np.nan
        x[150:153] = np.nan
    eye, zero = np.eye(2), np.zeros((2, 2))
    A = np.block([[eye, eye], [zero, eye]])
    C = np.hstack([eye, zero])
    Q = np.block([[np.array([[0.4, 0.25], [0.25, 0.35]]), zero], [zero, 0.01 * eye]])
    R = np.array([[0.1, 0.03], [0.03, 0.08]])
    m0 = np.r_[x[0], 0.8, 0.8]
    return Case(A, C, Q, R, m0, np.diag([10.0, 10.0, 1.0, 1.0]), x)


CASES = {
    "nile": functools.partial(nile_local_level, missing=False),
    "nile-missing": functools.partial(nile_local_level, missing=True),
    "macro-llt": functools.partial(macro_local_linear_trend, missing=False),
    "macro-llt-missing": functools.partial(macro_local_linear_trend, missing=True),
}


@functools.cache
def case_and_oracle(name: str):
    """The case and statsmodels' smoother results for it (computed once per module run)."""
    case = CASES[name]()
    n, m = case.C.shape[1], case.C.shape[0]
    ks = KalmanSmoother(
        k_endog=m, k_states=n,
        design=case.C, obs_cov=case.R, transition=case.A, state_cov=case.Q, selection=np.eye(n),
    )  # fmt: skip
    ks.initialize_known(case.m0, case.P0)
    ks.bind(np.ascontiguousarray(case.x))
    return case, ks.smooth()


def params_of(case: Case) -> LGSSMParams:
    """Shared float64 LGSSMParams of a case."""
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    return LGSSMParams(t(case.A), t(case.C), t(case.Q), t(case.R), t(case.m0), t(case.P0))


def observations(case: Case, missing_as: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x (1, T, m) and mask for seqlvm: NaNs left in x (``"nan"``), or an explicit (1, T, m) mask
    with the missing entries of x overwritten by a huge finite value that must never leak
    (``"mask"``)."""
    x = torch.tensor(case.x, dtype=torch.float64)[None]
    if missing_as == "nan":
        return x, None
    mask = ~torch.isnan(x)
    return torch.where(mask, x, torch.full_like(x, 1e6)), mask


def assert_close(actual: torch.Tensor, expected: np.ndarray, what: str) -> None:
    """``actual`` matches ``expected`` to RTOL, relative to the largest entry of ``expected`` at
    the same time step (the leading axis): a scale per step, so that a large early covariance
    (P0 = 1e6 for the Nile) does not loosen the check at the later steps."""
    # np.array copies: statsmodels' arrays may be strided views or read-only.
    expected_t = torch.tensor(np.array(expected, dtype=np.float64))
    shapes = tuple(actual.shape), tuple(expected_t.shape)
    assert shapes[0] == shapes[1], f"{what}: shape {shapes[0]} != {shapes[1]}"
    if expected_t.ndim == 0:
        scale = expected_t.abs()
    else:
        scale = expected_t.abs().amax(dim=tuple(range(1, expected_t.ndim)), keepdim=True)
    err = (actual.detach() - expected_t).abs() / scale.clamp_min(torch.finfo(torch.float64).tiny)
    worst = int(err.argmax())
    got, want = actual.detach().flatten()[worst].item(), expected_t.flatten()[worst].item()
    assert float(err.max()) <= RTOL, (
        f"{what}: error {float(err.max()):.2e} relative to its step's scale (> {RTOL:g}) "
        f"at flat index {worst}: got {got!r}, expected {want!r}"
    )


def case_params():
    """(case, missing_as) pairs: the explicit-mask path is exercised where data are missing."""
    for name in CASES:
        for missing_as in ("nan", "mask") if "missing" in name else ("nan",):
            yield pytest.param(name, missing_as, id=f"{name}-{missing_as}")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("name", "missing_as"), list(case_params()))
def test_filter_matches_statsmodels(name: str, missing_as: str, method: str) -> None:
    """Log-likelihood (total and per step), filtered and one-step-predicted moments."""
    case, res = case_and_oracle(name)
    x, mask = observations(case, missing_as)
    f = kalman_filter(params_of(case), x, mask=mask, method=method)
    assert_close(f.log_likelihood[0], np.asarray(res.llf_obs.sum()), "log_likelihood")
    assert_close(f.step_log_likelihood[0], res.llf_obs, "step_log_likelihood")
    assert_close(f.means[0], res.filtered_state.T, "filtered means")
    assert_close(f.covs[0], res.filtered_state_cov.transpose(2, 0, 1), "filtered covs")
    assert_close(f.pred_means[0], res.predicted_state[:, :-1].T, "predicted means")
    predicted_covs = res.predicted_state_cov[..., :-1].transpose(2, 0, 1)
    assert_close(f.pred_covs[0], predicted_covs, "predicted covs")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("name", "missing_as"), list(case_params()))
def test_smoother_matches_statsmodels(name: str, missing_as: str, method: str) -> None:
    """Smoothed means, covariances and lag-one cross covariances Cov(z_{t+1}, z_t | x)."""
    case, res = case_and_oracle(name)
    x, mask = observations(case, missing_as)
    s = kalman_smoother(params_of(case), x, mask=mask, method=method)
    assert_close(s.means[0], res.smoothed_state.T, "smoothed means")
    assert_close(s.covs[0], res.smoothed_state_cov.transpose(2, 0, 1), "smoothed covs")
    assert_close(s.cross_covs[0], res.smoothed_state_autocov[..., :-1].transpose(2, 0, 1), "cross covs")

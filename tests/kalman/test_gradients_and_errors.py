"""gradcheck in float64 for filter and smoother, and the validation of bad input."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from seqlvm.kalman import LGSSMParams, forecast, kalman_filter, kalman_smoother, sample_posterior, sample_prior

DT = torch.float64


def _inputs(with_controls: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n, m, k, Bt, T = 2, 2, 1, 2, 4
    A = (0.5 * torch.randn(n, n, dtype=DT, generator=g)).requires_grad_()
    C = torch.randn(m, n, dtype=DT, generator=g).requires_grad_()
    Lq = (torch.eye(n, dtype=DT) + 0.1 * torch.randn(n, n, dtype=DT, generator=g)).tril().requires_grad_()
    Lr = (torch.eye(m, dtype=DT) + 0.1 * torch.randn(m, m, dtype=DT, generator=g)).tril().requires_grad_()
    m0 = torch.randn(n, dtype=DT, generator=g).requires_grad_()
    x = torch.randn(Bt, T, m, dtype=DT, generator=g).requires_grad_()
    B = torch.randn(n, k, dtype=DT, generator=g).requires_grad_() if with_controls else None
    u = torch.randn(Bt, T, k, dtype=DT, generator=g) if with_controls else None
    return A, C, Lq, Lr, m0, x, B, u


def _project(*outputs: torch.Tensor) -> torch.Tensor:
    """Three fixed random linear functionals of all outputs: a wrong gradient anywhere shows up
    in them (almost surely), at a fraction of the cost of the full Jacobian."""
    flat = torch.cat([o.reshape(-1) for o in outputs])
    w = torch.randn(3, flat.numel(), dtype=DT, generator=torch.Generator().manual_seed(123))
    return w @ flat


def _params(A, C, Lq, Lr, m0, B) -> LGSSMParams:
    n = A.shape[-1]
    return LGSSMParams(A, C, Lq @ Lq.T, Lr @ Lr.T, m0, torch.eye(n, dtype=DT), B)


@pytest.mark.parametrize("method", ["sequential", "parallel"])
@pytest.mark.parametrize("with_controls", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_gradcheck_filter_and_smoother(method: str, with_controls: bool, masked: bool) -> None:
    A, C, Lq, Lr, m0, x, B, u = _inputs(with_controls)
    mask = None
    if masked:
        mask = torch.ones(2, 4, 2, dtype=torch.bool)
        mask[0, 1] = False
        mask[1, 2, 0] = False
    leaves = [A, C, Lq, Lr, m0, x] + ([B] if with_controls else [])

    def run(*args):
        A_, C_, Lq_, Lr_, m0_, x_ = args[:6]
        B_ = args[6] if with_controls else None
        params = _params(A_, C_, Lq_, Lr_, m0_, B_)
        sm = kalman_smoother(params, x_, mask=mask, u=u, method=method)
        f = sm.filtered
        return _project(f.log_likelihood, f.means, f.covs, sm.means, sm.covs, sm.cross_covs)

    assert gradcheck(run, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradcheck_posterior_samples_and_forecast() -> None:
    A, C, Lq, Lr, m0, x, B, u = _inputs(False, seed=1)

    def run(A_, C_, Lq_, Lr_, m0_, x_):
        params = _params(A_, C_, Lq_, Lr_, m0_, None)
        draws = sample_posterior(params, x_, num_samples=2, generator=torch.Generator().manual_seed(0))
        fc = forecast(params, x_, 2)
        return _project(draws.samples, draws.log_prob, fc.obs_means, fc.obs_covs)

    assert gradcheck(run, [A, C, Lq, Lr, m0, x], eps=1e-6, atol=1e-6, rtol=1e-5)


def _good():
    n, m = 3, 2
    return LGSSMParams(torch.eye(n), torch.ones(m, n), torch.eye(n), torch.eye(m), torch.zeros(n), torch.eye(n))


@pytest.mark.parametrize(
    "change,x_shape,mask_shape,match",
    [
        ({"A": torch.ones(3, 2)}, (4, 5, 2), None, r"A must be square"),
        ({"Q": torch.ones(3, 2)}, (4, 5, 2), None, r"Q must have shape"),
        ({"R": torch.ones(3, 3)}, (4, 5, 2), None, r"R must have shape"),
        ({"C": torch.ones(2, 4)}, (4, 5, 2), None, r"C must have shape"),
        ({"A": torch.eye(3).expand(3, 3, 3)}, (4, 5, 2), None, r"A has batch size 3 but the data has 4"),
        ({"A": torch.eye(3).expand(4, 7, 3, 3)}, (4, 5, 2), None, r"A has 7 time steps but the data has 5"),
        ({"m0": torch.zeros(2)}, (4, 5, 2), None, r"m0 must have shape"),
        ({"P0": torch.eye(2)}, (4, 5, 2), None, r"P0 must have shape"),
        ({}, (4, 5, 3), None, r"x must have shape \(Bt, T, 2\)"),
        ({}, (5, 2), None, r"x must have shape"),
        ({}, (4, 5, 2), (4, 6), r"mask must have shape \(4, 5\) or \(4, 5, 2\); got \(4, 6\)"),
        ({"A": torch.ones(0, 0)}, (4, 5, 2), None, r"A must be square with n >= 1"),
        ({"B": torch.ones(3, 1)}, (4, 5, 2), None, r"u of shape \(4, 5, 1\) is required"),
        ({"Q": torch.eye(3) + torch.triu(torch.ones(3, 3), 1)}, (4, 5, 2), None, r"Q must be symmetric \(a covariance\); got one with \|Q - Q\^T\| up to 1"),
        ({"R": torch.tensor([[1.0, 0.0], [0.5, 1.0]]).expand(4, 5, 2, 2)}, (4, 5, 2), None, r"R must be symmetric"),
        ({"Q": torch.cat([torch.full((4, 1, 3, 3), float("nan")), torch.eye(3).expand(4, 3, 3, 3),
                          (torch.eye(3) + torch.ones(3, 3).triu(1)).expand(4, 1, 3, 3)], 1)}, (4, 5, 2), None, r"Q must be symmetric"),
        ({"P0": torch.tensor([[1.0, 1e-3, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])}, (4, 5, 2), None, r"P0 must be symmetric"),
    ],
)
def test_bad_input_names_the_argument_and_shapes(change, x_shape, mask_shape, match) -> None:
    params = _good()._replace(**change)
    x = torch.zeros(x_shape)
    mask = None if mask_shape is None else torch.ones(mask_shape, dtype=torch.bool)
    for fn in (kalman_filter, kalman_smoother):
        with pytest.raises(ValueError, match=match):
            fn(params, x, mask=mask)


@pytest.mark.parametrize("method", ["sequential", "parallel"])
def test_indefinite_noise_is_reported(method: str) -> None:
    params = _good()._replace(R=-torch.eye(2), C=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="not positive definite"):
        kalman_filter(params, torch.zeros(2, 4, 2), method=method)


def test_other_bad_inputs() -> None:
    params = _good()
    x = torch.zeros(2, 4, 2)
    with pytest.raises(ValueError, match="u is given but params.B is None"):
        kalman_filter(params, x, u=torch.zeros(2, 4, 1))
    with pytest.raises(ValueError, match="u is given but params.B is None"):
        kalman_filter(params, x, u=torch.tensor(1.0))  # a 0-d u: no shape to read
    with pytest.raises(ValueError, match=r"x must have shape \(Bt, T, 2\) with Bt, T >= 1; got \(0, 4, 2\)"):
        kalman_filter(params, x[:0])
    with pytest.raises(ValueError, match="method must be one of"):
        kalman_filter(params, x, method="fast")
    with pytest.raises(TypeError, match="dtype"):
        kalman_filter(params, x.double())
    half = LGSSMParams(*(None if v is None else v.half() for v in params))
    with pytest.raises(TypeError, match="must be float32 or float64; A has dtype torch.float16"):
        kalman_filter(half, x.half())
    with pytest.raises(TypeError, match="LGSSMParams"):
        kalman_filter((torch.eye(3),), x)
    with pytest.raises(ValueError, match="num_samples"):
        sample_posterior(params, x, num_samples=0)
    with pytest.raises(ValueError, match="num_steps"):
        sample_prior(params, 0)
    with pytest.raises(ValueError, match="horizon"):
        forecast(params, x, 0)
    with pytest.raises(ValueError, match=r"forecast: x_context must have shape \(2, 4, 2\); got \(2, 4, 3\)"):
        forecast(params, torch.zeros(2, 4, 3), 2)
    controlled = params._replace(B=torch.ones(3, 1))
    with pytest.raises(ValueError, match=r"forecast: u, the context's controls, must have shape \(2, 4, k\); got \(2, 5, 1\)"):
        forecast(controlled, x, 2, torch.zeros(2, 2, 1), u=torch.zeros(2, 5, 1))

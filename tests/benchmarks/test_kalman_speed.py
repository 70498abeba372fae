"""Smoke test of benchmarks/kalman_speed.py: its references and its correctness gate.

The benchmark's plain loop is the reference every timed implementation is gated against, so it
must agree with seqlvm.kalman (and with statsmodels), and the gate must reject a wrong answer.
dynamax is left out: it is a bench-only extra and its compilation would dominate the test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.benchmarks.helpers import benchmark_module


@pytest.fixture(scope="module")
def kalman_speed():
    """The benchmark script imported as a module."""
    with benchmark_module("kalman_speed") as module:
        yield module


@pytest.mark.parametrize(("n", "m"), [(4, 2), (8, 4)])
def test_gate_passes_on_loop_seqlvm_and_statsmodels(kalman_speed, n: int, m: int) -> None:
    """The loop, both seqlvm.kalman methods and statsmodels agree in float64 (values and grads)."""
    gen = torch.Generator().manual_seed(0)
    model = kalman_speed.make_model(n, m, gen)
    x = kalman_speed.simulate(model, 3, 40, gen)
    impls = [kalman_speed.loop_impl(model, x), *kalman_speed.seqlvm_impls(model, x)]
    impls.append(kalman_speed.statsmodels_impl(model, x))
    assert [i.name for i in impls] == ["loop", "seqlvm-seq", "seqlvm-par", "statsmodels"]
    outputs = {impl.name: impl.smooth() for impl in impls}
    assert kalman_speed.check_agreement((3, 40, n, m), impls, outputs) == []


def test_gate_rejects_a_wrong_gradient(kalman_speed) -> None:
    """A gradient off by 1e-4 relative fails the gate even when the values are right."""
    gen = torch.Generator().manual_seed(0)
    model = kalman_speed.make_model(4, 2, gen)
    x = kalman_speed.simulate(model, 2, 30, gen)
    loop = kalman_speed.loop_impl(model, x)
    wrong = kalman_speed.Impl("wrong", loop.smooth, lambda: [1.0001 * g for g in loop.grad()])
    outputs = {"loop": loop.smooth(), "wrong": loop.smooth()}
    failures = kalman_speed.check_agreement((2, 30, 4, 2), [loop, wrong], outputs)
    assert len(failures) == 1 and "wrong" in failures[0] and "dA 1.0e-04" in failures[0]


def test_loop_smoother_cross_covariances_match_statsmodels(kalman_speed) -> None:
    """The loop's lag-one cross covariances are Cov(z_{t+1}, z_t | x), as statsmodels defines them."""
    from statsmodels.tsa.statespace.kalman_smoother import KalmanSmoother

    gen = torch.Generator().manual_seed(1)
    model = kalman_speed.make_model(4, 2, gen)
    x = kalman_speed.simulate(model, 1, 25, gen)
    A, C, Q, R, m0, P0 = (p.numpy() for p in model[:6])
    ks = KalmanSmoother(
        k_endog=2, k_states=4, design=C, obs_cov=R, transition=A, state_cov=Q, selection=np.eye(4)
    )
    ks.initialize_known(m0, P0)
    ks.bind(x[0].numpy().copy())
    expected = torch.tensor(ks.smooth().smoothed_state_autocov[..., :-1].transpose(2, 0, 1).copy())
    torch.testing.assert_close(kalman_speed.loop_smoother(model, x).cross_covs[0], expected)

"""``log_likelihood`` and its Fisher-identity gradient against the dense joint Gaussian."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from seqlvm.kalman import LGSSMParams, kalman_filter, log_likelihood

from .dense import dense_moments
from .test_oracle import CASES, METHODS, make_mask, make_mixed, make_params

DT = torch.float64
COVARIANCES = ("Q", "R", "P0")


def _leaves(params: LGSSMParams, x: torch.Tensor, u: torch.Tensor | None) -> dict[str, torch.Tensor]:
    named = {k: v for k, v in params._asdict().items() if v is not None}
    named["x"] = x
    if u is not None:
        named["u"] = u
    return {k: v.detach().clone().requires_grad_() for k, v in named.items()}


def _split(leaves: dict[str, torch.Tensor]) -> tuple[LGSSMParams, torch.Tensor, torch.Tensor | None]:
    params = LGSSMParams(*(leaves.get(k) for k in LGSSMParams._fields))
    return params, leaves["x"], leaves.get("u")


@pytest.mark.parametrize("reduce", ["weighted", "sum"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("steps", [1, 5])
@pytest.mark.parametrize("layout,mask_kind,k", CASES)
def test_value_and_gradient_match_dense_gaussian(
    layout: str, mask_kind: str, k: int, steps: int, method: str, reduce: str
) -> None:
    """``weighted``: a random weight per sequence checks every sequence's share; ``sum`` passes
    back one broadcast value, which the gradient takes a shortcut for."""
    Bt, n, m = 3, 3, 2
    params = make_params(layout, Bt, steps, n, m, k)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(Bt, steps, m, dtype=DT, generator=g)
    u = torch.randn(Bt, steps, k, dtype=DT, generator=g) if k else None
    observed = make_mask(mask_kind, Bt, 5, m)[:, :steps]
    weights = torch.randn(Bt, dtype=DT, generator=g)

    def total(ll: torch.Tensor) -> torch.Tensor:
        return (weights * ll).sum() if reduce == "weighted" else ll.sum()

    dense_leaves = _leaves(params, x, u)
    dense_ll = dense_moments(*_split(dense_leaves)[:2], observed, dense_leaves.get("u")).log_likelihood
    expected = torch.autograd.grad(total(dense_ll), list(dense_leaves.values()), allow_unused=True)

    leaves = _leaves(params, x, u)
    p, x_in, u_in = _split(leaves)
    # Missing entries as NaN: neither value nor gradient may see them.
    ll = log_likelihood(p, torch.where(observed, x_in, torch.full_like(x_in, float("nan"))), u=u_in, method=method)
    torch.testing.assert_close(ll, dense_ll.detach(), atol=1e-10, rtol=1e-10)
    got = torch.autograd.grad(total(ll), list(leaves.values()))
    for name, want, have in zip(leaves, expected, got):
        want = torch.zeros_like(have) if want is None else want
        if name in COVARIANCES:  # the derivative along symmetric perturbations
            want = 0.5 * (want + want.transpose(-1, -2))
        torch.testing.assert_close(have, want, atol=1e-10, rtol=1e-8, msg=f"d/d{name}")
        assert torch.isfinite(have).all()


# Layouts of (A, Q, m0, B), the rest shared: a per-sequence m0 or B leaves the covariances shared
# (the sequences are then the columns of the mean pass), a per-sequence A does not.
MIXED = [
    ("shared", "shared", "batched", "batched"),
    ("shared", "shared", "shared", "time"),
    ("broadcast", "shared", "batched", "time"),
    ("batched", "time", "shared", "batched"),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("layouts", MIXED)
def test_gradient_with_mixed_layouts_matches_dense_gaussian(
    layouts: tuple[str, ...], masked: bool, method: str
) -> None:
    Bt, T, n, m, k = 3, 5, 3, 2, 2
    params = make_mixed(dict(zip(("A", "Q", "m0", "B"), layouts)), Bt, T, n, m, k)
    g = torch.Generator().manual_seed(7)
    x, u = torch.randn(Bt, T, m, dtype=DT, generator=g), torch.randn(Bt, T, k, dtype=DT, generator=g)
    observed = make_mask("entries" if masked else "none", Bt, T, m)
    weights = torch.randn(Bt, dtype=DT, generator=g)

    dense_leaves = _leaves(params, x, u)
    dense_p, dense_x, dense_u = _split(dense_leaves)
    dense_ll = dense_moments(dense_p, dense_x, observed, dense_u).log_likelihood
    expected = torch.autograd.grad((weights * dense_ll).sum(), list(dense_leaves.values()), allow_unused=True)
    leaves = _leaves(params, x, u)
    p, x_in, u_in = _split(leaves)
    ll = log_likelihood(p, torch.where(observed, x_in, torch.full_like(x_in, float("nan"))), u=u_in, method=method)
    got = torch.autograd.grad((weights * ll).sum(), list(leaves.values()))
    for name, want, have in zip(leaves, expected, got):
        want = torch.zeros_like(have) if want is None else want
        if name in COVARIANCES:
            want = 0.5 * (want + want.transpose(-1, -2))
        torch.testing.assert_close(have, want, atol=1e-10, rtol=1e-8, msg=f"d/d{name}")
    # The controls' gradient alone takes its own path (no outer products for B).
    u_alone = u.clone().requires_grad_()
    ll = log_likelihood(params, torch.where(observed, x, torch.full_like(x, float("nan"))), u=u_alone, method=method)
    got_u = torch.autograd.grad((weights * ll).sum(), u_alone)[0]
    torch.testing.assert_close(got_u, expected[list(dense_leaves).index("u")], atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("method", METHODS)
def test_gradcheck_with_controls_and_partial_mask(method: str) -> None:
    g = torch.Generator().manual_seed(3)
    n, m, k, Bt, T = 2, 2, 1, 2, 4
    A = (0.5 * torch.randn(n, n, dtype=DT, generator=g)).requires_grad_()
    C = torch.randn(Bt, T, m, n, dtype=DT, generator=g).requires_grad_()
    Lq = (torch.eye(n, dtype=DT) + 0.1 * torch.randn(n, n, dtype=DT, generator=g)).tril().requires_grad_()
    Lr = (torch.eye(m, dtype=DT) + 0.1 * torch.randn(Bt, m, m, dtype=DT, generator=g)).tril().requires_grad_()
    m0 = torch.randn(n, dtype=DT, generator=g).requires_grad_()
    Lp = (torch.eye(n, dtype=DT) + 0.1 * torch.randn(n, n, dtype=DT, generator=g)).tril().requires_grad_()
    B = torch.randn(n, k, dtype=DT, generator=g).requires_grad_()
    x = torch.randn(Bt, T, m, dtype=DT, generator=g).requires_grad_()
    u = torch.randn(Bt, T, k, dtype=DT, generator=g).requires_grad_()
    mask = torch.ones(Bt, T, m, dtype=torch.bool)
    mask[0, 1] = False
    mask[1, 2, 0] = False

    def run(A, C, Lq, Lr, m0, Lp, B, x, u):
        params = LGSSMParams(A, C, Lq @ Lq.mT, Lr @ Lr.mT, m0, Lp @ Lp.mT, B)
        return log_likelihood(params, x, mask=mask, u=u, method=method)

    assert gradcheck(run, [A, C, Lq, Lr, m0, Lp, B, x, u], eps=1e-6, atol=1e-6, rtol=1e-5)


def test_value_is_the_filters_and_second_derivative_is_refused() -> None:
    params = make_params("shared", 2, 6, 3, 2, 0)
    x = torch.randn(2, 6, 2, dtype=DT, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(log_likelihood(params, x), kalman_filter(params, x).log_likelihood, atol=0, rtol=0)
    A = params.A.clone().requires_grad_()
    with pytest.raises(RuntimeError, match="first-order only"):
        torch.autograd.grad(log_likelihood(params._replace(A=A), x).sum(), A, create_graph=True)


def test_bad_input_is_refused_before_any_work() -> None:
    params = make_params("shared", 2, 6, 3, 2, 0)
    x = torch.zeros(2, 6, 2, dtype=DT)
    with pytest.raises(ValueError, match="log_likelihood: method"):
        log_likelihood(params, x, method="fast")
    with pytest.raises(ValueError, match=r"log_likelihood: x must have shape \(Bt, T, 2\)"):
        log_likelihood(params, x[..., :1])

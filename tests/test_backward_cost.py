"""The loops over time steps cost linear work in T in their backward pass too.

Indexing a tensor at step t inside a loop (``x[:, t]``) has a gradient that writes a zero tensor
of x's full size for every step: quadratic work, which made an SRNN training step of 16 x 150
steps take 1.5 s instead of 1.1 s (see ``seqlvm.kalman.params.per_step``). The oracle here is a count, not a
clock: the tensor elements every operation of the backward pass writes. From 20 to 80 steps
they grow 3.9-4.3 times here; with the per-step indexing, 6-10 times in each case but the
Kalman smoother's parallel method (whose loop runs over sqrt(T) chunk steps).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from seqlvm.kalman import LGSSMParams, kalman_smoother
from seqlvm.memory import DND
from tests.models.test_gtmsm import tiny as tiny_gtmsm
from tests.models.test_kvae import moving_dots
from tests.models.test_kvae import tiny as tiny_kvae
from tests.models.test_srnn import model as tiny_srnn

SHORT, LONG = 20, 80
LINEAR = 5.0  # the allowed growth of the count from SHORT to LONG steps (linear: about 4)


class _Written(TorchDispatchMode):
    """Counts the elements of every tensor the operations under it return."""

    def __init__(self) -> None:
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.elements += sum(t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        return out


def backward_growth(loss_of: Callable[[int], torch.Tensor]) -> float:
    """Elements written by the backward pass of ``loss_of(LONG)`` over those of ``loss_of(SHORT)``."""
    counts = []
    for T in (SHORT, LONG):
        loss = loss_of(T)
        with _Written() as written:
            loss.backward()
        counts.append(written.elements)
    return counts[1] / counts[0]


@pytest.mark.parametrize("method", ["sequential", "parallel"])
def test_kalman_smoother_time_varying(method: str) -> None:
    def loss(T: int) -> torch.Tensor:  # per-sequence, time-varying A: the loops, not the steady shortcut
        g = torch.Generator().manual_seed(0)
        dt = torch.float64
        A = (0.9 * torch.eye(2, dtype=dt) + 0.05 * torch.randn(3, T, 2, 2, generator=g, dtype=dt)).requires_grad_(True)
        params = LGSSMParams(A, torch.ones(1, 2, dtype=dt), 0.1 * torch.eye(2, dtype=dt), torch.eye(1, dtype=dt),
                             torch.zeros(2, dtype=dt), torch.eye(2, dtype=dt))
        s = kalman_smoother(params, torch.randn(3, T, 1, generator=g, dtype=dt), method=method)
        return s.means.sum() + s.filtered.log_likelihood.sum()

    assert backward_growth(loss) < LINEAR


@pytest.mark.parametrize("missing", [False, True])
def test_srnn_bound(missing: bool) -> None:
    srnn = tiny_srnn()

    def loss(T: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, T, 5, generator=g, dtype=torch.float64)
        mask = torch.rand(2, T, generator=g) > 0.3 if missing else None
        return srnn.elbo(x, mask).loss

    assert backward_growth(loss) < LINEAR


def test_kvae_with_missing_frames() -> None:
    kvae = tiny_kvae()

    def loss(T: int) -> torch.Tensor:  # missing frames: the alpha-network's inputs come step by step
        mask = torch.rand(2, T, generator=torch.Generator().manual_seed(0)) > 0.3
        return kvae.elbo(moving_dots(2, T), mask).loss

    assert backward_growth(loss) < LINEAR


def test_gtmsm_gated_states() -> None:
    gtmsm = tiny_gtmsm(walls=True)
    assert gtmsm.gate is not None

    def loss(T: int) -> torch.Tensor:
        u = torch.randn(2, T, gtmsm.config.control_dim, generator=torch.Generator().manual_seed(0))
        return gtmsm._state_path(u).sum()

    assert backward_growth(loss) < LINEAR


def test_dnd_tabular_writes() -> None:
    def loss(T: int) -> torch.Tensor:  # update_tolerance: one step at a time
        g = torch.Generator().manual_seed(0)
        dnd = DND(2, 16, 3, 2, update_tolerance=0.1)
        values = torch.randn(2, T, 2, generator=g, requires_grad=True)
        dnd.write(torch.randn(2, T, 3, generator=g), values)
        return dnd.values.sum()

    assert backward_growth(loss) < LINEAR

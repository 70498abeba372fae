"""Parameters of a linear-Gaussian state-space model, and their validation.

The model, with time 0-based and column vectors::

    z_0 ~ N(m0, P0)
    z_t = A_t z_{t-1} + B_t u_t + eps_t,   eps_t ~ N(0, Q_t)      t = 1..T-1
    x_t = C_t z_t + delta_t,               delta_t ~ N(0, R_t)    t = 0..T-1

Every parameter may be shared ``(r, c)``, batched ``(Bt, r, c)`` or time-varying ``(Bt, T, r, c)``
(a batch size of 1 broadcasts).  Time-varying transition parameters are indexed by the step they
lead into, so ``A[:, 0]``, ``B[:, 0]``, ``Q[:, 0]`` and ``u[:, 0]`` are never read.

Internally every matrix parameter is brought to four dimensions ``(b, T', r, c)`` with
``b in {1, Bt}`` and ``T' in {1, T}`` by adding size-1 dimensions (views, never copies).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


def per_step(p: Tensor, steps: int) -> Sequence[Tensor]:
    """A parameter in the internal layout (b, T' in {1, steps}, r, c) as one (b, r, c) tensor per
    step.

    For the loops over steps: ``unbind`` gives all the views in one operation, and its gradient
    is one stack, where indexing ``p[:, t]`` in a loop would make autograd write each step's
    gradient into a zero tensor of p's full size (work quadratic in the number of steps).
    """
    return p.unbind(1) if p.shape[1] > 1 else [p[:, 0]] * steps


def check_symmetric(fn: str, **covariances: Tensor) -> None:
    """Refuse a covariance that is not symmetric beyond rounding (64 eps of its matrix's largest
    entry), naming it; one host sync for all of them. NaN entries pass: unused entries may hold
    any value."""
    def gap(S: Tensor) -> Tensor:
        return (S - S.mT).abs()

    with torch.no_grad():  # (comparisons with NaN are false: a NaN entry passes)
        over = torch.stack([
            (gap(S) > 64 * torch.finfo(S.dtype).eps * S.abs().amax((-2, -1), keepdim=True)).any()
            for S in covariances.values()
        ])
        if bool(over.any()):
            name = list(covariances)[int(over.int().argmax())]
            raise ValueError(f"{fn}: {name} must be symmetric (a covariance); got one with |{name} - {name}^T| up to "
                             f"{float(gap(covariances[name]).nan_to_num(0.0).amax()):.3g}")


class LGSSMParams(NamedTuple):
    """Parameters of ``z_t = A z_{t-1} + B u_t + N(0, Q)``, ``x_t = C z_t + N(0, R)``, ``z_0 ~ N(m0, P0)``.

    A:  (n, n), (Bt, n, n) or (Bt, T, n, n)  transition matrix.
    C:  (m, n), (Bt, m, n) or (Bt, T, m, n)  emission matrix.
    Q:  (n, n), (Bt, n, n) or (Bt, T, n, n)  transition noise covariance (positive definite).
    R:  (m, m), (Bt, m, m) or (Bt, T, m, m)  observation noise covariance (positive definite).
    m0: (n,) or (Bt, n)                      mean of the first state z_0.
    P0: (n, n) or (Bt, n, n)                 covariance of the first state z_0.
    B:  (n, k), (Bt, n, k) or (Bt, T, n, k)  control matrix, or None for no controls.
    """

    A: Tensor
    C: Tensor
    Q: Tensor
    R: Tensor
    m0: Tensor
    P0: Tensor
    B: Tensor | None = None


@dataclass(frozen=True)
class Prepared:
    """Validated model and data in the internal layout (see the module docstring).

    A (b, T', n, n), C (b, T', m, n), Q (b, T', n, n), R (b, T', m, m), B (b, T', n, k) or None,
    m0 (b, n), P0 (b, n, n); x (Bt, T, m) with missing entries set to 0; observed (Bt, T, m) bool
    or None when everything is observed; u (Bt, T, k) or None.
    """

    A: Tensor
    C: Tensor
    Q: Tensor
    R: Tensor
    B: Tensor | None
    m0: Tensor
    P0: Tensor
    x: Tensor | None
    observed: Tensor | None
    u: Tensor | None
    batch: int
    steps: int

    @property
    def n(self) -> int:
        return self.A.shape[-1]

    @property
    def m(self) -> int:
        return self.C.shape[-2]

    @property
    def time_invariant(self) -> bool:
        """True when no parameter varies with time (controls may still vary)."""
        mats = [self.A, self.C, self.Q, self.R] + ([self.B] if self.B is not None else [])
        return all(p.shape[1] == 1 for p in mats)

    def per_step(self, name: str) -> Sequence[Tensor]:
        """Parameter ``name`` at each step, ``steps`` tensors (b, r, c)."""
        return per_step(getattr(self, name), self.steps)

    def controls(self) -> Tensor | None:
        """All control offsets ``B_t u_t``, shape (Bt, T, n), or None. Step 0's is 0: nothing
        drives z_0, and ``B_0``, ``u_0`` are never read (a NaN there must not reach a gradient)."""
        if self.B is None:
            return None
        B = self.B[:, 1:] if self.B.shape[1] > 1 else self.B
        rest = (B @ self.u[:, 1:, :, None]).squeeze(-1)
        return torch.cat([rest.new_zeros(rest.shape[0], 1, rest.shape[2]), rest], dim=1)

    def emission(self) -> tuple[Tensor, Tensor]:
        """(C_t, R_t) of every step, projected onto the observed entries.

        A missing entry i gets a zero row in C and a unit, uncorrelated variance in R, so its
        innovation is exactly 0, its gain column is 0 and it adds exactly 0 to the log-density
        once the observed count is used for the 2*pi term. Returns (b, T', m, n), (b, T', m, m),
        with b = Bt and T' = T when anything is missing.
        """
        if self.observed is None:
            return self.C, self.R
        o = self.observed.to(self.C.dtype)
        C = self.C * o[..., :, None]
        R = self.R * (o[..., :, None] * o[..., None, :]) + torch.diag_embed(1.0 - o)
        return C, R

    def observed_count(self) -> Tensor | float:
        """Number of observed entries per step, (Bt, T), or the scalar m when all are observed."""
        if self.observed is None:
            return float(self.m)
        return self.observed.sum(-1).to(self.x.dtype)


def _matrix(name: str, value: Tensor, rows: int, cols: int, batch: int, steps: int, fn: str) -> Tensor:
    """Bring a (r, c) / (Bt, r, c) / (Bt, T, r, c) parameter to (b, T', r, c), checking sizes."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(value).__name__}")
    expected = (
        f"({rows}, {cols}), ({batch} or 1, {rows}, {cols}) or ({batch} or 1, {steps} or 1, {rows}, {cols})"
    )
    if value.dim() not in (2, 3, 4) or tuple(value.shape[-2:]) != (rows, cols):
        raise ValueError(f"{fn}: {name} must have shape {expected}; got {tuple(value.shape)}")
    if value.dim() >= 3 and value.shape[0] not in (1, batch):
        raise ValueError(
            f"{fn}: {name} has batch size {value.shape[0]} but the data has {batch}; "
            f"expected shape {expected}"
        )
    if value.dim() == 4 and value.shape[1] not in (1, steps):
        raise ValueError(
            f"{fn}: {name} has {value.shape[1]} time steps but the data has {steps}; "
            f"expected shape {expected}"
        )
    if value.dim() == 3:
        return value.unsqueeze(1)
    return value.reshape((1,) * (4 - value.dim()) + tuple(value.shape))


def _vector_prior(params: LGSSMParams, n: int, batch: int, fn: str) -> tuple[Tensor, Tensor]:
    m0, P0 = params.m0, params.P0
    for name, v in (("m0", m0), ("P0", P0)):
        if not isinstance(v, Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(v).__name__}")
    if m0.dim() not in (1, 2) or m0.shape[-1] != n or (m0.dim() == 2 and m0.shape[0] not in (1, batch)):
        raise ValueError(f"{fn}: m0 must have shape ({n},) or ({batch}, {n}); got {tuple(m0.shape)}")
    if P0.dim() not in (2, 3) or tuple(P0.shape[-2:]) != (n, n) or (
        P0.dim() == 3 and P0.shape[0] not in (1, batch)
    ):
        raise ValueError(f"{fn}: P0 must have shape ({n}, {n}) or ({batch}, {n}, {n}); got {tuple(P0.shape)}")
    return m0.reshape(-1, n), P0.reshape(-1, n, n)


def prepare(
    params: LGSSMParams,
    x: Tensor | None,
    mask: Tensor | None = None,
    u: Tensor | None = None,
    *,
    batch: int | None = None,
    steps: int | None = None,
    fn: str = "kalman",
) -> Prepared:
    """Validate ``params`` against the data and bring everything to the internal layout.

    x:    (Bt, T, m) observations, NaN where missing; or None (then ``batch`` and ``steps`` say
          the sizes, as for sampling from the prior).
    mask: (Bt, T) or (Bt, T, m), True (or 1) where observed; combined with the NaNs of x.
    u:    (Bt, T, k) controls, required exactly when ``params.B`` is given.
    Raises ValueError / TypeError naming the argument, the shape received and the one expected.
    """
    if not isinstance(params, LGSSMParams):
        raise TypeError(f"{fn}: params must be an LGSSMParams, got {type(params).__name__}")
    for name in ("A", "C"):
        if not isinstance(getattr(params, name), Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(getattr(params, name)).__name__}")
    A, C = params.A, params.C
    if A.dim() not in (2, 3, 4) or A.shape[-1] != A.shape[-2] or A.shape[-1] == 0:
        raise ValueError(f"{fn}: A must be square with n >= 1, shape (n, n), (Bt, n, n) or (Bt, T, n, n); got {tuple(A.shape)}")
    n = A.shape[-1]
    if C.dim() not in (2, 3, 4) or C.shape[-1] != n or C.shape[-2] == 0:
        raise ValueError(f"{fn}: C must have shape (m, {n}) with m >= 1 (or batched/time-varying); got {tuple(C.shape)}")
    m = C.shape[-2]

    if x is not None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{fn}: x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 3 or x.shape[-1] != m or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{fn}: x must have shape (Bt, T, {m}) with Bt, T >= 1; got {tuple(x.shape)}")
        batch, steps = x.shape[0], x.shape[1]
    elif batch is None or steps is None or batch < 1 or steps < 1:
        raise ValueError(f"{fn}: batch size and number of steps must be >= 1; got {batch} and {steps}")

    dtype = A.dtype
    if dtype not in (torch.float32, torch.float64):
        # Half precisions have no CPU kernels for the Cholesky and triangular solves.
        raise TypeError(f"{fn}: parameters must be float32 or float64; A has dtype {dtype}")
    tensors = {k: v for k, v in params._asdict().items() if v is not None}
    if x is not None:
        tensors["x"] = x
    if u is not None:
        tensors["u"] = u
    for name, v in tensors.items():
        if not isinstance(v, Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(v).__name__}")
        if v.dtype != dtype or v.device != A.device:
            raise TypeError(
                f"{fn}: {name} has dtype {v.dtype} on {v.device} but A has {dtype} on {A.device}; "
                "all tensors must share dtype and device"
            )

    A4 = _matrix("A", A, n, n, batch, steps, fn)
    C4 = _matrix("C", C, m, n, batch, steps, fn)
    Q4 = _matrix("Q", params.Q, n, n, batch, steps, fn)
    R4 = _matrix("R", params.R, m, m, batch, steps, fn)
    m0, P0 = _vector_prior(params, n, batch, fn)
    check_symmetric(fn, Q=Q4, R=R4, P0=P0)

    B4 = None
    if params.B is not None:
        if params.B.dim() not in (2, 3, 4) or params.B.shape[-2] != n:
            raise ValueError(f"{fn}: B must have shape ({n}, k) (or batched/time-varying); got {tuple(params.B.shape)}")
        k = params.B.shape[-1]
        B4 = _matrix("B", params.B, n, k, batch, steps, fn)
        if u is None:
            raise ValueError(f"{fn}: params.B is given, so u of shape ({batch}, {steps}, {k}) is required; got None")
        if tuple(u.shape) != (batch, steps, k):
            raise ValueError(f"{fn}: u must have shape ({batch}, {steps}, {k}); got {tuple(u.shape)}")
    elif u is not None:
        raise ValueError(
            f"{fn}: u is given but params.B is None; pass B of shape ({n}, k) for u of shape ({batch}, {steps}, k)"
        )

    observed = None
    if x is not None:
        nan = torch.isnan(x)
        if mask is not None:
            if not isinstance(mask, Tensor):
                raise TypeError(f"{fn}: mask must be a torch.Tensor, got {type(mask).__name__}")
            if tuple(mask.shape) == (batch, steps):
                mask = mask[..., None].expand(batch, steps, m)
            elif tuple(mask.shape) != (batch, steps, m):
                raise ValueError(
                    f"{fn}: mask must have shape ({batch}, {steps}) or ({batch}, {steps}, {m}); got {tuple(mask.shape)}"
                )
            observed = mask.to(device=x.device, dtype=torch.bool) & ~nan
        elif bool(nan.any()):
            observed = ~nan
        if observed is not None and bool(observed.all()):
            observed = None
        if observed is not None:
            # torch.where, not multiplication: NaN * 0 is NaN, and the gradient must not see it.
            x = torch.where(observed, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return Prepared(A4, C4, Q4, R4, B4, m0, P0, x, observed, u, batch, steps)

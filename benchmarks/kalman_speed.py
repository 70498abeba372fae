"""Speed of seqlvm.kalman against three references, measured in the same run.

What is timed, per case (Bt, T, n, m), dtype and implementation:

* ``smooth``: Kalman filter + RTS smoother + exact log-likelihood, no gradients (torch under
  ``inference_mode``).
* ``grad``: log-likelihood forward + backward, gradients w.r.t. A, C, Q, R (summed over the batch).

Implementations:

* ``seqlvm-seq`` / ``seqlvm-par``: ``seqlvm.kalman`` with ``method="sequential"`` / ``"parallel"``;
  ``grad`` differentiates ``seqlvm.kalman.log_likelihood``, whose backward is one RTS smoother
  pass and closed-form sums (Fisher's identity), not backpropagation through the filter.
* ``loop``: a textbook per-step PyTorch filter and RTS smoother written below, batched over Bt,
  ``torch.linalg.solve`` for every inverse, autograd for the gradient.
* ``dynamax``: ``dynamax.linear_gaussian_ssm`` filter / smoother, ``jax.jit`` of ``jax.vmap`` over
  the batch, JAX on CPU, timed after compilation with ``jax.block_until_ready``; gradient with
  ``jax.grad`` of the summed marginal log-likelihood.
* ``statsmodels``: ``statsmodels.tsa.statespace.kalman_smoother.KalmanSmoother`` (compiled
  Cython filter and smoother) with fixed matrices, looped over the batch; float64 only.

Models (shared parameters, no mask, data drawn from the model with a fixed seed):

* n=4, m=2: 2-D constant-velocity tracking, dt = 0.1, white-noise acceleration (q = 1),
  position observed with noise std 0.5.
* n=8, m=4: a random stable linear system: A = 0.95 x a random orthogonal matrix, C Gaussian
  / sqrt(n), Q = 0.1 I, R = 0.1 I.

Time indexing (all four implementations agree): z_0 ~ N(m0, P0) is the FIRST state, observed
by x_0; transitions act from z_0 to z_1 onwards. dynamax uses the same convention: its
``lgssm_filter`` starts from ``params.initial.mean/cov`` and conditions on ``emissions[0]`` before
its first predict, and statsmodels' ``initialize_known`` gives the prior of the first state too.

Correctness gate: in float64, every implementation's log-likelihoods, smoothed means and
gradients w.r.t. A, C, Q, R must agree with the loop's to 1e-6 relative (to the largest entry of
each); the script exits with code 1 otherwise, so a fast wrong answer cannot pass. Gradients
w.r.t. the symmetric Q and R are compared through their symmetric parts: an implementation that
reads only one triangle (a Cholesky factor) has a different but equally valid full-matrix
gradient. dynamax gets 1e-5: its ``psd_solve`` adds 1e-9 I to every matrix it solves against,
which moves its gradients by up to ~5e-7 relative on these models (its log-likelihoods and
means stay within 1e-9). float32 rows report their log-likelihood error against the float64
loop (``ll rel err``).

Threads: every library gets the same ``BENCH_THREADS`` threads (default 1), set before any of
them is imported: torch (``torch.set_num_threads``, OMP), OpenBLAS/MKL under numpy and
statsmodels, and XLA (``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``).
With n <= 8 the kernels are far too small for a second thread to pay, and on a 2-core machine
an idle thread pool that spin-waits after one library's call (OpenBLAS after statsmodels, OMP
after torch) was measured to slow the next library's run by 5-50x, which made the table depend
on the order of its rows. An explicitly set ``OMP_NUM_THREADS``, ``XLA_FLAGS``, ...
wins over the default. Ratio columns are speed-ups: ``dynamax/x`` is the dynamax time divided
by this row's time (> 1 means this row is faster).

Timing: median wall-clock time over interleaved rounds (every implementation once per round, so
outside load hits all of them alike), 5-21 rounds and about 8 s per implementation in full mode,
1-3 rounds with ``--quick``; one untimed warm-up call each (JIT compilation for dynamax). The
loop gets rounds of its own afterwards: freeing its 5000-step autograd graph slowed whichever
call came next (``_timing.median_ms``).

Usage::

    python benchmarks/kalman_speed.py            # full table
    python benchmarks/kalman_speed.py --quick    # fewer repeats
    python benchmarks/kalman_speed.py --markdown # the table as markdown, for RESULTS.md
    python benchmarks/kalman_speed.py --autograd # add grad rows backpropagating through the filter
    python benchmarks/kalman_speed.py --check    # only the float64 correctness gate, no timing
"""

from __future__ import annotations

import os

THREADS = int(os.environ.get("BENCH_THREADS", "1"))
if __name__ == "__main__":  # only when run as the benchmark: importing it (tests) changes nothing
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, str(THREADS))
    _multi = str(THREADS > 1).lower()
    os.environ.setdefault(
        "XLA_FLAGS", f"--xla_cpu_multi_thread_eigen={_multi} intra_op_parallelism_threads={THREADS}"
    )

import argparse  # noqa: E402  (the thread settings above must precede these imports)
import functools  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from typing import Callable, NamedTuple, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _timing import FULL, QUICK, Budget, format_table, median_ms  # noqa: E402

from seqlvm.kalman import LGSSMParams, kalman_filter, kalman_smoother, log_likelihood  # noqa: E402

Tensor = torch.Tensor

CASES: tuple[tuple[int, int, int, int], ...] = (
    (1, 1000, 4, 2),
    (64, 100, 4, 2),
    (256, 200, 8, 4),
    (16, 5000, 4, 2),
)
DTYPES = (torch.float32, torch.float64)


# --------------------------------------------------------------------------------------------
# Models and data
# --------------------------------------------------------------------------------------------


# The benchmarked models are shared LGSSMs without controls: A (n,n), C (m,n), Q (n,n), R (m,m),
# m0 (n,), P0 (n,n); B is always None here.
MATRICES = ("A", "C", "Q", "R", "m0", "P0")


def in_dtype(model: LGSSMParams, dtype: torch.dtype) -> LGSSMParams:
    """The same model in ``dtype``."""
    return model._replace(**{k: getattr(model, k).to(dtype) for k in MATRICES})


def make_model(n: int, m: int, generator: torch.Generator) -> LGSSMParams:
    """Constant-velocity 2-D tracking for (n, m) = (4, 2); a random stable system otherwise (float64)."""
    f64 = torch.float64
    if (n, m) == (4, 2):
        dt, q, r = 0.1, 1.0, 0.25
        eye2 = torch.eye(2, dtype=f64)
        A = torch.block_diag(eye2, eye2)
        A[:2, 2:] = dt * eye2
        # State (px, py, vx, vy): the discretised white-noise-acceleration covariance.
        Q = q * torch.kron(torch.tensor([[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]], dtype=f64), eye2)
        C = torch.cat([eye2, torch.zeros(2, 2, dtype=f64)], dim=1)
        R = r * eye2
    else:
        orth, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=f64))
        A = 0.95 * orth
        C = torch.randn(m, n, generator=generator, dtype=f64) / math.sqrt(n)
        Q = 0.1 * torch.eye(n, dtype=f64)
        R = 0.1 * torch.eye(m, dtype=f64)
    return LGSSMParams(A, C, Q, R, torch.zeros(n, dtype=f64), torch.eye(n, dtype=f64))


def simulate(model: LGSSMParams, batch: int, steps: int, generator: torch.Generator) -> Tensor:
    """Observations x (batch, steps, m) drawn from ``model``, in its dtype."""
    A, C, Q, R, m0, P0 = model[:6]
    n, m = A.shape[0], C.shape[0]
    LQ, LR = torch.linalg.cholesky(Q), torch.linalg.cholesky(R)
    z = m0 + torch.randn(batch, n, generator=generator, dtype=A.dtype) @ torch.linalg.cholesky(P0).T
    xs = []
    for t in range(steps):
        if t > 0:
            z = z @ A.T + torch.randn(batch, n, generator=generator, dtype=A.dtype) @ LQ.T
        xs.append(z @ C.T + torch.randn(batch, m, generator=generator, dtype=A.dtype) @ LR.T)
    return torch.stack(xs, dim=1)


# --------------------------------------------------------------------------------------------
# Reference (a): the plain per-step PyTorch loop
# --------------------------------------------------------------------------------------------


class LoopFilter(NamedTuple):
    """Filter output of the loop: means (Bt,T,n), covs (Bt,T,n,n), predictions, ll (Bt,)."""

    means: Tensor
    covs: Tensor
    pred_means: Tensor
    pred_covs: Tensor
    log_likelihood: Tensor


class LoopSmoother(NamedTuple):
    """Smoother output of the loop: means (Bt,T,n), covs (Bt,T,n,n), cross_covs (Bt,T-1,n,n)
    with cross_covs[:, t] = Cov(z_{t+1}, z_t | x), and the log-likelihood (Bt,)."""

    means: Tensor
    covs: Tensor
    cross_covs: Tensor
    log_likelihood: Tensor


def _sym(P: Tensor) -> Tensor:
    return 0.5 * (P + P.transpose(-1, -2))


def loop_filter(model: LGSSMParams, x: Tensor) -> LoopFilter:
    """Textbook Kalman filter, one Python step per time index, batched over Bt.

    Predict m_{t|t-1} = A m_{t-1|t-1}, P_{t|t-1} = A P A^T + Q (t >= 1; m_{0|-1} = m0, P0);
    update with S = C P C^T + R, K = P C^T S^{-1}, m += K r, P -= K C P;
    log p(x) = sum_t log N(r_t; 0, S_t).
    """
    A, C, Q, R, m0, P0 = model[:6]
    batch, steps, m = x.shape
    mean = m0.expand(batch, -1)
    cov = P0.expand(batch, -1, -1)
    log_2pi = m * math.log(2 * math.pi)
    ll = x.new_zeros(batch)
    means, covs, pred_means, pred_covs = [], [], [], []
    for t in range(steps):
        if t > 0:
            mean = mean @ A.T
            cov = _sym(A @ cov @ A.T + Q)
        pred_means.append(mean)
        pred_covs.append(cov)
        CP = C @ cov  # (Bt, m, n)
        S = _sym(CP @ C.T + R)
        resid = x[:, t] - mean @ C.T
        # One solve gives both S^{-1} C P (the transposed gain) and S^{-1} r.
        sol = torch.linalg.solve(S, torch.cat([CP, resid.unsqueeze(-1)], dim=-1))
        gain_t, white = sol[..., :-1], sol[..., -1]
        ll = ll - 0.5 * ((resid * white).sum(-1) + torch.logdet(S) + log_2pi)
        mean = mean + (gain_t.transpose(-1, -2) @ resid.unsqueeze(-1)).squeeze(-1)
        cov = _sym(cov - CP.transpose(-1, -2) @ gain_t)
        means.append(mean)
        covs.append(cov)
    stack = lambda xs: torch.stack(xs, dim=1)  # noqa: E731
    return LoopFilter(stack(means), stack(covs), stack(pred_means), stack(pred_covs), ll)


def loop_smoother(model: LGSSMParams, x: Tensor) -> LoopSmoother:
    """``loop_filter`` followed by the textbook RTS smoother, one Python step per time index.

    J_t = P_{t|t} A^T P_{t+1|t}^{-1}; m_{t|T} = m_{t|t} + J_t (m_{t+1|T} - m_{t+1|t});
    P_{t|T} = P_{t|t} + J_t (P_{t+1|T} - P_{t+1|t}) J_t^T; Cov(z_{t+1}, z_t | x) = P_{t+1|T} J_t^T.
    """
    A = model.A
    f = loop_filter(model, x)
    steps = x.shape[1]
    mean, cov = f.means[:, -1], f.covs[:, -1]
    means, covs, crosses = [mean], [cov], []
    for t in range(steps - 2, -1, -1):
        Pf = f.covs[:, t]
        gain_t = torch.linalg.solve(f.pred_covs[:, t + 1], A @ Pf)  # J_t^T (P_pred, Pf symmetric)
        gain = gain_t.transpose(-1, -2)
        crosses.append(cov @ gain_t)
        mean = f.means[:, t] + (gain @ (mean - f.pred_means[:, t + 1]).unsqueeze(-1)).squeeze(-1)
        cov = _sym(Pf + gain @ (cov - f.pred_covs[:, t + 1]) @ gain_t)
        means.append(mean)
        covs.append(cov)
    flip = lambda xs: torch.stack(xs[::-1], dim=1)  # noqa: E731
    return LoopSmoother(flip(means), flip(covs), flip(crosses), f.log_likelihood)


# --------------------------------------------------------------------------------------------
# Implementations under test: each returns the two timed callables and a float64-comparable output
# --------------------------------------------------------------------------------------------


class Output(NamedTuple):
    """What the correctness gate compares: log-likelihood (Bt,) and smoothed means (Bt,T,n)."""

    log_likelihood: np.ndarray
    smoothed_means: np.ndarray


@dataclass
class Impl:
    """One implementation prepared for one case and dtype.

    ``smooth()`` runs filter + smoother + log-likelihood and returns an ``Output``; ``grad()``
    runs the log-likelihood forward and backward and returns the gradients of the batch's summed
    log-likelihood w.r.t. (A, C, Q, R) (None where the implementation has no gradient).
    """

    name: str
    smooth: Callable[[], Output]
    grad: Callable[[], Sequence[object]] | None
    gate_rtol: float = 1e-6
    time_smooth: bool = True  # False: a gradient-only variant whose smoother another row times


def torch_impl(name: str, model: LGSSMParams, x: Tensor, smoother: Callable, loglik: Callable) -> Impl:
    """Wrap torch functions ``smoother(model, x)`` (-> means, log_likelihood) and
    ``loglik(model, x)`` (-> (Bt,) log-likelihood) as an ``Impl``."""

    def smooth() -> Output:
        with torch.inference_mode():
            s = smoother(model, x)
        return Output(s.log_likelihood.double().numpy(), s.means.double().numpy())

    leaves = [p.detach().clone().requires_grad_(True) for p in model[:4]]
    grad_model = model._replace(A=leaves[0], C=leaves[1], Q=leaves[2], R=leaves[3])

    def grad() -> list[Tensor]:
        return torch.autograd.grad(loglik(grad_model, x).sum(), leaves)

    return Impl(name, smooth, grad)


def loop_impl(model: LGSSMParams, x: Tensor) -> Impl:
    """Reference (a): the plain per-step loop above."""
    return torch_impl("loop", model, x, loop_smoother,
                      lambda mod, obs: loop_filter(mod, obs).log_likelihood)


def seqlvm_impls(model: LGSSMParams, x: Tensor, autograd: bool = False) -> list[Impl]:
    """``seqlvm.kalman`` with both methods; ``autograd`` adds, per method, a gradient-only row
    ``seqlvm-seq-ag`` / ``seqlvm-par-ag`` that backpropagates through ``kalman_filter`` instead."""
    class Smoothed(NamedTuple):
        means: Tensor
        log_likelihood: Tensor

    impls = []
    for method in ("sequential", "parallel"):

        def smoother(mod: LGSSMParams, obs: Tensor, method: str = method) -> Smoothed:
            s = kalman_smoother(mod, obs, method=method)
            return Smoothed(s.means, s.filtered.log_likelihood)  # one call: the filter is inside

        def loglik(mod: LGSSMParams, obs: Tensor, method: str = method) -> Tensor:
            return log_likelihood(mod, obs, method=method)  # gradient by Fisher's identity

        impls.append(torch_impl(f"seqlvm-{method[:3]}", model, x, smoother, loglik))
        if autograd:

            def through_filter(mod: LGSSMParams, obs: Tensor, method: str = method) -> Tensor:
                return kalman_filter(mod, obs, method=method).log_likelihood

            ag = torch_impl(f"seqlvm-{method[:3]}-ag", model, x, smoother, through_filter)
            impls.append(replace(ag, time_smooth=False))
    return impls


def dynamax_impl(model: LGSSMParams, x: Tensor) -> Impl | None:
    """Reference (c): dynamax's jit-compiled filter/smoother, vmapped over the batch.

    JAX's x64 mode is switched to match ``x``'s dtype before any array is made, because dynamax
    creates float arrays in JAX's default dtype (``jnp.eye`` in ``psd_solve``) and would otherwise
    silently upcast a float32 run to float64. No inputs: a (T, 0) zero array in the right dtype.
    """
    try:
        import jax
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", x.dtype == torch.float64)
    import jax.numpy as jnp
    from dynamax.linear_gaussian_ssm.inference import lgssm_filter, lgssm_smoother, make_lgssm_params

    A, C, Q, R, m0, P0 = (jnp.asarray(p.numpy()) for p in model[:6])
    n, m = A.shape[0], C.shape[0]
    ys = jnp.asarray(x.numpy())
    dtype = ys.dtype
    inputs = jnp.zeros((x.shape[1], 0), dtype)

    def params(A, C, Q, R):
        return make_lgssm_params(
            m0, P0, A, Q, C, R,
            dynamics_bias=jnp.zeros(n, dtype), dynamics_input_weights=jnp.zeros((n, 0), dtype),
            emissions_bias=jnp.zeros(m, dtype), emissions_input_weights=jnp.zeros((m, 0), dtype),
        )  # fmt: skip

    smooth_all = jax.jit(
        jax.vmap(lambda y: lgssm_smoother(params(A, C, Q, R), y, inputs))
    )

    def total_ll(A, C, Q, R):
        lls = jax.vmap(lambda y: lgssm_filter(params(A, C, Q, R), y, inputs).marginal_loglik)(ys)
        return jnp.sum(lls)

    grad_all = jax.jit(jax.grad(total_ll, argnums=(0, 1, 2, 3)))

    def smooth() -> Output:
        post = jax.block_until_ready(smooth_all(ys))
        if post.smoothed_means.dtype != dtype:
            raise RuntimeError(f"dynamax computed in {post.smoothed_means.dtype}, expected {dtype}")
        as64 = functools.partial(np.asarray, dtype=np.float64)
        return Output(as64(post.marginal_loglik), as64(post.smoothed_means))

    grad = lambda: jax.block_until_ready(grad_all(A, C, Q, R))  # noqa: E731
    return Impl("dynamax", smooth, grad, gate_rtol=1e-5)  # see the module docstring


def statsmodels_impl(model: LGSSMParams, x: Tensor) -> Impl | None:
    """Reference (b): statsmodels' compiled Kalman filter and smoother, one sequence at a time.

    Each sequence gets its own ``KalmanSmoother`` with the fixed matrices (selection = I, so
    state_cov is Q itself) and the known initial state N(m0, P0) of the first state: statsmodels
    copies the data into its compiled representation once and ignores a later ``bind`` of new data
    of the same shape, so one object cannot be reused across sequences. Only the smoothed state,
    its covariance and the lag-one autocovariance are requested, the outputs the other
    implementations produce. float64 only: statsmodels' compiled routines run in float64 whatever
    the input, so a float32 row would not measure float32.
    """
    if x.dtype != torch.float64:
        return None
    try:
        from statsmodels.tsa.statespace import kalman_smoother as sm
    except ImportError:
        return None
    A, C, Q, R, m0, P0 = (p.numpy() for p in model[:6])
    n, m = A.shape[0], C.shape[0]
    sequences = [np.ascontiguousarray(seq) for seq in x.numpy()]

    def smooth_one(seq: np.ndarray) -> sm.SmootherResults:
        ks = sm.KalmanSmoother(
            k_endog=m, k_states=n, design=C, obs_cov=R, transition=A, state_cov=Q, selection=np.eye(n)
        )
        ks.initialize_known(m0, P0)
        ks.smoother_output = sm.SMOOTHER_STATE | sm.SMOOTHER_STATE_COV | sm.SMOOTHER_STATE_AUTOCOV
        ks.bind(seq)
        return ks.smooth()

    def smooth() -> Output:
        results = [smooth_one(seq) for seq in sequences]
        lls = np.array([res.llf_obs.sum() for res in results])
        return Output(lls, np.stack([res.smoothed_state.T for res in results]))

    return Impl("statsmodels", smooth, None)


# --------------------------------------------------------------------------------------------
# Correctness gate and the table
# --------------------------------------------------------------------------------------------


def rel_err(value: np.ndarray, reference: np.ndarray) -> float:
    """max |value - reference| / max |reference|."""
    return float(np.max(np.abs(value - reference)) / np.max(np.abs(reference)))


def gate_quantities(impl: Impl, output: Output) -> dict[str, np.ndarray]:
    """The float64 quantities the gate compares for one implementation, by name."""
    quantities = {"log-likelihood": output.log_likelihood, "smoothed means": output.smoothed_means}
    if impl.grad is not None:
        dA, dC, dQ, dR = (np.asarray(g, dtype=np.float64) for g in impl.grad())
        sym = lambda g: 0.5 * (g + g.T)  # noqa: E731
        quantities.update({"dA": dA, "dC": dC, "dQ (sym)": sym(dQ), "dR (sym)": sym(dR)})
    return quantities


def check_agreement(case: tuple[int, ...], impls: list[Impl], outputs: dict[str, Output]) -> list[str]:
    """Failures of the float64 gate, every implementation against the loop (empty = all agree)."""
    quantities = {impl.name: gate_quantities(impl, outputs[impl.name]) for impl in impls}
    reference = quantities["loop"]
    failures = []
    for impl in impls:
        errors = {what: rel_err(value, reference[what]) for what, value in quantities[impl.name].items()}
        if max(errors.values()) > impl.gate_rtol:
            detail = ", ".join(f"{what} {err:.1e}" for what, err in errors.items())
            failures.append(f"{case} {impl.name}: relative errors {detail}")
    return failures


@dataclass
class Row:
    """One timed measurement."""

    case: tuple[int, int, int, int]
    dtype: str
    task: str
    impl: str
    ms: float
    ll_err: float | None


def run_case(
    case: tuple[int, int, int, int], budget: Budget | None, seed: int, autograd: bool = False
) -> tuple[list[Row], list[str]]:
    """Time every implementation on one case in both dtypes; returns the rows and gate failures.

    With ``budget=None`` only the float64 correctness gate runs (no timing, no rows)."""
    batch, steps, n, m = case
    gen = torch.Generator().manual_seed(seed)
    model64 = make_model(n, m, gen)
    x64 = simulate(model64, batch, steps, gen)
    rows: list[Row] = []
    failures: list[str] = []
    reference_ll: np.ndarray | None = None
    dtypes = sorted(DTYPES, key=lambda d: d != torch.float64)  # float64 first: the gate
    for dtype in dtypes if budget is not None else dtypes[:1]:
        model, x = in_dtype(model64, dtype), x64.to(dtype)
        impls = [loop_impl(model, x), *seqlvm_impls(model, x, autograd)]
        impls += [i for i in (dynamax_impl(model, x), statsmodels_impl(model, x)) if i is not None]
        outputs = {impl.name: impl.smooth() for impl in impls}
        if dtype == torch.float64:
            reference_ll = outputs["loop"].log_likelihood
            failures += check_agreement(case, impls, outputs)
        if budget is None:
            continue
        dname = str(dtype).removeprefix("torch.")
        smooth_fns = {impl.name: impl.smooth for impl in impls if impl.time_smooth}
        smooth_ms = median_ms(smooth_fns, budget, apart={"loop"})
        for name, ms in smooth_ms.items():
            ll_err = rel_err(outputs[name].log_likelihood, reference_ll)
            rows.append(Row(case, dname, "smooth", name, ms, ll_err))
        grad_fns = {impl.name: impl.grad for impl in impls if impl.grad is not None}
        grad_ms = median_ms(grad_fns, budget, apart={"loop"})
        rows += [Row(case, dname, "grad", name, ms, None) for name, ms in grad_ms.items()]
        print(f"  {case} {dname}: done", file=sys.stderr, flush=True)
    return rows, failures


def speedup(rows: list[Row], row: Row, reference: str) -> float | None:
    """How many times faster ``row`` is than ``reference`` on the same case, dtype and task
    (None where the reference has no such row)."""
    for r in rows:
        if (r.case, r.dtype, r.task, r.impl) == (row.case, row.dtype, row.task, reference):
            return r.ms / row.ms
    return None


def table(rows: list[Row], markdown: bool) -> str:
    """The results table with speed-ups against dynamax and against the loop."""

    def ratio(r: Row, reference: str) -> str:
        x = speedup(rows, r, reference)
        return "-" if x is None else f"{x:.2f}x"

    header = ["Bt,T,n,m", "dtype", "task", "impl", "median ms", "dynamax/x", "loop/x", "ll rel err"]
    body = [
        [
            ",".join(map(str, r.case)), r.dtype, r.task, r.impl, f"{r.ms:.2f}",
            ratio(r, "dynamax"), ratio(r, "loop"), "-" if r.ll_err is None else f"{r.ll_err:.1e}",
        ]
        for r in rows
    ]  # fmt: skip
    return format_table(header, body, markdown)


def targets(rows: list[Row]) -> list[str]:
    """Per case, dtype and task, the faster seqlvm method against the targets: at least as fast
    as dynamax and at least 5x faster than the loop."""
    lines = []
    for group in dict.fromkeys((r.case, r.dtype, r.task) for r in rows):
        ours = [r for r in rows if (r.case, r.dtype, r.task) == group and r.impl.startswith("seqlvm")]
        if not ours:
            continue
        best = min(ours, key=lambda r: r.ms)
        vs_jax, vs_loop = speedup(rows, best, "dynamax"), speedup(rows, best, "loop")
        met = vs_jax is not None and vs_jax >= 1 and vs_loop >= 5
        jax_text = "no dynamax" if vs_jax is None else f"{vs_jax:.2f}x dynamax"
        lines.append(f"{best.case} {best.dtype} {best.task}: best {best.impl}, {jax_text}, "
                     f"{vs_loop:.1f}x loop -> {'MET' if met else 'not met'}")
    return lines


def environment() -> str:
    """One line naming the versions and thread settings the numbers were measured with."""
    parts = [f"python {platform.python_version()}", f"torch {torch.__version__}"]
    for mod in ("jax", "dynamax", "statsmodels"):
        try:
            parts.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            parts.append(f"{mod} not installed")
    return ", ".join(parts) + f"; {THREADS} thread(s) per library"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table to stdout. Returns 1 if the correctness gate fails."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument("--cases", type=int, nargs="+", help="indices into CASES to run (default all)")
    parser.add_argument("--check", action="store_true", help="run only the float64 correctness gate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--autograd", action="store_true",
                        help="also time seqlvm's gradient by autograd through kalman_filter (rows *-ag)")
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    budget = None if args.check else QUICK if args.quick else FULL
    cases = CASES if args.cases is None else [CASES[i] for i in args.cases]
    rows: list[Row] = []
    failures: list[str] = []
    for case in cases:
        case_rows, case_failures = run_case(case, budget, args.seed, args.autograd)
        rows += case_rows
        failures += case_failures
    print(environment() + ("\n" if args.markdown else ""))
    if rows:
        print(table(rows, args.markdown))
        print()
        for line in targets(rows):
            print(("- " if args.markdown else "") + line)
    if failures:
        print("\nCORRECTNESS GATE FAILED (float64, against the loop):", *failures, sep="\n  ",
              file=sys.stderr)
        return 1
    print("\ncorrectness gate passed: in float64 all log-likelihoods, smoothed means and gradients "
          "agree with the loop's to 1e-6 relative (dynamax: 1e-5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

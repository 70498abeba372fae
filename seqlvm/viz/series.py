"""PNG plots of vector series: forecasts with predictive bands, imputations, samples.

Each function draws one row of axes per sequence (first ``max_dims`` dimensions, one colour per
dimension) and writes the figure atomically. Inputs are CPU tensors or arrays; bands are
``mean ± 2 std`` (about 95% for a Gaussian).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from seqlvm.io import atomic_path

ArrayLike = np.ndarray | torch.Tensor


def _np(value: ArrayLike) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _rows(count: int, title: str) -> tuple[Figure, list]:
    fig = Figure(figsize=(9, 2.2 * count + 0.6), layout="constrained")
    axes = fig.subplots(count, 1, squeeze=False)[:, 0]
    fig.suptitle(title)
    for ax in axes:
        ax.set_xlabel("t")
        ax.grid(alpha=0.3)
    return fig, list(axes)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=100)
    return path


def _colour(d: int) -> str:
    return f"C{d % 10}"


def plot_forecast(
    path: str | Path,
    context: ArrayLike,
    mean: ArrayLike,
    std: ArrayLike | None = None,
    truth: ArrayLike | None = None,
    max_dims: int = 3,
    title: str = "forecast",
) -> Path:
    """Context, forecast mean with a ±2 std band, and the true continuation where known.

    context: (B, T0, D) observed steps 0..T0-1.
    mean:    (B, H, D) forecast of steps T0..T0+H-1; std the same shape, or None.
    truth:   (B, H', D) true values of steps T0..T0+H'-1 (H' <= H), or None.
    """
    context, mean = _np(context), _np(mean)
    t0, horizon = context.shape[1], mean.shape[1]
    fig, axes = _rows(context.shape[0], title)
    past, future = np.arange(t0), np.arange(t0, t0 + horizon)
    for b, ax in enumerate(axes):
        for d in range(min(context.shape[-1], max_dims)):
            colour = _colour(d)
            ax.plot(past, context[b, :, d], color=colour, lw=1.2, label=f"x[{d}]")
            ax.plot(future, mean[b, :, d], color=colour, lw=1.2, ls="--")
            if std is not None:
                s = _np(std)[b, :, d]
                ax.fill_between(future, mean[b, :, d] - 2 * s, mean[b, :, d] + 2 * s, color=colour, alpha=0.2)
            if truth is not None:
                known = _np(truth)[b, :, d]
                ax.plot(future[: len(known)], known, color=colour, lw=0.8, ls=":", marker=".", ms=3)
        ax.axvline(t0 - 0.5, color="k", lw=0.8)
    axes[0].legend(loc="upper left", fontsize="small", ncol=max_dims)
    return _save(fig, path)


def plot_imputation(
    path: str | Path,
    truth: ArrayLike,
    mask: ArrayLike,
    mean: ArrayLike,
    std: ArrayLike | None = None,
    max_dims: int = 3,
    title: str = "imputation",
) -> Path:
    """Observed points, hidden true values, and the imputed mean with a ±2 std band.

    truth: (B, T, D); mask: (B, T) or (B, T, D), True = observed; mean, std: (B, T, D).
    """
    truth, mean, mask = _np(truth), _np(mean), _np(mask).astype(bool)
    if mask.ndim == 2:
        mask = np.broadcast_to(mask[..., None], truth.shape)
    fig, axes = _rows(truth.shape[0], title)
    t = np.arange(truth.shape[1])
    for b, ax in enumerate(axes):
        for d in range(min(truth.shape[-1], max_dims)):
            colour = _colour(d)
            seen = mask[b, :, d]
            ax.plot(t, mean[b, :, d], color=colour, lw=1.2, label=f"x[{d}]")
            if std is not None:
                s = _np(std)[b, :, d]
                ax.fill_between(t, mean[b, :, d] - 2 * s, mean[b, :, d] + 2 * s, color=colour, alpha=0.2)
            ax.plot(t[seen], truth[b, seen, d], ls="none", marker="o", ms=3, color=colour)
            ax.plot(t[~seen], truth[b, ~seen, d], ls="none", marker="x", ms=4, color=colour)
    axes[0].legend(loc="upper left", fontsize="small", ncol=max_dims, title="o observed, x hidden")
    return _save(fig, path)


def plot_series(path: str | Path, series: ArrayLike, max_dims: int = 3, title: str = "samples") -> Path:
    """Plain line plots of ``series`` (B, T, D), e.g. sequences sampled from a model."""
    series = _np(series)
    fig, axes = _rows(series.shape[0], title)
    t = np.arange(series.shape[1])
    for b, ax in enumerate(axes):
        for d in range(min(series.shape[-1], max_dims)):
            ax.plot(t, series[b, :, d], color=_colour(d), lw=1.2, label=f"x[{d}]")
    axes[0].legend(loc="upper left", fontsize="small", ncol=max_dims)
    return _save(fig, path)

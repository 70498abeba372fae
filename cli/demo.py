"""``seqlvm demo``: the main job on a small embedded default, end to end on CPU.

Two parts: an LGSSM fitted by EM to simulated 2-D tracks with missing steps, then the training
pipeline (data file, Trainer, evaluation, forecast and imputation pictures) on the same kind of
tracks.
"""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from seqlvm.cli.app import command
from seqlvm.cli.common import open_data
from seqlvm.cli.forecast import forecast as forecast_command
from seqlvm.cli.impute import impute as impute_command
from seqlvm.data import write_sequences
from seqlvm.kalman import LGSSMParams, sample_prior
from seqlvm.models import LGSSM, LGSSMConfig
from seqlvm.train import TrainConfig, load_model, train
from seqlvm.train import evaluate as evaluate_model


def tracking_params(dt: float = 0.1, q: float = 0.5, r: float = 0.3) -> LGSSMParams:
    """Constant-velocity tracking in 2-D: state (x, y, vx, vy), noisy positions observed.

    Per axis, Q is the discretised white-noise acceleration of intensity q,
    ``q [[dt^3/3, dt^2/2], [dt^2/2, dt]]`` on (position, velocity); R = r^2 I.
    """
    f64 = torch.float64
    A = torch.eye(4, dtype=f64)
    A[0, 2] = A[1, 3] = dt
    C = torch.eye(2, 4, dtype=f64)
    per_axis = q * torch.tensor([[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]], dtype=f64)
    Q = torch.zeros(4, 4, dtype=f64)
    for axis in ([0, 2], [1, 3]):
        rows = torch.tensor(axis)
        Q[rows[:, None], rows[None, :]] = per_axis
    R = r**2 * torch.eye(2, dtype=f64)
    P0 = torch.diag(torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=f64))
    return LGSSMParams(A, C, Q, R, torch.zeros(4, dtype=f64), P0)


def _rmse(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    return (estimate - truth).pow(2).sum(-1).mean().sqrt().item()


def run_tracking_demo(out: Path, seed: int = 0, iters: int = 50, echo=typer.echo) -> dict[str, float]:
    """Simulate tracks, fit an LGSSM by EM from a blind start, report errors, plot one track.

    Returns the position RMSEs (observations, filtered, smoothed, and the smoother under the
    true parameters for reference) and the final log-likelihood per observed step.
    """
    true = tracking_params()
    gen = torch.Generator().manual_seed(seed)
    states, x = sample_prior(true, 200, 16, generator=gen)
    observed = torch.rand(x.shape[:2], generator=gen) > 0.2  # 20% of the steps missing
    x_missing = torch.where(observed[..., None], x, torch.full_like(x, float("nan")))
    positions = states[..., :2]
    steps = int(observed.sum()) * 2

    echo(f"Tracking: 16 tracks of 200 steps, {100 * (1 - observed.float().mean()):.0f}% of steps missing.")
    echo("Fitting an LGSSM (n=4, m=2) by EM from a blind start:")
    torch.manual_seed(seed)
    model = LGSSM(LGSSMConfig(state_dim=4, obs_dim=2)).double()

    def progress(it: int, ll: float) -> None:
        if it == 1 or it % 10 == 0 or it == iters:
            echo(f"  iteration {it:3d}   log-likelihood per observation {ll / steps:+.4f}")

    lls = model.fit_em(x_missing, num_iters=iters, callback=progress)
    with torch.no_grad():
        filt = model.filter(x_missing)
        smooth = model.smooth(x_missing)
        oracle = LGSSM(LGSSMConfig(state_dim=4, obs_dim=2)).double()
        for name, value in true._asdict().items():
            if value is not None:
                setattr(oracle, name, value)
        best = oracle.smooth(x_missing)
        # The learned state is identified only up to a change of basis: compare positions C z.
        filt_pos = filt.means @ model.C.T
        smooth_pos = smooth.means @ model.C.T
        errors = {
            "observations": _rmse(x[observed], positions[observed]),
            "filtered": _rmse(filt_pos, positions),
            "smoothed": _rmse(smooth_pos, positions),
            "smoothed_true_params": _rmse(best.means[..., :2], positions),
            "log_likelihood_per_obs": lls[-1].item() / steps,
            "true_log_likelihood_per_obs": oracle.log_likelihood(x_missing).sum().item() / steps,
        }
    echo(f"  true parameters' log-likelihood per observation {errors['true_log_likelihood_per_obs']:+.4f}")
    echo("Position RMSE against the true track:")
    echo(f"  raw observations (observed steps)  {errors['observations']:.4f}")
    echo(f"  filtered, learned model            {errors['filtered']:.4f}")
    echo(f"  smoothed, learned model            {errors['smoothed']:.4f}")
    echo(f"  smoothed, true parameters          {errors['smoothed_true_params']:.4f}")

    out.mkdir(parents=True, exist_ok=True)
    path = out / "tracking.png"
    _plot_track(path, positions[0], x[0], observed[0], filt_pos[0], smooth_pos[0],
                model.C @ smooth.covs[0] @ model.C.T)
    echo(f"Wrote {path}")
    return errors


def _plot_track(path: Path, *tensors: torch.Tensor) -> None:
    """Plot one track: truth, observations, filtered and smoothed positions, and a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    truth, obs, observed, filtered, smoothed, smooth_cov = (t.detach().cpu().numpy() for t in tensors)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    ax = axes[0]
    ax.plot(truth[:, 0], truth[:, 1], color="black", lw=2, label="true track")
    ax.scatter(obs[observed, 0], obs[observed, 1], s=8, color="tab:gray", alpha=0.6, label="observations")
    ax.plot(filtered[:, 0], filtered[:, 1], color="tab:orange", lw=1, label="filtered")
    ax.plot(smoothed[:, 0], smoothed[:, 1], color="tab:blue", lw=1.5, label="smoothed")
    ax.set_title("2-D track (LGSSM fitted by EM)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="best", fontsize=8)
    ax = axes[1]
    w = slice(0, 60)  # a window short enough to see the band and the missing steps
    truth, obs, observed, smoothed, smooth_cov = truth[w], obs[w], observed[w], smoothed[w], smooth_cov[w]
    t = np.arange(truth.shape[0])
    sd = np.sqrt(smooth_cov[:, 0, 0])
    ax.fill_between(t, smoothed[:, 0] - 2 * sd, smoothed[:, 0] + 2 * sd, color="tab:blue", alpha=0.25, label="smoothed ±2 sd")
    ax.plot(t, truth[:, 0], color="black", lw=1.5, label="true x")
    ax.plot(t, smoothed[:, 0], color="tab:blue", lw=1)
    ax.scatter(t[observed], obs[observed, 0], s=6, color="tab:gray", label="observed x")
    missing = ~observed
    ax.scatter(t[missing], truth[missing, 0], s=10, marker="x", color="tab:red", label="missing steps")
    ax.set_xlabel("step")
    ax.set_title("x position over the first 60 steps")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def run_training_demo(out: Path, seed: int = 0, epochs: int = 30, echo=typer.echo) -> dict[str, float]:
    """The training pipeline on simulated tracks: data file -> Trainer -> evaluation -> pictures.

    Writes 256 tracks of 50 steps with :func:`seqlvm.data.write_sequences`, trains an LGSSM on
    them by gradient descent through the Trainer (a few seconds on two CPU cores at the default
    ``epochs``), evaluates it on the test split beside the true parameters, and draws a forecast
    and an imputation. A second run in the same ``out`` resumes the finished run instead of
    training again. Returns the test log-likelihoods per step (learned and true).
    """
    true = tracking_params()
    gen = torch.Generator().manual_seed(seed + 1)
    states, x = sample_prior(true, 50, 256, generator=gen)
    data = write_sequences(out / "tracks.h5", x.float().numpy(), states=states.float().numpy(), seed=seed,
                           source="seqlvm demo: 2-D constant-velocity tracks")
    echo(f"\nTraining: 256 simulated tracks of 50 steps written to {data}.")

    config = TrainConfig(
        model="lgssm", data=[str(data)], model_config={"state_dim": 4, "method": "parallel"},
        batch_size=32, epochs=epochs, lr=0.02, lr_schedule="cosine", grad_clip=100.0,
        seed=seed, device="cpu", out_dir=str(out / "runs" / "lgssm"),
    )
    resume = (config.run_dir / "ckpt" / "last.pt").is_file()
    echo(f"{'Resuming' if resume else 'Training'} an LGSSM (n=4) with the Trainer, {epochs} epochs:")
    result = train(config, resume=resume)
    echo(f"  {result.reason} at step {result.step}; best validation loss {result.best_metric:.4f}")

    model, checkpoint = load_model(result.run_dir)
    test = open_data(data, "test", checkpoint)
    learned = evaluate_model(model, test, log_likelihood=True)
    oracle = LGSSM(LGSSMConfig(state_dim=4, obs_dim=2)).double()
    for name, value in true._asdict().items():
        if value is not None:
            setattr(oracle, name, value)
    reference = evaluate_model(oracle, test, log_likelihood=True)
    scores = {
        "test_log_likelihood_per_step": learned["log_likelihood_per_step"],
        "true_params_log_likelihood_per_step": reference["log_likelihood_per_step"],
    }
    echo(f"  test log-likelihood per step: learned {scores['test_log_likelihood_per_step']:+.4f}, "
         f"true parameters {scores['true_params_log_likelihood_per_step']:+.4f}")
    forecast_command(result.run_dir, data, context=20, horizon=30, out=out / "forecast.png",
                     split="test", count=3, samples=0, seed=seed)
    impute_command(result.run_dir, data, mask="block:15:15", method="smooth", out=out / "impute.png",
                   split="test", count=3, seed=seed)
    echo(f"Run folder (metrics.csv, config.toml, ckpt/): {result.run_dir}")
    echo(f"Evaluate it again:  seqlvm evaluate {result.run_dir} --data {data}")
    return scores


@command("demo")
def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Folder for the pictures and runs."),
    seed: int = typer.Option(0, help="Seed of the simulation and of the model's start."),
    iters: int = typer.Option(50, min=1, help="EM iterations."),
    epochs: int = typer.Option(30, min=1, help="Epochs of gradient training in the Trainer part."),
) -> None:
    """Run the main job on a small embedded default: fit an LGSSM to simulated tracks by EM, then
    train one with the Trainer from a data file, evaluate it and draw a forecast and an imputation."""
    run_tracking_demo(out, seed=seed, iters=iters)
    run_training_demo(out, seed=seed, epochs=epochs)

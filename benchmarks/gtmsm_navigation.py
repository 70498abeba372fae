"""GTM-SM on image navigation: prediction error over 256 steps after 256 memorised ones (issue 7).

Train first (commands and timings in benchmarks/RESULTS.md)::

    seqlvm generate seqlvm/ImageNavigation-v0 -n 3000 -T 288 --seed 1 -o data/nav.h5 -j 2 \\
        --env-kwargs '{"exploration_blocked": "stay"}'
    seqlvm train gtmsm --data data/nav.h5 --config configs/gtmsm_navigation.toml --out runs/gtmsm
    python benchmarks/gtmsm_navigation.py --flatten data/nav.h5 data/nav_vec.h5
    seqlvm train srnn --data data/nav_vec.h5 --config configs/srnn_navigation.toml --out runs/srnn_nav

then evaluate on held-out worlds and walks (new procedural images and seeds, drawn here)::

    python benchmarks/gtmsm_navigation.py --checkpoint runs/gtmsm --baseline runs/srnn_nav \\
        --out benchmarks/results --docs docs

Protocol: each test episode is a fresh world (a procedural 32×32 image the training set never
had) walked by the exploration policy for tau + H steps (tau = 256 memorised, H = 256 predicted).
Every method sees the first tau crops and all tau + H actions and predicts the last H crops; the
metric is the mean squared error per pixel (RGB in [0, 1]) at each prediction step 1..H,
averaged over the episodes:

(a) GTM-SM: ``forecast(...).mean``, sum_k w_k decoder(mu^(k)) at each predicted state;
(b) the memory-less baseline: an SRNN with the actions as inputs, trained on the same walks,
    the mean of its forecast paths;
(c) the oracle: the true crop seen at the same position during memorisation (error 0), or for a
    position never visited, the mean of the episode's memorised crops.

Also: the error on revisited positions only, the R² of the affine (Procrustes) fit of GTM-SM's
inferred states to the true positions, the map picture and a GIF of 256 predicted steps.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from seqlvm.data import SequenceDataset, write_sequences  # noqa: E402
from seqlvm.envs import roll_episodes  # noqa: E402
from seqlvm.metrics import affine_r2  # noqa: E402
from seqlvm.models import GTMSM, SRNN  # noqa: E402
from seqlvm.train import load_model  # noqa: E402
from seqlvm.viz.video import hstack_videos, save_gif  # noqa: E402


def flatten(src: str, dst: str) -> None:
    """Write the crops of a video file as (N, T, C·H·W) vectors in [0, 1] for the SRNN baseline
    (same order, actions and states)."""
    data = SequenceDataset(src, split="all")
    n = len(data)
    items = [data[i] for i in range(n)]
    x = torch.stack([it["x"] for it in items]).flatten(2).numpy()
    u = torch.stack([it["u"] for it in items]).numpy()
    states = torch.stack([it["states"] for it in items]).numpy()
    write_sequences(dst, x, u, states=states, seed=0)
    print(f"wrote {dst}: {x.shape}")


def test_walks(episodes: int, steps: int, seed: int, blocked: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Held-out episodes (``seqlvm.envs.roll_episodes`` with ``seed``): crops (N, T, 3, 8, 8) in
    [0, 1], one-hot actions (N, T, 5), positions (N, T, 2)."""
    eps = roll_episodes("seqlvm/ImageNavigation-v0", {"exploration_blocked": blocked}, "default", seed, 0, episodes, steps)
    x = torch.from_numpy(eps.observations).permute(0, 1, 4, 2, 3).float() / 255
    return x, torch.from_numpy(eps.actions), eps.states.astype(np.int64)


def oracle(x: torch.Tensor, pos: np.ndarray, tau: int) -> tuple[torch.Tensor, np.ndarray]:
    """The oracle's predictions (N, H, 3, 8, 8) and the (N, H) mask of revisited positions."""
    N, T = pos.shape[:2]
    pred = x[:, tau:].clone()
    revisit = np.zeros((N, T - tau), dtype=bool)
    for n in range(N):
        seen = {tuple(p): t for t, p in enumerate(pos[n, :tau])}
        mean = x[n, :tau].mean(0)
        for h in range(T - tau):
            t = seen.get(tuple(pos[n, tau + h]))
            revisit[n, h] = t is not None
            pred[n, h] = x[n, t] if t is not None else mean
    return pred, revisit


def step_mse(pred: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """Per-pixel squared error (N, H) of predicted crops."""
    return (pred - truth).square().flatten(2).mean(-1).numpy()


@torch.no_grad()
def predict_gtmsm(model: GTMSM, x: torch.Tensor, u: torch.Tensor, tau: int, batch: int) -> torch.Tensor:
    out = []
    for i in range(0, len(x), batch):
        xb, ub = x[i : i + batch], u[i : i + batch]
        out.append(model.forecast(xb[:, :tau], xb.shape[1] - tau, u_future=ub[:, tau:], u=ub[:, :tau]).mean)
    return torch.cat(out)


@torch.no_grad()
def predict_srnn(model: SRNN, x: torch.Tensor, u: torch.Tensor, tau: int, batch: int, samples: int) -> torch.Tensor:
    out = []
    g = torch.Generator().manual_seed(0)
    for i in range(0, len(x), batch):
        xb, ub = x[i : i + batch].flatten(2), u[i : i + batch]
        fc = model.forecast(xb[:, :tau], xb.shape[1] - tau, u_future=ub[:, tau:], num_samples=samples, generator=g, u=ub[:, :tau])
        out.append(fc.mean.clamp(0, 1).view(*x[i : i + batch, tau:].shape))
    return torch.cat(out)


def map_figure(path: Path, states: np.ndarray, positions: np.ndarray, r2: float) -> None:
    """The learned states of one walk beside the true grid, coloured by true position (states of
    more than two dimensions are shown in their plane of largest spread, by PCA)."""
    label = "s_t"
    if states.shape[-1] > 2:
        centred = states - states.mean(0)
        states = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
        label = "s_t, first two principal axes"
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4))
    colour = positions[:, 0] * 9 + positions[:, 1]
    axes[0].scatter(positions[:, 1], -positions[:, 0], c=colour, cmap="viridis", s=30)
    axes[0].set_title("true positions (col, −row)")
    axes[1].scatter(states[:, 0], states[:, 1], c=colour, cmap="viridis", s=30)
    axes[1].set_title(f"GTM-SM {label} (affine R² = {r2:.4f})", fontsize=9)
    for ax in axes:
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def curve_figure(path: Path, curves: dict[str, np.ndarray]) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, c in curves.items():
        ax.plot(np.arange(1, len(c) + 1), c, label=name)
    ax.set_xlabel("prediction step after 256 memorised steps")
    ax.set_ylabel("MSE per pixel")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flatten", nargs=2, metavar=("IN", "OUT"), help="write the vector copy of IN for the SRNN and exit")
    parser.add_argument("--checkpoint", default="", help="GTM-SM checkpoint file or run folder")
    parser.add_argument("--baseline", default="", help="SRNN (with actions) checkpoint or run folder; '' skips it")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--memory", type=int, default=256, help="memorised steps tau")
    parser.add_argument("--horizon", type=int, default=256, help="predicted steps H")
    parser.add_argument("--blocked", default="stay", choices=["stay", "bump"], help="exploration at the border")
    parser.add_argument("--delta", type=float, default=0.0, help="evaluate with this kernel delta (0: the model's)")
    parser.add_argument("--srnn-samples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=10_000_000, help="seed of the held-out episodes (the training files used 1 and 2)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--docs", default="", help="folder for the map picture and the GIF ('' skips them)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.flatten:
        flatten(*args.flatten)
        return
    if not args.checkpoint:
        print("gtmsm_navigation: no --checkpoint given; train one first (see this script's docstring). Skipped.")
        return
    model, _ = load_model(args.checkpoint)
    if not isinstance(model, GTMSM):
        raise SystemExit(f"--checkpoint: expected a GTM-SM checkpoint; got {type(model).__name__}")
    model.eval()
    if args.delta:
        model.config.delta = args.delta
    tau, H = args.memory, args.horizon
    t0 = time.perf_counter()
    x, u, pos = test_walks(args.episodes, tau + H, args.seed, args.blocked)
    truth = x[:, tau:]
    t_gtm = time.perf_counter()
    pred = predict_gtmsm(model, x, u, tau, 25)
    t_gtm = time.perf_counter() - t_gtm
    oracle_pred, revisit = oracle(x, pos, tau)
    errors = {"GTM-SM": step_mse(pred, truth), "oracle": step_mse(oracle_pred, truth)}
    if args.baseline:
        srnn, _ = load_model(args.baseline)
        errors["SRNN (memory-less)"] = step_mse(predict_srnn(srnn.eval(), x, u, tau, 25, args.srnn_samples), truth)
    with torch.no_grad():
        states = model.infer_states(u)
    r2 = float(affine_r2(states, torch.from_numpy(pos)).min())  # the worse of the two coordinates
    states = states.numpy()
    curves = {name: e.mean(0) for name, e in errors.items()}
    summary = {
        "episodes": args.episodes,
        "memory": tau,
        "horizon": H,
        "delta": model.config.delta,
        "revisited_fraction": float(revisit.mean()),
        "affine_r2": r2,
        "gtmsm_predict_seconds": t_gtm,
        "mse_all_steps": {name: float(e.mean()) for name, e in errors.items()},
        "mse_revisited": {name: float(e[revisit].mean()) for name, e in errors.items()},
        "mse_first_32": {name: float(c[:32].mean()) for name, c in curves.items()},
        "mse_last_32": {name: float(c[-32:].mean()) for name, c in curves.items()},
        # Revisited steps only: whether the memory itself degrades with the step index, apart
        # from the share of never-visited places (which grows with it).
        "mse_revisited_first_32": {name: float(e[:, :32][revisit[:, :32]].mean()) for name, e in errors.items()},
        "mse_revisited_last_32": {name: float(e[:, -32:][revisit[:, -32:]].mean()) for name, e in errors.items()},
    }
    g = summary["mse_all_steps"]
    summary["gtmsm_over_oracle"] = g["GTM-SM"] / max(g["oracle"], 1e-12)
    if "SRNN (memory-less)" in g:
        summary["srnn_over_gtmsm"] = g["SRNN (memory-less)"] / g["GTM-SM"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gtmsm_navigation.json").write_text(json.dumps(summary, indent=2))
    np.savez(out / "gtmsm_navigation_curves.npz", **{k.split()[0]: v for k, v in curves.items()})
    curve_figure(out / "gtmsm_navigation.png", curves)
    print(json.dumps(summary, indent=2))
    print("| method | MSE steps 1-H | MSE revisited | steps 1-32 | last 32 steps | revisited, steps 1-32 | revisited, last 32 |")
    print("|---|---|---|---|---|---|---|")
    for name in errors:
        cells = [summary[key][name] for key in (
            "mse_all_steps", "mse_revisited", "mse_first_32", "mse_last_32", "mse_revisited_first_32", "mse_revisited_last_32"
        )]
        print(f"| {name} | " + " | ".join(f"{v:.5f}" for v in cells) + " |")
    if args.docs:
        docs = Path(args.docs)
        docs.mkdir(parents=True, exist_ok=True)
        map_figure(docs / "gtmsm_map.png", states[0], pos[0], r2)
        video = hstack_videos([truth[0], pred[0].clamp(0, 1), oracle_pred[0]])
        save_gif(video, docs / "gtmsm_prediction.gif", fps=8, scale=4)
        print(f"wrote {docs / 'gtmsm_map.png'} and {docs / 'gtmsm_prediction.gif'} (truth | GTM-SM | oracle)")
    print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()

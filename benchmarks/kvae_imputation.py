"""KVAE imputation benchmark: the protocol of the paper's Figure 3 (models.md §2.7).

Train first (the reference recipe, configs/kvae_box.toml)::

    seqlvm generate seqlvm/BouncingBall-v0 -n 5000 -T 20 --seed 1234 -o data/box.h5 -j 2
    seqlvm generate seqlvm/BouncingBall-v0 -n 1000 -T 20 --seed 5678 -o data/box_test.h5 -j 2
    seqlvm train kvae --data data/box.h5 --config configs/kvae_box.toml --out runs/kvae_box

then evaluate a checkpoint on the test file::

    python benchmarks/kvae_imputation.py --checkpoint runs/kvae_box/ckpt/last.pt \\
        --test data/box_test.h5 --name box --out benchmarks/results

Protocol: the test sequences in full batches of 32 (31 batches for 1000 sequences); frames 0..3
always observed. Missing at random: each later frame dropped with probability p = 0.1 .. 1.0.
Missing block: frames 4 .. 3+k dropped, k = 1, 3, .., 15. Metric: the fraction of incorrect
pixels, Hamming distance between ``x > 0.5`` and ``x^ > 0.5`` pooled over all pixels of the
unobserved frames of a batch, averaged over the batches that have any. ``x^`` decodes
``C_t m_{t|T}`` (smoothing) or ``C_t m_{t|t}`` (filtering).

Writes ``NAME_imputation.md`` (table, paper values beside ours for the box data) and
``NAME_imputation.png`` (both curves) to --out, and with --docs the figures for the docs:
an imputation GIF, an 80-step generation GIF and the learned a-space against the true ball
positions (with the R^2 of a linear fit).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from seqlvm.data import SequenceDataset, block_mask, random_mask  # noqa: E402
from seqlvm.metrics import affine_r2  # noqa: E402
from seqlvm.models import KVAE  # noqa: E402
from seqlvm.train import load_model  # noqa: E402
from seqlvm.viz.video import hstack_videos, save_gif  # noqa: E402

PROBS = [round(0.1 * i, 1) for i in range(1, 11)]
BLOCKS = [1, 3, 5, 7, 9, 11, 13, 15]
PREFIX = 4
# Paper Figure 3 (box data), read off the plot (models.md §2.8).
PAPER = {
    ("random", "smooth"): [0.0057, 0.0060, 0.0063, 0.0067, 0.0075, 0.0082, 0.0095, 0.0128, 0.0189, 0.0267],
    ("random", "filter"): [0.0078, 0.0077, 0.0082, 0.0089, 0.0103, 0.0118, 0.0124, 0.0157, 0.0214, 0.0267],
    ("block", "smooth"): [0.0061, 0.0078, 0.0098, 0.0121, 0.0148, 0.0173, 0.0200, 0.0227],
    ("block", "filter"): [0.0081, 0.0113, 0.0144, 0.0173, 0.0197, 0.0220, 0.0237, 0.0255],
}


def load_test(path: str, max_sequences: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Binary frames (N, T, C, H, W) of the first full batches, and states (N, T, S) if stored."""
    data = SequenceDataset(path, split="all")
    n = min(max_sequences, len(data)) // batch_size * batch_size
    if n == 0:
        raise ValueError(f"--max-sequences: need at least one batch of {batch_size}; the file has {len(data)}")
    items = [data[i] for i in range(n)]
    x = (torch.stack([it["x"] for it in items]) > 0.5).float()
    states = torch.stack([it["states"] for it in items]) if "states" in items[0] else None
    return x, states


@torch.no_grad()
def imputation_error(
    model: KVAE, x: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor, method: str, batch_size: int
) -> float:
    """The §2.7 metric for one mask: Hamming error pooled per batch over unobserved frames, averaged."""
    imputed = model.impute_codes(codes, mask, method=method)
    errors = []
    for start in range(0, x.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        missing = ~mask[sl]
        if not bool(missing.any()):
            continue
        probs = model.frame_means(imputed[sl][missing])  # decode only the frames that count
        errors.append(float(((probs > 0.5) != (x[sl][missing] > 0.5)).float().mean()))
    return float(np.mean(errors))


@torch.no_grad()
def curves(model: KVAE, x: torch.Tensor, batch_size: int, seed: int) -> dict[tuple[str, str], list[float]]:
    """Both protocols, both methods: {(protocol, method): errors}."""
    B, T = x.shape[:2]
    codes = torch.cat([model.encode(x[i : i + batch_size])[0] for i in range(0, B, batch_size)])
    out: dict[tuple[str, str], list[float]] = {}
    for method in ("smooth", "filter"):
        out["random", method] = [
            imputation_error(model, x, codes, random_mask(B, T, p, PREFIX, torch.Generator().manual_seed(seed + i)), method, batch_size)
            for i, p in enumerate(PROBS)
        ]
        out["block", method] = [imputation_error(model, x, codes, block_mask(B, T, k, PREFIX), method, batch_size) for k in BLOCKS]
    return out


def write_table(path: Path, name: str, result: dict, with_paper: bool, header: str) -> None:
    lines = [header, ""]
    for protocol, xs, label in (("random", PROBS, "p"), ("block", BLOCKS, "k")):
        lines.append(f"| {label} | " + " | ".join(str(v) for v in xs) + " |")
        lines.append("| --- " * (len(xs) + 1) + "|")
        for method in ("smooth", "filter"):
            lines.append(f"| {name} {method} (ours) | " + " | ".join(f"{v:.4f}" for v in result[protocol, method]) + " |")
            if with_paper:
                lines.append(f"| paper KVAE {method} | " + " | ".join(f"{v:.4f}" for v in PAPER[protocol, method]) + " |")
        lines.append("")
    path.write_text("\n".join(lines))


def plot_curves(path: Path, name: str, result: dict, with_paper: bool) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (protocol, xs, label) in zip(axes, (("random", PROBS, "dropout probability p"), ("block", BLOCKS, "missing frames k"))):
        for method, colour in (("smooth", "C0"), ("filter", "C1")):
            ax.plot(xs, result[protocol, method], "o-", color=colour, label=f"ours, {method}ing")
            if with_paper:
                ax.plot(xs, PAPER[protocol, method], "x--", color=colour, alpha=0.6, label=f"paper, {method}ing")
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of incorrect pixels")
        ax.set_title(f"{name}: missing {'at random' if protocol == 'random' else 'in a block'}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


@torch.no_grad()
def docs_figures(model: KVAE, x: torch.Tensor, states: torch.Tensor | None, out: Path, name: str) -> str:
    """Imputation GIF, 80-step generation GIF, and the a-space plot; returns a summary line."""
    out.mkdir(parents=True, exist_ok=True)
    sel = x[:4]
    mask = block_mask(4, x.shape[1], 8, PREFIX)
    smooth = model.impute(sel, mask, method="smooth").probs
    filt = model.impute(sel, mask, method="filter").probs
    shown = sel * mask[..., None, None, None] + 0.5 * (~mask)[..., None, None, None]  # grey = missing
    rows = [hstack_videos([sel[i], shown[i], smooth[i], filt[i]]) for i in range(4)]
    save_gif(np.concatenate(rows, axis=1), out / f"kvae_{name}_imputation.gif", fps=4, scale=2)
    # 80 frames: the first 4 observed, then the deterministic rollout (the reference's generation).
    generated = model.forecast(sel[:, :PREFIX], 80 - PREFIX).probs
    video = torch.cat([sel[:, :PREFIX], generated], dim=1)
    save_gif(hstack_videos(list(video)), out / f"kvae_{name}_generation.gif", fps=8, scale=2)
    summary = ""
    if states is not None:
        a = model.encode(x)[0].reshape(-1, model.config.dim_a).double()
        pos = states[..., :2].reshape(-1, 2).double()
        r2 = affine_r2(a, pos)
        fig, axes = plt.subplots(1, 2, figsize=(9, 4))
        for ax, d, label in zip(axes, range(2), ("ball x", "ball y")):
            sc = ax.scatter(a[:4000, 0], a[:4000, 1], c=pos[:4000, d], s=2, cmap="viridis")
            fig.colorbar(sc, ax=ax, label=label)
            ax.set_xlabel("a[0]")
            ax.set_ylabel("a[1]")
            ax.set_title(f"encoded a, coloured by {label} (R² {float(r2[d]):.3f})")
        fig.tight_layout()
        fig.savefig(out / f"kvae_{name}_aspace.png", dpi=70)
        plt.close(fig)
        summary = f"a-space linear fit to the ball position: R^2 x {float(r2[0]):.3f}, y {float(r2[1]):.3f}"
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="", help="checkpoint file or run folder (needs training first)")
    parser.add_argument("--test", default="", help="HDF5 test file, e.g. data/box_test.h5")
    parser.add_argument("--name", default="box", help="data set name; 'box' adds the paper's values")
    parser.add_argument("--out", default="benchmarks/results", help="folder of the table and the plot")
    parser.add_argument("--docs", default="", help="folder for the GIFs and the a-space plot ('' skips them)")
    parser.add_argument("--max-sequences", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.checkpoint and args.test):
        # make bench runs every script bare; this one needs a trained model and a test file.
        print("kvae_imputation: give --checkpoint and --test (see this script's docstring). Skipped.")
        return
    model, ckpt = load_model(args.checkpoint)
    if not isinstance(model, KVAE):
        raise SystemExit(f"--checkpoint: {args.checkpoint} holds a {type(model).__name__}, not a KVAE")
    x, states = load_test(args.test, args.max_sequences, args.batch_size)
    start = time.perf_counter()
    result = curves(model, x, args.batch_size, args.seed)
    seconds = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with_paper = args.name == "box"
    header = (
        f"KVAE imputation, {args.name}: {x.shape[0]} test sequences of {args.test}, checkpoint "
        f"{args.checkpoint} (step {ckpt.get('step')}, epoch {ckpt.get('epoch')}); evaluated in {seconds:.0f} s"
    )
    write_table(out / f"{args.name}_imputation.md", args.name, result, with_paper, header)
    plot_curves(out / f"{args.name}_imputation.png", args.name, result, with_paper)
    print((out / f"{args.name}_imputation.md").read_text())
    if args.docs:
        print(docs_figures(model, x, states, Path(args.docs), args.name))


if __name__ == "__main__":
    main()

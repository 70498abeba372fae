"""``seqlvm show``: look at episodes of a video sequence file as a GIF or a PNG grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from seqlvm.cli.app import command


@command("show")
def show(
    file: Path = typer.Argument(..., help="An HDF5 sequence file with video observations."),
    episode: list[int] = typer.Option([0], "--episode", "-e", help="Episode index; repeat for several."),
    out: Path = typer.Option(..., "--out", "-o", help="x.gif (episodes side by side, animated) or x.png (grid: episodes × time)."),
    fps: float = typer.Option(5.0, "--fps", help="GIF frames per second."),
    scale: int = typer.Option(4, "--scale", help="Enlarge every pixel to scale × scale."),
) -> None:
    """Write episodes of FILE as an animated GIF or a PNG grid of their frames."""
    from seqlvm.data import SequenceDataset
    from seqlvm.data.h5 import check_output_path
    from seqlvm.viz import hstack_videos, save_gif, save_grid, to_uint8_frames

    kind = out.suffix.lower()
    if kind not in (".gif", ".png"):
        raise ValueError(f"--out: got {str(out)!r}; expected a .gif or .png file name")
    if fps <= 0:
        raise ValueError(f"--fps: got {fps}; expected > 0")
    if scale < 1:
        raise ValueError(f"--scale: got {scale}; expected an integer >= 1")
    check_output_path(out, "--out")
    data = SequenceDataset(file, split="all", keys=("observations",))
    if not data.is_video:
        raise ValueError(f"FILE: {str(file)!r} holds vector series {data.obs_shape}; show draws video (N, T, H, W, C) files")
    bad = [i for i in episode if not 0 <= i < len(data)]
    if bad:
        raise ValueError(f"--episode: got {bad}; {str(file)!r} has episodes 0..{len(data) - 1}")
    # The dataset gives the models' (T, C, H, W) layout; say so rather than let the viz helpers guess
    # from the sizes (a frame 1 or 3 pixels wide would pass for channel-last). Channel-last uint8
    # from here on, which every helper reads unambiguously.
    videos = [to_uint8_frames(data[i]["x"], channel_first=True) for i in episode]
    if kind == ".gif":
        save_gif(hstack_videos(videos), out, fps=fps, scale=scale)
    else:
        save_grid(np.stack(videos), out, scale=scale)
    typer.echo(f"wrote {out}")

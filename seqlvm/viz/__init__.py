"""Visualisation: GIFs and frame grids of videos (``seqlvm.viz.video``)."""

from seqlvm.viz.video import hstack_videos, make_grid, save_gif, save_grid, to_uint8_frames

__all__ = ["hstack_videos", "make_grid", "save_gif", "save_grid", "to_uint8_frames"]

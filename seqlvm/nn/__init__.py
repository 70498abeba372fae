"""Reusable networks: frame encoders/decoders and distribution heads."""

from seqlvm.nn.frames import FrameDecoder, FrameEncoder, check_frame_shape, glorot_init
from seqlvm.nn.heads import GaussianHead

__all__ = ["FrameDecoder", "FrameEncoder", "GaussianHead", "check_frame_shape", "glorot_init"]

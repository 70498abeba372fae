"""Convolutional encoder and decoder for small video frames (KVAE, models.md §2.3).

Encoder, per frame ``x (C, H, W)``: three ``conv 3x3, stride 2, padding 1, ReLU`` layers with
``channels`` filters take the frame to ``(channels, H/8, W/8)``, flattened to
``features = channels * H/8 * W/8`` (512 for 32x32 frames).

Decoder, per code ``a (d,)``: ``Linear(d -> channels * H/8 * W/8)`` (no activation), reshaped to
``(channels, H/8, W/8)``, then three ``[conv 3x3 to 4 * channels, ReLU, PixelShuffle(2)]``
stages, each doubling the resolution, and a ``conv 1x1`` to ``C`` channels of logits. The
TensorFlow "subpixel" reshape of the reference orders channels as ``torch.nn.PixelShuffle`` does.

H and W must be multiples of 8 (three halvings / doublings). Both networks keep their weights
and activations channels-last: on CPU the convolutions run about 1.4x faster that way.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FrameDecoder", "FrameEncoder", "check_frame_shape", "glorot_init"]

NUM_STAGES = 3  # halvings in the encoder, doublings in the decoder


def glorot_init(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases for every Linear and Conv2d in ``module``.

    These are TensorFlow's defaults, which the KVAE reference was tuned with. PyTorch's default
    (Kaiming-uniform with a = sqrt(5)) starts the 512 -> dim_a code layer about 2.5x narrower, so
    the initial codes drown in the encoder noise, the decoder learns to ignore them and the
    posterior collapses in the first hundred steps.
    """
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def _check_channels(channels: object, owner: str) -> int:
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"{owner}: channels must be an int >= 1; got {channels!r}")
    return channels


def check_frame_shape(shape: tuple[int, ...], owner: str) -> tuple[int, int, int]:
    """``shape`` as ``(C, H, W)`` ints with C >= 1 and H, W positive multiples of 8, else ValueError."""
    if len(shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ValueError(f"{owner}: frame shape must be (C, H, W) positive ints; got {tuple(shape)}")
    c, h, w = shape
    step = 2**NUM_STAGES
    if h % step or w % step:
        raise ValueError(f"{owner}: frame height and width must be multiples of {step}; got (H, W) = ({h}, {w})")
    return c, h, w


class FrameEncoder(nn.Module):
    """Frames ``(N, C, H, W)`` -> features ``(N, channels * H/8 * W/8)``, three strided convolutions."""

    def __init__(self, frame_shape: tuple[int, int, int], channels: int = 32) -> None:
        super().__init__()
        c, h, w = self.frame_shape = check_frame_shape(tuple(frame_shape), "FrameEncoder")
        _check_channels(channels, "FrameEncoder")
        layers: list[nn.Module] = []
        for i in range(NUM_STAGES):
            layers += [nn.Conv2d(c if i == 0 else channels, channels, 3, stride=2, padding=1), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.out_features = channels * (h >> NUM_STAGES) * (w >> NUM_STAGES)
        glorot_init(self)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C, H, W) -> (N, out_features)."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.frame_shape:
            # Other frame sizes would pass the convolutions and give features of another size.
            raise ValueError(f"FrameEncoder: x must have shape (N, {', '.join(map(str, self.frame_shape))}); got {tuple(x.shape)}")
        return self.net(x.contiguous(memory_format=torch.channels_last))


class FrameDecoder(nn.Module):
    """Codes ``(N, d)`` -> per-pixel logits ``(N, C, H, W)`` by sub-pixel convolutions.

    channels: feature maps between the stages (32 in the reference); each stage's 3x3
    convolution has ``4 * channels`` filters (128), which PixelShuffle(2) folds back to
    ``channels`` at twice the resolution.
    """

    def __init__(self, dim_in: int, frame_shape: tuple[int, int, int], channels: int = 32) -> None:
        super().__init__()
        c, h, w = check_frame_shape(tuple(frame_shape), "FrameDecoder")
        _check_channels(channels, "FrameDecoder")
        if not isinstance(dim_in, int) or dim_in < 1:
            raise ValueError(f"FrameDecoder: dim_in must be an int >= 1; got {dim_in!r}")
        self.start = (channels, h >> NUM_STAGES, w >> NUM_STAGES)
        self.project = nn.Linear(dim_in, channels * self.start[1] * self.start[2])
        stages: list[nn.Module] = []
        for _ in range(NUM_STAGES):
            stages += [nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.ReLU(), nn.PixelShuffle(2)]
        self.net = nn.Sequential(*stages, nn.Conv2d(channels, c, 1))
        glorot_init(self)
        self.to(memory_format=torch.channels_last)

    def forward(self, a: Tensor) -> Tensor:
        """a (N, d) -> logits (N, C, H, W)."""
        h = self.project(a).view(a.shape[0], *self.start)
        return self.net(h.contiguous(memory_format=torch.channels_last))

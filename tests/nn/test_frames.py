"""Frame encoder/decoder and Gaussian head: shapes, the sub-pixel layout, bounds, errors."""

import pytest
import torch

from seqlvm.nn import FrameDecoder, FrameEncoder, GaussianHead, check_frame_shape


@pytest.mark.parametrize("shape", [(1, 32, 32), (3, 16, 24)])
def test_encoder_decoder_shapes(shape):
    enc = FrameEncoder(shape, channels=4)
    x = torch.rand(5, *shape)
    assert enc(x).shape == (5, enc.out_features) == (5, 4 * (shape[1] // 8) * (shape[2] // 8))
    dec = FrameDecoder(2, shape, channels=4)
    assert dec(torch.randn(5, 2)).shape == (5, *shape)


def test_decoder_is_sub_pixel_convolution():
    """PixelShuffle puts channel c*4 + 2i + j of pixel (y, x) at pixel (2y+i, 2x+j) of channel c:
    the TensorFlow 'subpixel' reshape of the reference (models.md §2.3)."""
    shuffle = torch.nn.PixelShuffle(2)
    h = torch.arange(8.0).view(1, 8, 1, 1)
    out = shuffle(h)
    for c in range(2):
        for i in range(2):
            for j in range(2):
                assert out[0, c, i, j] == h[0, c * 4 + 2 * i + j, 0, 0]


def test_gaussian_head_caps_the_variance():
    head = GaussianHead(6, 2, max_var=0.03)
    mean, var = head(100 * torch.randn(50, 6))
    assert mean.shape == var.shape == (50, 2)
    assert bool((var > 0).all()) and bool((var <= 0.03).all())
    _, free = GaussianHead(6, 2)(torch.randn(50, 6))
    assert bool((free > 0).all())


def test_bad_frame_shapes_name_the_problem():
    with pytest.raises(ValueError, match="multiples of 8"):
        check_frame_shape((1, 30, 32), "owner")
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        FrameEncoder((32, 32))
    with pytest.raises(ValueError, match="max_var"):
        GaussianHead(3, 2, max_var=0.0)
    with pytest.raises(ValueError, match="max_var must be finite"):
        GaussianHead(3, 2, max_var=float("inf"))
    with pytest.raises(ValueError, match="min_var must be a finite number > 0"):
        GaussianHead(3, 2, min_var=float("inf"))
    with pytest.raises(ValueError, match="dim_in"):
        FrameDecoder(0, (1, 8, 8))
    for cls in (FrameEncoder, lambda shape, channels: FrameDecoder(2, shape, channels)):
        with pytest.raises(ValueError, match="channels must be an int >= 1; got 0"):
            cls((1, 8, 8), channels=0)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 8, 8\); got \(2, 1, 16, 16\)"):
        FrameEncoder((1, 8, 8), channels=2)(torch.rand(2, 1, 16, 16))


def test_glorot_init_matches_tensorflow_defaults():
    """Weights within the Glorot-uniform bound sqrt(6 / (fan_in + fan_out)), biases zero."""
    dec = FrameDecoder(2, (1, 32, 32))
    for m in dec.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            fan_in = m.weight[0].numel()
            fan_out = m.weight.shape[0] * m.weight[0, 0].numel()
            assert float(m.weight.detach().abs().max()) <= (6 / (fan_in + fan_out)) ** 0.5
            assert float(m.bias.detach().abs().max()) == 0.0
